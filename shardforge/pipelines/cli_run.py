"""``shardforge run``: the preprocessing job from the command line.

Flags it does not know go to Beam as pipeline options when Beam's option parser knows them, so
the same command runs on Dataflow::

    shardforge run --features examples/click_features.py --input 'gs://b/clicks/*.csv' \\
        --output gs://b/out --runner DataflowRunner --project P --region us-central1 \\
        --temp_location gs://b/tmp --setup_file ./setup.py

Any other flag is an error with a did-you-mean. The job prints a progress line while it runs
(rewritten in place on a terminal, a plain line every few seconds otherwise) and, on failure, one
short message saying what to do (exit 2 for a missing or invalid file, input, column or option,
as ``shardforge.cli`` rules; 1 when the job itself failed); ``--verbose`` shows Beam's logging and
the full traceback. Ctrl-C says whether anything was published (exit 130).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import signal
import sys
import threading
import traceback

from shardforge.records import layout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from shardforge.pipelines.options import RUNNER_RULE
    from shardforge.pipelines.readers import READERS

    parser.add_argument("--features", required=True,
                        help="Python file defining FEATURES (a shardforge FeatureSet)")
    parser.add_argument("--input", required=True, action="append",
                        help="input file glob (repeatable); local or any Beam filesystem (gs://)")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--format", choices=tuple(READERS), default=None,
                        help="input format (default: from each file's suffix)")
    parser.add_argument("--eval-fraction", type=float, default=0.1,
                        help="fraction of rows hashed into eval/ (default 0.1)")
    parser.add_argument("--split-key", default=None,
                        help="input column whose hash picks the split and the shard (default: "
                        "all input values of the row)")
    shards = parser.add_mutually_exclusive_group()
    shards.add_argument("--num-shards", type=int, default=None, help="shards per split")
    shards.add_argument("--shard-size", default="128MiB",
                        help="target shard size when --num-shards is unset: 128MiB (default, "
                        "2^20-byte units: K M G, KiB MiB GiB) or 128MB (10^6-byte units)")
    parser.add_argument("--compression", choices=layout.COMPRESSIONS, default="none",
                        help="shard compression: " + ", ".join(
                            f"{c} ({suffix})" for c, suffix in layout.SHARD_SUFFIX.items())
                        + "; compressed shards are seekable through the index")
    parser.add_argument("--max-error-fraction", type=float, default=0.01,
                        help="fail when more than this fraction of rows fail (default 0.01)")
    parser.add_argument("--allow-absent", action="append", default=[], metavar="COL",
                        help="a declared input that may be missing from a CSV header or Parquet "
                        "schema (its rows take the default); repeatable")
    parser.add_argument("--non-finite", choices=("error", "missing"), default="error",
                        help="inf, -inf or beyond-float32 values: the row goes to errors/ "
                        "(default) or the value counts as missing")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the previous output in --output once the new job "
                        "succeeded (only the files its manifest lists)")
    parser.add_argument("--validate-against", default=None, metavar="REF",
                        help="before publishing, validate the new data against the output "
                        "REF, or a TFMD schema .pbtxt with declared domains (anomalies.json in "
                        "the output; see shardforge validate)")
    parser.add_argument("--on-anomaly", choices=("fail", "warn"), default="fail",
                        help="with --validate-against: anomalies fail the job, publishing "
                        "nothing (default), or only warn")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.epilog = ("Any other flag must be a Beam pipeline option, e.g. --direct_num_workers "
                     "4, or --runner DataflowRunner --project P --region R --temp_location "
                     f"gs://B/tmp --setup_file ./setup.py. Workers: {RUNNER_RULE}.")
    parser.set_defaults(accepts_extra=True)


def _unknown_flags(extra: list[str]) -> str | None:
    """An error message for flags neither ``shardforge run`` nor Beam knows, else ``None``."""
    from shardforge.pipelines.options import beam_flags

    unknown, beam_names = beam_flags(extra)
    if not unknown:
        return None
    own = argparse.ArgumentParser()
    add_arguments(own)
    names = [o for a in own._actions for o in a.option_strings] + beam_names
    parts = []
    for flag in unknown:
        close = difflib.get_close_matches(flag, names, n=1)
        parts.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
    return ("unrecognized arguments: " + ", ".join(parts)
            + "; neither shardforge run nor Beam's pipeline options know them")


def _read_bytes(path: str) -> bytes | None:
    """The bytes of ``path``, or ``None`` when there is no such file."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def short_error(err: BaseException) -> str:
    """The one useful line of a failure: Beam wraps a worker's exception in pages of
    traceback text, whose last ``SomeError: message`` line is the cause."""
    text = str(err).strip() or type(err).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception"))
              and ":" in ln and not ln.startswith(("File ", "Traceback"))]
    line = causes[-1] if causes and len(lines) > 1 else lines[0]
    if line.startswith("RuntimeError: ") and len(causes) == 1:
        line = line.removeprefix("RuntimeError: ")
    return line if len(line) <= 600 else line[:600] + " …"


def main(args: argparse.Namespace) -> int:
    # `kill PID` (SIGTERM) unwinds like Ctrl-C: the job's lock and staging are removed on the
    # way out, and the workers' watchdog stops them once this process is gone. (Signal handlers
    # can only be set from the main thread; the previous one is restored for in-process callers.)
    if threading.current_thread() is not threading.main_thread():
        return _main(args)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return _main(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    from shardforge.errors import Interrupted, UserError, exit_code
    from shardforge.pipelines.pipeline import FAILED_LOG, run_pipeline
    from shardforge.pipelines.transforms import TooManyErrors
    from shardforge.pipelines.validate import AnomaliesFound
    from shardforge.records.manifest import MANIFEST, STATE_DIR, OutputLocked

    extra = list(args.extra or ())
    problem = _unknown_flags(extra)
    if problem:
        raise UserError(problem)
    manifest = os.path.join(args.output, MANIFEST)
    before = _read_bytes(manifest)
    try:
        summary = run_pipeline(
            args.features, args.input, args.output, fmt=args.format,
            eval_fraction=args.eval_fraction, split_key=args.split_key,
            num_shards=args.num_shards, shard_size=args.shard_size,
            compression=None if args.compression == "none" else args.compression,
            max_error_fraction=args.max_error_fraction, beam_args=extra,
            overwrite=args.overwrite, absent_ok=args.allow_absent, non_finite=args.non_finite,
            command=shlex.join(["shardforge", *sys.argv[1:]]),
            show_progress=not args.quiet, verbose=args.verbose,
            validate_against=args.validate_against, on_anomaly=args.on_anomaly,
        )
    except AnomaliesFound as err:
        print("\n".join(a.line() for a in err.anomalies), file=sys.stderr)
        print(f"shardforge run: error: {len(err.anomalies)} anomalies against {err.against}; "
              "the output was not published (--on-anomaly warn publishes anyway)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        if _read_bytes(manifest) != before:
            raise Interrupted(f"the job had finished: {manifest} lists its output") from err
        state = (f"the previous output in {args.output} is intact" if before is not None
                 else f"{args.output} holds no output")
        raise Interrupted(f"{state}; nothing was published") from err
    except (TooManyErrors, OutputLocked):
        raise  # our own messages: the one error line of shardforge.cli
    except Exception as err:
        if exit_code(err) == 2:
            raise
        if args.verbose:
            traceback.print_exc()
        log = os.path.join(args.output, STATE_DIR, FAILED_LOG)
        where = f"Beam's output is in {log}; " if os.path.exists(log) else ""
        print(f"shardforge run: the job failed: {short_error(err)}\n({where}rerun with "
              "--verbose for Beam's logs and the full traceback)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary.to_dict(), indent=1))
        return 0
    splits = ", ".join(f"{s}: {n}" for s, n in summary.splits.items())
    print(f"read {summary.rows_read} rows, wrote {summary.rows_out} records ({splits}) "
          f"in {summary.seconds:.1f} s")
    print(f"{summary.errors} rows failed" + (f": see {summary.errors_dir}/" if summary.errors
                                              else ""))
    if summary.kept:
        print(f"kept {len(summary.kept)} files in {summary.output} that no job wrote: "
              + ", ".join(summary.kept[:10]) + (" …" if len(summary.kept) > 10 else ""))
    for line in summary.extra.get("anomalies", []):
        print(f"anomaly: {line}")
    print(f"schema: {summary.schema}\nstats:  {summary.stats}  (view: shardforge stats "
          f"{summary.output})\nmanifest: {summary.manifest}")
    return 0
