#!/usr/bin/env bash
# GPU checks for shardforge's kernels and trainer, in one run (~6 minutes on an H200):
#   1. pytest -m gpu on tests/kernels (compiled Triton kernels vs fp32 references, bf16 + fp16)
#   2. benchmarks/kernels_bench.py (attention TFLOP/s vs SDPA / FlexAttention, AdamW bandwidth)
#   3. benchmarks/gpu/zero_memory.py: a short LM run (~134M params, 8 steps) at ZeRO stages 0
#      and 3 on one GPU (world size 1: FSDP2 wrapping, FusedAdamW on DTensor shards), printing
#      planned vs measured bytes per part and peak memory (torch.cuda.max_memory_allocated)
# Usage (from the repository root):
#   RESULTS_DIR=benchmarks/results PYTHONPATH=. bash benchmarks/gpu/run.sh
# Results: $RESULTS_DIR/{environment.txt, gpu_tests.log, gpu_tests.xml, kernels_bench.{json,md},
# kernels_bench.log, zero_memory.{json,md,log}}. Exit status: 0 only when every step succeeds;
# each step runs even if an earlier one fails. Caps: 180 s for the tests, 300 s for the
# benchmark (which writes its JSON after every section, so a timeout keeps what finished),
# 240 s for the ZeRO run (JSON after every stage). BENCH_ARGS=--dry-run and
# ZERO_ARGS="--device cpu --small --packing-length 256" check the plumbing on a CPU.
set -u
cd "$(dirname "$0")/../.."
RESULTS_DIR=${RESULTS_DIR:-benchmarks/results}
PY=${PYTHON:-python3}
mkdir -p "$RESULTS_DIR"
# Compiled kernels, not the interpreter (tests/conftest.py would default it to 1).
export TRITON_INTERPRET=0
export PYTHONPATH=${PYTHONPATH:-.}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  "$PY" -c 'import triton; print("triton", triton.__version__)' 2>&1
} | tee "$RESULTS_DIR/environment.txt"

echo "== [1/3] pytest -m gpu tests/kernels"
# Tests take the first fitting block config per kernel instead of autotuning (every config
# computes the same thing; the benchmark below autotunes and checks its own error).
if "$PY" -m pytest --version >/dev/null 2>&1; then
  SHARDFORGE_AUTOTUNE=0 timeout 180 "$PY" -m pytest -m gpu tests/kernels -q -rs \
    -p no:cacheprovider --junitxml="$RESULTS_DIR/gpu_tests.xml" 2>&1 | tee "$RESULTS_DIR/gpu_tests.log"
  tests_rc=${PIPESTATUS[0]}
else
  echo "pytest is not installed for $PY: GPU tests not run" | tee "$RESULTS_DIR/gpu_tests.log"
  tests_rc=2
fi

echo "== [2/3] benchmarks/kernels_bench.py"
timeout 300 "$PY" benchmarks/kernels_bench.py --results-dir "$RESULTS_DIR" ${BENCH_ARGS:-} 2>&1 \
  | tee "$RESULTS_DIR/kernels_bench.log"
bench_rc=${PIPESTATUS[0]}

echo "== [3/3] benchmarks/gpu/zero_memory.py (ZeRO stages 0 and 3, planned vs measured memory)"
timeout 240 "$PY" benchmarks/gpu/zero_memory.py --results-dir "$RESULTS_DIR" ${ZERO_ARGS:-} 2>&1 \
  | tee "$RESULTS_DIR/zero_memory.log"
zero_rc=${PIPESTATUS[0]}

echo "== gpu tests exit status: $tests_rc; benchmark exit status: $bench_rc;" \
  "ZeRO run exit status: $zero_rc (results in $RESULTS_DIR)"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$zero_rc" -eq 0 ]
