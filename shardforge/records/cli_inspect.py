"""``shardforge inspect PATH_OR_GLOB [--limit N] [--json]``: count and CRC-check the records of
each file, list the bad ones (corrupt framing, or payloads that are not tf.Examples) by file and
index and keep going, print the first N Examples and the parse spec inferred from the good
records."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

SPEC_SAMPLE = 100_000  # records the spec is inferred from (the CRC check still reads them all)
SHOW_BAD = 20  # non-Example records listed per file in the text output (--json lists all)


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
    from shardforge.records import ExampleDecodeError, decode_example, summarize_features
    from shardforge.records.errors import ReadReport
    from shardforge.records.example import malformed_examples
    from shardforge.records.framing import expand_paths, iter_blocks, resolve_compression
    from shardforge.records.manifest import check_shards

    compression = None if args.compression.lower() == "none" else args.compression
    paths = expand_paths(args.path)  # FileNotFoundError, OutputError: shardforge.cli says so
    check_shards(paths)  # a job output must be complete: records/manifest.py
    files, examples, sample, places = [], [], [], []
    for path in paths:
        report = ReadReport()
        not_examples = []
        for first, _, block in iter_blocks(path, on_corrupt="skip", compression=compression,
                                           report=report):
            bad = dict(malformed_examples(block))
            not_examples += [{"index": first + i, "reason": why} for i, why in bad.items()]
            if len(sample) >= SPEC_SAMPLE and len(examples) >= args.limit:
                continue
            for i, record in enumerate(block):
                if i in bad:
                    continue
                if len(examples) < args.limit:
                    examples.append((path, decode_example(record)))
                if len(sample) < SPEC_SAMPLE:
                    sample.append(record)
                    places.append((path, first + i))
        files.append({
            "path": path, "compression": resolve_compression(path, compression) or "none",
            "records": report.records,
            "corrupt": [{"index": p.index, "offset": p.offset, "reason": p.reason}
                        for p in report.problems],
            "not_examples": not_examples,
        })
    spec_error = None
    try:
        n, summary = summarize_features(sample)
    except ExampleDecodeError as err:  # a feature of two types: say where the second one is
        path, index = places[err.index]
        n, summary = len(sample), {}
        spec_error = f"no spec: {err.at(path, index)}"
    spec = {
        name: {
            "dtype": s.dtype,
            "kind": "FixedLen" if s.present == n and s.min_count == s.max_count else "VarLen",
            "min_count": s.min_count if s.present == n else 0, "max_count": s.max_count,
            "present": s.present,
        }
        for name, s in sorted(summary.items())
    }
    bad = sum(len(f["corrupt"]) + len(f["not_examples"]) for f in files)
    status = 1 if bad or spec_error else 0
    if args.json:
        print(json.dumps({
            "files": files,
            "examples": [{"file": p, "features": {k: _jsonable(v) for k, v in ex.items()}}
                         for p, ex in examples],
            "spec": spec, "spec_records": n, "spec_error": spec_error,
        }, indent=1))
        return status
    for f in files:
        problems = []
        if f["corrupt"]:
            problems.append(f"{len(f['corrupt'])} CORRUPT")
        if f["not_examples"]:
            problems.append(f"{len(f['not_examples'])} NOT tf.Example")
        print(f"{f['path']}: {f['records']} records ({f['compression']}), "
              f"{', '.join(problems) or 'CRC ok'}")
        for p in f["corrupt"]:
            print(f"  record {p['index']} at byte {p['offset']}: {p['reason']}")
        for p in f["not_examples"][:SHOW_BAD]:
            print(f"  record {p['index']}: not a tf.Example: {p['reason']}")
        if len(f["not_examples"]) > SHOW_BAD:
            print(f"  ... and {len(f['not_examples']) - SHOW_BAD} more (--json lists them all)")
    if len(files) > 1:
        print(f"total: {sum(f['records'] for f in files)} records in {len(files)} files")
    for i, (path, ex) in enumerate(examples):
        print(f"\nExample {i} ({os.path.basename(path)}):")
        for name in sorted(ex):
            print(f"  {name}: {_show(ex[name])}")
    if spec_error:
        print(f"\n{spec_error}")
        return status
    print(f"\nInferred spec ({n} records):")
    for name, s in spec.items():
        print(f"  {name:24s} {s['kind']:8s} {s['dtype']:8s} "
              f"values/record {s['min_count']}..{s['max_count']}  present in {s['present']}")
    return status
