"""Loader and packing benchmark: packing efficiency (ours vs next-fit), planning speed, loader
tokens/s with 0/1/2 workers on gzip and uncompressed shards (vs the `tfrecord` package if
installed). The last line printed is one JSON object with every figure.

    .venv/bin/python benchmarks/loader_bench.py            # full run (~1-2 min on 2 cores)
    .venv/bin/python benchmarks/loader_bench.py --quick    # smaller data, a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shardforge.records import ShardedWriter, encode_example  # noqa: E402
from shardforge.training import packed_loader, plan_packs, shard_loader  # noqa: E402

PACKING_LENGTH = 4096
REPEATS = 2


def long_tailed(n: int, rng: np.random.Generator) -> np.ndarray:
    """Log-normal, median ~300 tokens, capped at 8k (FLAN-like)."""
    return np.clip(rng.lognormal(np.log(300), 1.0, n), 1, 8192).astype(np.int64)


def narrow(n: int, rng: np.random.Generator) -> np.ndarray:
    """Short, tightly spread lengths (OrcaMath-like question + answer: median ~250)."""
    return np.clip(rng.lognormal(np.log(250), 0.35, n), 30, 1500).astype(np.int64)


def bench_packing(n_docs: int, lookahead: int, rng: np.random.Generator) -> dict:
    out = {}
    for name, make in (("long_tailed", long_tailed), ("narrow", narrow)):
        lengths = make(n_docs, rng)
        row = {}
        for strategy in ("ffd", "bfd", "nf"):
            row[strategy] = plan_packs(lengths, PACKING_LENGTH, strategy=strategy,
                                       lookahead=lookahead).efficiency()
        out[name] = row
        print(f"packing efficiency @ {PACKING_LENGTH} [{name:11s}] "
              f"ffd {row['ffd']:.4f}  bfd {row['bfd']:.4f}  next-fit {row['nf']:.4f}  "
              f"(lookahead {lookahead} docs, {n_docs} docs)")
    return out


def bench_planning(n_docs: int, lookahead: int, rng: np.random.Generator) -> dict:
    lengths = long_tailed(n_docs, rng)
    out = {}
    for strategy in ("ffd", "bfd", "nf"):
        plan_packs(lengths[:10_000], PACKING_LENGTH, strategy=strategy, lookahead=lookahead)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            plan_packs(lengths, PACKING_LENGTH, strategy=strategy, lookahead=lookahead)
            best = min(best, time.perf_counter() - start)
        out[strategy] = n_docs / best
        print(f"planning speed [{strategy}]: {n_docs / best / 1e6:.2f} M docs/s ({n_docs} docs)")
    return out


def write_corpus(root: Path, n_docs: int, rng: np.random.Generator) -> dict[str, str]:
    lengths = np.clip(rng.lognormal(np.log(300), 1.0, n_docs), 1, 8192).astype(np.int64)
    records = [encode_example({"tokens": rng.integers(0, 32000, n).tolist(), "source": i % 7})
               for i, n in enumerate(lengths)]
    dirs = {}
    for compression in (None, "gzip"):
        directory = root / (compression or "plain")
        with ShardedWriter(directory, num_shards=8, compression=compression) as writer:
            for record in records:
                writer.write(record)
        dirs[compression or "plain"] = str(directory)
    return dirs, int(lengths.sum())


def timed_tokens(batches, count) -> tuple[float, int, float]:
    """Steady-state tokens/s (the clock starts at the first batch, so worker start-up is left
    out), all tokens seen, and the seconds to the first batch."""
    start, tokens, first, t0 = time.perf_counter(), 0, None, 0.0
    for batch in batches:
        n = count(batch)
        if first is None:
            first, t0 = n, time.perf_counter()
        tokens += n
    rate = (tokens - (first or 0)) / max(time.perf_counter() - t0, 1e-9)
    return rate, tokens, t0 - start


def tfrecord_tokens_per_s(directory: str, compression: str | None, workers: int) -> float:
    from tfrecord.reader import tfrecord_loader

    paths = sorted(str(p) for p in Path(directory).iterdir() if ".tfrecord" in p.name
                   and not p.name.endswith(".idx"))

    class Shards(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            mine = paths if info is None else paths[info.id :: info.num_workers]
            for path in mine:
                yield from tfrecord_loader(path, None, {"tokens": "int"},
                                           compression_type=compression)

    loader = torch.utils.data.DataLoader(Shards(), batch_size=None, num_workers=workers,
                                         collate_fn=lambda x: x)
    return timed_tokens(loader, lambda example: len(example["tokens"]))[0]


def bench_loaders(n_docs: int, rng: np.random.Generator) -> dict:
    out: dict = {"docs": n_docs}
    try:
        import tfrecord  # noqa: F401
        have_tfrecord = True
    except ImportError:
        have_tfrecord = False
    with tempfile.TemporaryDirectory() as tmp:
        dirs, total = write_corpus(Path(tmp), n_docs, rng)
        out["tokens"] = total
        for kind, directory in dirs.items():
            for workers in (0, 1, 2):
                rate = decode_rate = 0.0
                latency = float("inf")
                for _ in range(REPEATS):  # best of a few: the machine may be shared
                    loader = packed_loader(directory, packing_length=PACKING_LENGTH,
                                           num_workers=workers, seed=0)
                    r, tokens, first = timed_tokens(loader, lambda batch: batch["num_tokens"])
                    assert tokens == total, (tokens, total)
                    batches = shard_loader(directory, batch_size=256, num_workers=workers,
                                           seed=0, features=["tokens"], remainder="keep")
                    rate, latency = max(rate, r), min(latency, first)
                    r = timed_tokens(batches, lambda batch: len(batch["tokens"].values))[0]
                    decode_rate = max(decode_rate, r)
                out[f"packed_{kind}_w{workers}"] = rate
                out[f"packed_{kind}_w{workers}_first_batch_s"] = latency
                out[f"batches_{kind}_w{workers}"] = decode_rate
                line = (f"loader [{kind:5s}] workers={workers}: packed_loader "
                        f"{rate / 1e6:6.2f} M tok/s (first batch {latency:.2f} s)   "
                        "ShardDataset batches "
                        f"{decode_rate / 1e6:6.2f} M tok/s")
                if have_tfrecord:
                    ref = max(tfrecord_tokens_per_s(directory, "gzip" if kind == "gzip"
                                                    else None, workers) for _ in range(REPEATS))
                    out[f"tfrecord_pkg_{kind}_w{workers}"] = ref
                    line += f"   tfrecord pkg {ref / 1e6:6.2f} M tok/s"
                print(line, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(1)
    lookahead = 4096
    results = {
        "packing_length": PACKING_LENGTH,
        "lookahead": lookahead,
        "efficiency": bench_packing(50_000 if args.quick else 500_000, lookahead, rng),
        "planning_docs_per_s": bench_planning(200_000 if args.quick else 2_000_000, lookahead,
                                              rng),
        "loader_tokens_per_s": bench_loaders(2_000 if args.quick else 20_000, rng),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
