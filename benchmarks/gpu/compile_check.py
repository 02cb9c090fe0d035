"""Compile every Triton kernel variant for a CUDA target on a machine without a GPU.

    TRITON_INTERPRET=0 python benchmarks/gpu/compile_check.py [--arch 90] [--quick]

Runs triton's full pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin with the bundled ptxas) for
the attention kernels (each autotune config that fits, per head dim / causal / dtype) and the
AdamW kernel, and prints shared memory, register spills and compile time per variant. It catches
what the interpreter cannot: compile errors, configs that overflow shared memory (the limit is
checked against the target's, 227 KB on sm_90) and register spilling. It does not run anything.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from shardforge.kernels import adamw_triton, attention_triton  # noqa: E402

_TENSORS = {"Q", "K", "V", "O", "DO", "DQ", "DK", "DV"}
SMEM_LIMIT = {90: 232448, 80: 166912, 89: 101376, 100: 232448}


class _Elt:
    """Stands in for the tensor the prune functions inspect."""

    def __init__(self, size: int) -> None:
        self.size = size

    def element_size(self) -> int:
        return self.size


def _signature(fn, types: dict[str, str], constexprs: dict) -> dict[str, str]:  # noqa: ANN001
    return {name: ("constexpr" if name in constexprs else types.get(name, "i32"))
            for name in fn.arg_names}  # fmt: skip


def _attrs(fn, aligned: set[str]) -> dict:  # noqa: ANN001
    # What the launcher's specialization gives: 16-byte aligned pointers, strides % 16 == 0.
    return {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if n in aligned}


def compile_one(fn, types, constexprs, aligned, target, num_warps, num_stages):  # noqa: ANN001, ANN201
    src = ASTSource(fn, _signature(fn, types, constexprs), constexprs, _attrs(fn, aligned))
    start = time.perf_counter()
    kernel = triton.compile(src, target=target,
                            options={"num_warps": num_warps, "num_stages": num_stages})  # fmt: skip
    seconds = time.perf_counter() - start
    return {"shared": kernel.metadata.shared, **_resource_usage(kernel.asm["cubin"]),
            "seconds": seconds}  # fmt: skip


def _resource_usage(cubin: bytes) -> dict:
    """Registers and local memory (spills) per thread, from the bundled cuobjdump."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=False).stdout  # fmt: skip
    found = dict(re.findall(r"\b(REG|LOCAL|STACK):(\d+)", out))
    return {"regs": int(found.get("REG", -1)), "local_bytes": int(found.get("LOCAL", -1))}


def attention_variants(quick: bool):  # noqa: ANN201
    at = attention_triton
    kernels = [
        ("fwd", at._attn_fwd, at._FWD_CONFIGS, at._FWD_PRUNE),
        ("dkdv", at._attn_bwd_dkdv, at._DKDV_CONFIGS, at._DKDV_PRUNE),
        ("dq", at._attn_bwd_dq, at._DQ_CONFIGS, at._DQ_PRUNE),
    ]
    dtypes = [("bf16", 2)] if quick else [("bf16", 2), ("fp16", 2), ("fp32", 4)]
    head_dims = (64, 128) if quick else (32, 64, 128, 256)
    for name, tuner, configs, prune in kernels:
        fn = tuner.fn
        for dt, size in dtypes:
            for d in head_dims:
                for causal in (True, False):
                    kept = prune["early_config_prune"](configs, {"Q": _Elt(size)}, HEAD_DIM=d)
                    for c in kept[:1] if quick else kept:
                        types = {n: f"*{dt}" for n in fn.arg_names if n in _TENSORS}
                        types.update(LSE="*fp32", DELTA="*fp32", cu_seqlens="*i32",
                                     qk_scale="fp32", sm_scale="fp32")  # fmt: skip
                        constexprs = {"GROUP": 4, "HEAD_DIM": d, "CAUSAL": causal, **c.kwargs}
                        aligned = {n for n, t in types.items() if t.startswith("*")}
                        aligned |= {n for n in fn.arg_names if n.startswith("stride_")}
                        label = (f"{name} {dt} d={d} causal={causal} "
                                 f"M={c.kwargs['BLOCK_M']} N={c.kwargs['BLOCK_N']} "
                                 f"w={c.num_warps} s={c.num_stages}")  # fmt: skip
                        yield label, fn, types, constexprs, aligned, c.num_warps, c.num_stages
    pre = at._bwd_preprocess
    for dt, _ in dtypes:
        for d in head_dims:
            types = {"O": f"*{dt}", "DO": f"*{dt}", "DELTA": "*fp32"}
            yield (f"preprocess {dt} d={d}", pre, types,
                   {"HEAD_DIM": d, "BLOCK_T": at._PRE_BLOCK_T}, {"O", "DO", "DELTA"}, 4, 3)


def adamw_variants():  # noqa: ANN201
    fn = adamw_triton._adamw_kernel
    for p, g, s, master in (("fp32", "fp32", "fp32", False), ("bf16", "bf16", "fp32", True),
                            ("bf16", "bf16", "bf16", False), ("fp16", "fp16", "fp32", True)):
        for aligned in (True, False):
            types = {"table": "*i64", "numels": "*i64", "chunk_tensor": "*i32",
                     "chunk_index": "*i32", "p_ref": f"*{p}", "g_ref": f"*{g}", "s_ref": f"*{s}"}
            for n in ("decay", "lerp_w", "beta2", "one_minus_beta2", "neg_step_size",
                      "bc2_sqrt", "eps"):
                types[n] = "fp32"
            constexprs = {"HAS_MASTER": master, "MAXIMIZE": False, "ALIGNED": aligned,
                          "BLOCK": adamw_triton.BLOCK, "CHUNK": adamw_triton.CHUNK}
            yield (f"adamw p={p} g={g} state={s} master={master} aligned={aligned}", fn, types,
                   constexprs, {n for n in types if types[n].startswith("*")},
                   adamw_triton.NUM_WARPS, 3)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description="compile all kernel variants for a CUDA arch")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--quick", action="store_true", help="bf16, head dims 64/128, 1 config")
    args = parser.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    failures = 0
    for label, fn, types, constexprs, aligned, warps, stages in [
        *attention_variants(args.quick), *adamw_variants()
    ]:
        try:
            r = compile_one(fn, types, constexprs, aligned, target, warps, stages)
            flag = " SMEM>LIMIT" if r["shared"] > SMEM_LIMIT.get(args.arch, 232448) else ""
            flag += " SPILLS" if r["local_bytes"] > 0 else ""
            print(f"ok   {label}: smem {r['shared']} B, regs {r['regs']}, local (spill) "
                  f"{r['local_bytes']} B, {r['seconds']:.1f} s{flag}", flush=True)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - report every variant
            failures += 1
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:400]}", flush=True)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
