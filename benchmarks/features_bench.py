"""Rows/s of the example feature set (shardforge/examples/click_features.py) in-process.

    .venv/bin/python benchmarks/features_bench.py            # 1M rows
    .venv/bin/python benchmarks/features_bench.py --rows 100000 --batch-size 8192

Fit = one pass of every analyzer over typed batches (FEATURES.fit); transform = FEATURES.transform
per batch; coerce = raw Python/numpy columns -> typed batch. The first batch of each stage is run
once beforehand so numba's (cached) compilation is not timed. Besides wall-clock rows/s it reports
rows per CPU-second of this process (``time.process_time``), which a busy machine distorts less.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shardforge.examples.click_features import FEATURES  # noqa: E402
from shardforge.examples.clicklog import generate_clicklog  # noqa: E402
from shardforge.records.spec import take_rows  # noqa: E402


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    t = time.perf_counter()
    raw = generate_clicklog(args.rows, args.seed)
    gen_s = time.perf_counter() - t
    starts = range(0, args.rows, args.batch_size)
    raw_batches = [{k: v[i : i + args.batch_size] for k, v in raw.items()} for i in starts]

    FEATURES.coerce(raw_batches[0])
    batches: list = []
    coerce = timed(lambda: batches.extend(FEATURES.coerce(b)[0] for b in raw_batches))

    warm = take_rows(batches[0], np.arange(min(1000, args.rows)))
    FEATURES.transform(warm, FEATURES.fit([warm]))
    states: list = []
    fit = timed(lambda: states.append(FEATURES.fit(batches)))
    transform = timed(lambda: [FEATURES.transform(b, states[0]) for b in batches])

    results = {"rows": args.rows, "batch_size": args.batch_size, "cpus": os.cpu_count(),
               "generate_s": round(gen_s, 2)}
    print(f"{'stage':<10} {'wall s':>8} {'rows/s':>12} {'CPU s':>8} {'rows/CPU-s':>12}")
    for stage, (wall, cpu) in (("coerce", coerce), ("fit", fit), ("transform", transform)):
        results[stage] = {"wall_s": round(wall, 2), "rows_per_s": round(args.rows / wall),
                          "cpu_s": round(cpu, 2), "rows_per_cpu_s": round(args.rows / cpu)}
        rate, cpu_rate = results[stage]["rows_per_s"], results[stage]["rows_per_cpu_s"]
        print(f"{stage:<10} {wall:>8.2f} {rate:>12,} {cpu:>8.2f} {cpu_rate:>12,}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
