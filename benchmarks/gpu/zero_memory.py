"""Planned vs measured memory of a short LM run at ZeRO stages 0 and 3 on one GPU.

World size 1 still runs the stage's wrapping (stage 3: FSDP2 ``fully_shard`` per block on a
one-rank group, FusedAdamW on its DTensor shards), so this checks on a GPU what the 2-process
CPU tests check with gloo: the bytes held for weights, gradients and optimizer states after the
first step against ``shardforge plan``'s figures, and ``torch.cuda.max_memory_allocated``
against the planned total with activations.

    PYTHONPATH=. python benchmarks/gpu/zero_memory.py --results-dir benchmarks/results
    PYTHONPATH=. python benchmarks/gpu/zero_memory.py --device cpu --small   # plumbing, on a CPU

Writes ``zero_memory.json`` and ``zero_memory.md`` into ``--results-dir`` after every stage.
The data is generated here (byte-tokenized synthetic code lines written as shards in-process),
so it needs no download and no Beam.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import shardforge.features as sf
from shardforge.records import ShardedWriter, encode_example
from shardforge.training.config import TrainConfig
from shardforge.training.memory import format_bytes
from shardforge.training.trainer import train

# ~134M parameters: 8 blocks of d_model 1024 (12·L·h² ≈ 101M) + a 32k vocabulary (33M)
GPU_MODEL = {"n_layer": 8, "n_head": 16, "n_kv_head": 16, "d_model": 1024, "vocab_size": 32000}
SMALL_MODEL = {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "d_model": 64, "vocab_size": 512}


def write_data(root: Path, n_docs: int) -> Path:
    """Byte-tokenized synthetic documents as train/ and eval/ shards with a schema."""
    rng = np.random.default_rng(0)
    words = ["def ", "return ", "self", ".x", " = ", "(", ")", ":\n", "    ", "import "]
    docs = ["".join(rng.choice(words, size=rng.integers(20, 400))) for _ in range(n_docs)]
    fs = sf.FeatureSet([sf.text("text", tokenizer="bytes", name="tokens")])
    batch, _ = fs.coerce({"text": docs})
    state = fs.fit([batch])
    state.save(str(root))
    cut = n_docs // 10
    for split, part in (("eval", docs[:cut]), ("train", docs[cut:])):
        coerced, errors = fs.coerce({"text": part})
        assert not errors, errors[:3]
        out = fs.transform(coerced, state)
        with ShardedWriter(root / split, num_shards=2) as writer:
            for i in range(len(out["tokens"])):
                writer.write(encode_example({"tokens": out["tokens"][i]}))
    return root


def run_stage(data: Path, out: Path, stage: int, args) -> dict:
    cfg = TrainConfig(task="lm", data=str(data), out_dir=str(out / f"stage{stage}"),
                      packing_length=args.packing_length,
                      model=dict(SMALL_MODEL if args.small else GPU_MODEL),
                      max_steps=args.steps, warmup_steps=2, lr=3e-4, min_lr=3e-5,
                      eval_every=args.steps, eval_batches=2, log_every=max(1, args.steps // 2),
                      ckpt_every=0, plot=False, device=args.device, zero_stage=stage,
                      activation_checkpointing=args.activation_checkpointing)
    t0 = time.perf_counter()
    result = train(cfg)
    row = {"stage": stage, "steps": result.steps, "seconds": time.perf_counter() - t0,
           "tokens_per_s": result.throughput, "final_loss": result.train_loss,
           **{f"planned {k}": v for k, v in result.memory["planned"].items()},
           **{f"measured {k}": v for k, v in result.memory["measured"].items()}}
    del result
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def markdown(rows: list[dict]) -> str:
    parts = ["weights", "gradients", "optimizer states", "model states", "peak allocated"]
    lines = ["| stage | " + " | ".join(f"{p} planned / measured" for p in parts) + " |",
             "|---|" + "---|" * len(parts)]
    for row in rows:
        cells = [f"{format_bytes(row.get(f'planned {p}'))} / "
                 f"{format_bytes(row.get(f'measured {p}'))}" for p in parts]
        lines.append(f"| {row['stage']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="benchmarks/results")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--stages", default="0,3")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--packing-length", type=int, default=4096)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--small", action="store_true", help="a tiny model (CPU plumbing check)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("zero_memory: no CUDA GPU (use --device cpu --small to check the plumbing)")
        return 2
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp) / "data", n_docs=400 if args.small else 4000)
        for stage in (int(s) for s in args.stages.split(",")):
            print(f"== ZeRO stage {stage}, world size 1, {args.device}", flush=True)
            try:
                rows.append(run_stage(data, Path(tmp) / "runs", stage, args))
            except Exception:  # one failed stage must not hide the other's figures
                traceback.print_exc()
                failed.append(stage)
            (results / "zero_memory.json").write_text(json.dumps(rows, indent=2))
            (results / "zero_memory.md").write_text(markdown(rows))
    print(markdown(rows))
    if failed:
        print(f"zero_memory: stage(s) {failed} failed (tracebacks above)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
