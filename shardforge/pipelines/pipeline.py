"""``run_pipeline``: the whole job from Python, on the offline local runner or any Beam runner.

A job commits or does not exist (``shardforge.records.manifest``), in a local directory or a
bucket alike: it takes the output's lock, writes into a staging directory, derives the report
and TFMD files there, and only once the job succeeded publishes its files and the manifest. A
failed or killed job leaves the previous output exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import posixpath
import re
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from shardforge.pipelines import progress
from shardforge.records import fs
from shardforge.records import manifest as mf
from shardforge.records.layout import (
    DEFAULT_SHARD_SIZE,
    ERRORS_DIR,
    SCHEMA_FILE,
    atomic_write,
    no_space,
)

FAILED_LOG = "failed-job.log"  # in OUT/.shardforge/: what Beam printed during a failed job


@dataclass
class Summary:
    """What a run produced. ``splits`` maps split → number of records written; ``kept`` lists
    files in the output that no job wrote (left in place by ``--overwrite``)."""

    output: str
    rows_read: int
    errors: int
    splits: dict[str, int]
    shards: dict[str, list[str]]
    schema: str
    stats: str
    errors_dir: str
    seconds: float
    runner: str = ""
    manifest: str = ""
    kept: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def rows_out(self) -> int:
        return sum(self.splits.values())

    def to_dict(self) -> dict:
        return asdict(self) | {"rows_out": self.rows_out}


def _check_inputs(patterns: Sequence[str], features=None, fmt: str | None = None,
                  absent_ok: Sequence[str] = ()) -> None:
    """Fail before anything is written: a pattern matching no file, or (given the feature set) a
    CSV header or Parquet schema lacking a declared input not in ``absent_ok``."""
    # Beam's matcher, as the job reads: its ``**`` spans directories (``dir/**.py``), Python's
    # ``glob`` does not.
    from apache_beam.io.filesystems import FileSystems

    for pattern in patterns:
        if "://" in pattern:
            continue
        if not FileSystems.match([pattern])[0].metadata_list:
            raise FileNotFoundError(f"no input files match {pattern!r}")
    if features is not None:
        from shardforge.pipelines.readers.typed import check_input_columns
        from shardforge.pipelines.transforms import FeatureSetRef

        ref = features if isinstance(features, FeatureSetRef) else FeatureSetRef(features)
        check_input_columns(patterns, ref.get(), fmt, absent_ok)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables for the job's duration (worker processes inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _stderr_to(path: str | None):
    """Send file descriptor 2 to ``path`` (worker processes inherit it: Beam's workers print
    a failing bundle's traceback to stderr themselves) while ``sys.stderr`` keeps the terminal,
    for the progress line and the job's own messages."""
    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    old = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_beam(verbose: bool, log_path: str | None = None):
    """Beam's own logging and warnings only under ``verbose``: by default a job prints its
    progress and its result, not Beam's start-up chatter or its workers' tracebacks (those go
    to ``log_path`` when given; the worker processes inherit ``PYTHONWARNINGS``)."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("apache_beam", "absl", "grpc")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        # Beam logs a worker's failure as pages of traceback at ERROR; the job's own error
        # message says what failed (and --verbose shows all of it).
        lg.setLevel(logging.CRITICAL + 1)
    # gRPC's C core logs on its own (fork and channel notices), past Python's logging
    with warnings.catch_warnings(), _environ({"PYTHONWARNINGS": "ignore",
                                              "GRPC_VERBOSITY": "ERROR"}), _stderr_to(log_path):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _run_beam(transform, options) -> float:
    from shardforge.pipelines.options import make_pipeline
    from shardforge.pipelines.transforms import TooManyErrors

    start = time.perf_counter()
    pipeline = make_pipeline(options=options)
    pipeline | "Preprocess" >> transform
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as err:
        # a worker's exception reaches the launcher as the runner chooses (often as text); the
        # error budget's verdict comes from the file the failing step wrote
        over = TooManyErrors.found_in(posixpath.join(transform.output, ERRORS_DIR))
        if over is not None:
            raise over from None
        full = _no_space(err, transform.output)
        if full is not None:
            raise full from None
        if _interrupted(err):
            raise KeyboardInterrupt from None
        raise
    return time.perf_counter() - start


def _interrupted(err: BaseException) -> bool:
    """A Ctrl-C that reached a bundle running in this process (the in-process runner): Beam
    reports it as the step's failure, ``KeyboardInterrupt [while running 'STEP']``."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return any(isinstance(e, KeyboardInterrupt) or str(e).startswith("KeyboardInterrupt")
               for e in chain)


_NO_SPACE = re.compile(r"\[Errno 28\] (no space left on device writing [^\n]*)")


def _no_space(err: BaseException, output: str) -> OSError | None:
    """A job that failed on a full disk, as one error naming the file it was writing (when
    the writer said: ``layout.no_space``) or the job's output; ``None`` for other failures."""
    text = str(err)
    if getattr(err, "errno", None) != errno.ENOSPC and "[Errno 28]" not in text:
        return None
    said = _NO_SPACE.search(text)
    said = said.group(1).split(" [while running ")[0] if said else no_space(output).strerror
    return OSError(errno.ENOSPC, f"{said}; nothing was published")


def _keep_failed_errors(staging: str, output: str, job_had_output: bool) -> str:
    """A failed job's ``errors/`` where the user can read them, without touching a previous
    output: ``OUT/errors/`` when there is none, else ``OUT/.shardforge/failed-errors/``."""
    src = os.path.join(staging, ERRORS_DIR)
    if not os.path.isdir(src):
        return src
    if job_had_output:
        dst = os.path.join(output, mf.STATE_DIR, "failed-errors")
    else:
        dst = os.path.join(output, ERRORS_DIR)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(src, dst)
    return dst


def run_pipeline(features, input: str | Sequence[str], output: str, *, fmt: str | None = None,
                 eval_fraction: float = 0.1, split_key: str | None = None,
                 num_shards: int | None = None, shard_size: int | str = DEFAULT_SHARD_SIZE,
                 compression: str | None = None, max_error_fraction: float = 0.01,
                 beam_args: Sequence[str] = (), overwrite: bool = False,
                 chunk_rows: int | None = None, absent_ok: Sequence[str] = (),
                 non_finite: str = "error", command: str | None = None,
                 show_progress: bool = False, verbose: bool = False,
                 validate_against: str | None = None, on_anomaly: str = "fail") -> Summary:
    """Run the preprocessing job and wait for it.

    ``features`` is a ``FeatureSet`` or the path of a ``.py`` file defining ``FEATURES``;
    ``input`` a glob (or several); ``beam_args`` any Beam pipeline options
    (default: the offline local runner with two worker processes). ``absent_ok`` and
    ``non_finite``: see :class:`~shardforge.pipelines.transforms.Preprocess`.

    ``output`` (a directory, ``gs://…`` or ``s3://…``) is written through staging and published
    with ``manifest.json`` only when the job succeeded; ``overwrite=True`` then replaces the
    files of the previous output (only those its manifest lists; on an object store only once
    the new output is in place: :func:`~shardforge.records.manifest.publish_remote`). A second
    job on an output being written fails fast with
    :class:`~shardforge.records.manifest.OutputLocked`. ``show_progress`` prints a live progress
    line to stderr; Beam's logging is silent unless ``verbose=True``.

    ``validate_against``: a previous output (or a TFMD schema with declared domains); before
    publishing, the job's statistics are validated against it
    (:mod:`~shardforge.pipelines.validate`), the anomalies written to
    ``anomalies.json`` and counted in the manifest; with anomalies, ``on_anomaly="fail"``
    raises :class:`~shardforge.pipelines.validate.AnomaliesFound` and publishes nothing,
    ``"warn"`` publishes and lists them in ``Summary.extra["anomalies"]``.

    >>> s = run_pipeline("examples/click_features.py", "clicks.csv", "out/")  # doctest: +SKIP
    >>> s.splits, s.errors                                                     # doctest: +SKIP
    ({'eval': 2013, 'train': 17987}, 0)

    Raises :class:`TooManyErrors` when more than ``max_error_fraction`` of the rows fail (the
    errors are in ``output/errors/``, or ``output/.shardforge/failed-errors/`` when a previous
    output is there, which stays as it was; no shards are written).
    """
    from apache_beam.options.pipeline_options import StandardOptions

    from shardforge.interop.tfmd import write_tfmd_schema
    from shardforge.interop.tfmd_stats import write_tfmd_statistics
    from shardforge.pipelines.cli_stats import write_html
    from shardforge.pipelines.options import make_options
    from shardforge.pipelines.readers import DEFAULT_CHUNK_ROWS
    from shardforge.pipelines.transforms import Preprocess, TooManyErrors
    from shardforge.records.index import index_records

    patterns = [input] if isinstance(input, str) else list(input)
    command = command or shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
    output = output.rstrip("/") or "/"
    _check_inputs(patterns, features, fmt, absent_ok)
    if validate_against:
        from shardforge.pipelines.validate import load_reference

        if on_anomaly not in ("fail", "warn"):
            raise ValueError(f"on_anomaly={on_anomaly!r}; expected 'fail' or 'warn'")
        load_reference(validate_against)  # a missing or broken one fails before the job runs
    options = make_options(beam_args, inputs=patterns)
    runner = str(options.view_as(StandardOptions).runner or "local FnApiRunner")

    def preprocess(dest: str) -> Preprocess:
        return Preprocess(
            features, patterns, dest, fmt=fmt, eval_fraction=eval_fraction,
            split_key=split_key, num_shards=num_shards, shard_size=shard_size,
            compression=compression, max_error_fraction=max_error_fraction,
            chunk_rows=chunk_rows or DEFAULT_CHUNK_ROWS, absent_ok=absent_ok,
            non_finite=non_finite, check_inputs=False,
        )

    # One step list for a local directory and a bucket; only the lock, staging and publish
    # differ (records/manifest.py: a rename locally, a precondition on an object store)
    remote = fs.is_remote(output)
    fs.check_credentials(output)  # one error saying what to set, before the job starts
    mf.check_writable(output, overwrite)  # before anything is created
    created = not remote and not os.path.exists(output)
    try:
        with mf.job_lock(output, command) as lock, _scratch(lock.staging) as scratch:
            mf.check_writable(output, overwrite)
            had_output = bool(mf.previous_output(output)[0])
            # a failed job's Beam output, kept for the user (--verbose shows it live instead)
            beam_log = None if remote else os.path.join(output, mf.STATE_DIR, FAILED_LOG)
            if beam_log:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(beam_log)
            progress.reset()
            ticks = os.path.join(scratch, "progress")
            try:
                with quiet_beam(verbose, beam_log), _environ(progress.launcher_env(ticks)), \
                        progress.ProgressLine(ticks, enabled=show_progress):
                    seconds = _run_beam(preprocess(lock.staging), options)
            except TooManyErrors as err:
                if remote:
                    raise
                raise err.moved_to(_keep_failed_errors(lock.staging, output, had_output)) \
                    from None
            shutil.rmtree(ticks, ignore_errors=True)  # the workers' counts: Beam is done
            if beam_log:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(beam_log)  # the job succeeded: its Beam chatter is of no use
            progress.hook("staged")
            doc = json.loads(fs.read_text(fs.join(lock.staging, "stats.json")))
            extra = {"runner": runner}
            anomalies = None
            with _local_view(lock.staging) as staged:
                if validate_against:
                    from shardforge.pipelines.validate import AnomaliesFound, check_job

                    anomalies = check_job(doc, validate_against, staged, features)
                    if anomalies and on_anomaly == "fail":
                        raise AnomaliesFound(anomalies, validate_against)
                    extra["validation"] = {"against": validate_against,
                                           "anomalies": len(anomalies)}
                write_html(doc, os.path.join(staged, "stats.html"), anomalies)
                write_tfmd_schema(staged)  # schema_tfmd.pbtxt for TFDV / TFX
                write_tfmd_statistics(staged)  # stats_tfmd.pbtxt for TFDV / Facets
            manifest = mf.build_manifest(
                lock.staging, count_records=index_records, rows_read=doc["rows_read"],
                rows_failed=doc["errors"], command=command, job=lock.job, extra=extra)
            _check_counts(manifest, doc)
            published = lock.publish(manifest, hook=progress.hook)
            if not remote:
                # dead letters of an earlier failed attempt: superseded by this job's errors/
                shutil.rmtree(os.path.join(output, mf.STATE_DIR, "failed-errors"),
                              ignore_errors=True)
    except BaseException:
        if created and os.path.isdir(output) and not os.listdir(output):
            os.rmdir(output)
        raise
    summary = _summary(output, doc, seconds, runner, published.manifest)
    summary.manifest = fs.join(output, mf.MANIFEST)
    summary.kept = published.kept
    if anomalies:
        summary.extra["anomalies"] = [a.line() for a in anomalies]
    return summary


# The files a job derives from its stats and schema before it publishes (besides anomalies.json)
DERIVED = ("stats.html", "schema_tfmd.pbtxt", "stats_tfmd.pbtxt", "anomalies.json")


@contextlib.contextmanager
def _scratch(staging: str):
    """A local folder for the job's own bookkeeping (progress ticks), gone afterwards: inside
    a local staging directory, else a temporary one."""
    if not fs.is_remote(staging):
        path = os.path.join(staging, mf.STATE_DIR)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
        return
    with tempfile.TemporaryDirectory(prefix="shardforge-") as tmp:
        yield tmp


@contextlib.contextmanager
def _local_view(staging: str):
    """A local folder holding the staged schema and stats, where the derived files
    (:data:`DERIVED`) are written: the staging directory itself, or for a bucket a temporary
    folder whose derived files are uploaded into the staging prefix afterwards."""
    if not fs.is_remote(staging):
        yield staging
        return
    with tempfile.TemporaryDirectory(prefix="shardforge-") as tmp:
        # inside a folder named like the state directory: staging, not an output to verify
        view = os.path.join(tmp, mf.STATE_DIR)
        os.mkdir(view)
        for name in (SCHEMA_FILE, "stats.json"):
            atomic_write(os.path.join(view, name), fs.read_bytes(fs.join(staging, name)))
        yield view
        for name in DERIVED:
            if os.path.exists(os.path.join(view, name)):
                fs.write_bytes(fs.join(staging, name), fs.read_bytes(os.path.join(view, name)))


def _check_counts(manifest: mf.Manifest, doc: dict) -> None:
    """The shards hold exactly the records the job counted: else something was lost."""
    got = {s: v["records"] for s, v in manifest.splits.items()}
    want = {s: v["records"] for s, v in doc["splits"].items() if v["records"] or s in got}
    if {s: got.get(s, 0) for s in want} != want:
        raise RuntimeError(f"the shards hold {got} records but the job counted {want}; "
                           "the output was not published")


def _summary(output: str, doc: dict, seconds: float, runner: str,
             manifest: mf.Manifest) -> Summary:
    shards: dict[str, list[str]] = {split: [] for split in doc["splits"]}
    for f in manifest.shards:
        shards.setdefault(f.path.split("/", 1)[0], []).append(fs.join(output, f.path))
    return Summary(
        output=output, rows_read=doc["rows_read"], errors=doc["errors"],
        splits={s: v["records"] for s, v in doc["splits"].items()},
        shards={split: sorted(paths) for split, paths in shards.items()},
        schema=fs.join(output, SCHEMA_FILE), stats=fs.join(output, "stats.json"),
        errors_dir=fs.join(output, ERRORS_DIR), seconds=seconds, runner=runner,
    )
