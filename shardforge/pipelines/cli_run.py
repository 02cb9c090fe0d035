"""``shardforge run``: the preprocessing job from the command line.

Flags it does not know go to Beam as pipeline options, so the same command runs on Dataflow::

    shardforge run --features examples/click_features.py --input 'gs://b/clicks/*.csv' \\
        --output gs://b/out --runner DataflowRunner --project P --region us-central1 \\
        --temp_location gs://b/tmp --setup_file ./setup.py
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

FORMATS = ("csv", "jsonl", "parquet", "tfrecord", "text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", required=True,
                        help="Python file defining FEATURES (a shardforge FeatureSet)")
    parser.add_argument("--input", required=True, action="append",
                        help="input file glob (repeatable); local or any Beam filesystem (gs://)")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="input format (default: from each file's suffix)")
    parser.add_argument("--eval-fraction", type=float, default=0.1,
                        help="fraction of rows hashed into eval/ (default 0.1)")
    parser.add_argument("--split-key", default=None,
                        help="input column whose hash picks the split and the shard (default: "
                        "all input values of the row)")
    shards = parser.add_mutually_exclusive_group()
    shards.add_argument("--num-shards", type=int, default=None, help="shards per split")
    shards.add_argument("--shard-size", default="128MB",
                        help="target shard size, e.g. 128MB (default), when --num-shards is unset")
    parser.add_argument("--compression", choices=("gzip", "none"), default="none")
    parser.add_argument("--max-error-fraction", type=float, default=0.01,
                        help="fail when more than this fraction of rows fail (default 0.01)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of a previous run in --output")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.epilog = ("Any other flag is a Beam pipeline option, e.g. --direct_num_workers 4, or "
                     "--runner DataflowRunner --project P --region R --temp_location gs://B/tmp "
                     "--setup_file ./setup.py")
    parser.set_defaults(accepts_extra=True)


def main(args: argparse.Namespace) -> int:
    from shardforge.pipelines.pipeline import run_pipeline
    from shardforge.pipelines.transforms import TooManyErrors

    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    try:
        summary = run_pipeline(
            args.features, args.input, args.output, fmt=args.format,
            eval_fraction=args.eval_fraction, split_key=args.split_key,
            num_shards=args.num_shards, shard_size=args.shard_size,
            compression=None if args.compression == "none" else args.compression,
            max_error_fraction=args.max_error_fraction, beam_args=list(args.extra or ()),
            overwrite=args.overwrite,
        )
    except (TooManyErrors, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"shardforge run: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary.to_dict(), indent=1))
        return 0
    splits = ", ".join(f"{s}: {n}" for s, n in summary.splits.items())
    print(f"read {summary.rows_read} rows, wrote {summary.rows_out} records ({splits}) "
          f"in {summary.seconds:.1f} s")
    print(f"{summary.errors} rows failed" + (f": see {summary.errors_dir}/" if summary.errors
                                              else ""))
    print(f"schema: {summary.schema}\nstats:  {summary.stats}  (view: shardforge stats "
          f"{summary.output})")
    return 0
