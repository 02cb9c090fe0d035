"""``shardforge index PATH_OR_GLOB``: (re)build the index file of each shard (``index_path``)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a TFRecord file, a directory of shards, or a glob")
    parser.add_argument("--compression", default="auto", help="none|gzip|zlib|auto (by suffix)")


def main(args: argparse.Namespace) -> int:
    from shardforge.records import CorruptRecordError, build_index, list_shards, load_index

    compression = None if args.compression.lower() == "none" else args.compression
    paths = list_shards(args.path)
    if not paths:
        raise FileNotFoundError(f"no shards match {args.path!r}")
    failed = 0
    for path in paths:
        try:
            idx = build_index(path, compression=compression)
        except CorruptRecordError as err:
            print(f"shardforge index: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{idx}: {len(load_index(path, compression=compression))} records")
    if len(paths) > 1:
        print(f"indexed {len(paths) - failed} of {len(paths)} shards")
    return 1 if failed else 0
