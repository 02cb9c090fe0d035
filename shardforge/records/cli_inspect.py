"""``shardforge inspect PATH_OR_GLOB [--limit N] [--json]``: count and CRC-check the records of
each file, print the first N Examples and the parse spec inferred from the records."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

SPEC_SAMPLE = 100_000  # records the spec is inferred from (the CRC check still reads them all)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a TFRecord file, a directory of shards, or a glob")
    parser.add_argument("--limit", type=int, default=3, help="Examples to print (default 3)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--compression", default="auto", help="none|gzip|zlib|auto (by suffix)")


def _jsonable(values: np.ndarray) -> list:
    if values.dtype == object:
        return [v.decode("utf-8", errors="backslashreplace") for v in values]
    return values.tolist()


def _show(values: np.ndarray, width: int = 8) -> str:
    shown = _jsonable(values[:width])
    more = f", ... ({len(values)} values)" if len(values) > width else ""
    return "[" + ", ".join(repr(v) for v in shown) + more + "]"


def main(args: argparse.Namespace) -> int:
    from shardforge.records import decode_example, read_records, summarize_features
    from shardforge.records.framing import expand_paths, resolve_compression

    compression = None if args.compression.lower() == "none" else args.compression
    try:
        paths = expand_paths(args.path)
    except FileNotFoundError as err:
        print(f"shardforge inspect: {err}", file=sys.stderr)
        return 2
    files, examples, sample = [], [], []
    for path in paths:
        reader = read_records(path, on_corrupt="skip", compression=compression)
        for record in reader:
            if len(examples) < args.limit:
                examples.append((path, decode_example(record)))
            if len(sample) < SPEC_SAMPLE:
                sample.append(record)
        files.append({
            "path": path, "compression": resolve_compression(path, compression) or "none",
            "records": reader.report.records,
            "corrupt": [{"index": p.index, "offset": p.offset, "reason": p.reason}
                        for p in reader.report.problems],
        })
    n, summary = summarize_features(sample)
    spec = {
        name: {
            "dtype": s.dtype,
            "kind": "FixedLen" if s.present == n and s.min_count == s.max_count else "VarLen",
            "min_count": s.min_count if s.present == n else 0, "max_count": s.max_count,
            "present": s.present,
        }
        for name, s in sorted(summary.items())
    }
    corrupt = sum(len(f["corrupt"]) for f in files)
    if args.json:
        print(json.dumps({
            "files": files,
            "examples": [{"file": p, "features": {k: _jsonable(v) for k, v in ex.items()}}
                         for p, ex in examples],
            "spec": spec, "spec_records": n,
        }, indent=1))
        return 1 if corrupt else 0
    for f in files:
        status = "CRC ok" if not f["corrupt"] else f"{len(f['corrupt'])} CORRUPT"
        print(f"{f['path']}: {f['records']} records ({f['compression']}), {status}")
        for p in f["corrupt"]:
            print(f"  record {p['index']} at byte {p['offset']}: {p['reason']}")
    if len(files) > 1:
        print(f"total: {sum(f['records'] for f in files)} records in {len(files)} files")
    for i, (path, ex) in enumerate(examples):
        print(f"\nExample {i} ({os.path.basename(path)}):")
        for name in sorted(ex):
            print(f"  {name}: {_show(ex[name])}")
    print(f"\nInferred spec ({n} records):")
    for name, s in spec.items():
        print(f"  {name:24s} {s['kind']:8s} {s['dtype']:8s} "
              f"values/record {s['min_count']}..{s['max_count']}  present in {s['present']}")
    return 1 if corrupt else 0


