"""The Beam job as named composites: MatchFiles → ReadRaw → Analyze, MatchFiles → Transform
(reading the input again) → WriteShards, plus dead letters and stats, and ``Preprocess``, which
wires them together for a user's own pipeline.

DoFns stay thin: parsing, analyzing and transforming are the feature set's pure functions from
``shardforge.features``; framing and index files are ``shardforge.records``. Nothing that grows
with the input crosses a step: file splits, analyzer accumulators, and the names of sorted runs
of encoded records on disk (see the README's memory design).
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from shardforge.features.hashing import row_hashes
from shardforge.pipelines import progress, stats
from shardforge.pipelines.files import is_remote, read_file, write_file
from shardforge.pipelines.readers import DEFAULT_CHUNK_ROWS, Split, reader_for
from shardforge.pipelines.readers.base import row_error_records
from shardforge.pipelines.readers.typed import TypedChunk, check_input_columns, typed_chunks
from shardforge.pipelines.sort import DEFAULT_RUN_BYTES, Run, RunSpiller, merge_runs
from shardforge.records.layout import (
    BUDGET_FILE,
    DEFAULT_SHARD_SIZE,
    ERRORS_DIR,
    SCHEMA_FILE,
    SPLITS,
    compression_name,
    index_path,
    num_shards_for,
    parse_size,
    shard_bounds,
    shard_keys,
    shard_name,
    split_of,
)
from shardforge.records.spec import Batch

ERRORS = "errors"
NUM_READ = "num_read"
NAMESPACE = "shardforge"
STATS = "stats"


# ---------------------------------------------------------------------------------------------
# Carrying the feature set to workers

# Feature sets loaded from source in this process, by (file name, text). A worker unpickles a
# FeatureSetRef per DoFn, CombineFn and stage; loading the file runs its module (a region
# column builds and checks its polygons), so each process does it once.
_LOADED: dict[tuple[str, str], object] = {}


class FeatureSetRef:
    """A feature set as workers get it: by value, or as the source of its ``.py`` file.

    A feature set loaded from a user's file may reference functions of that module, which a remote
    worker cannot import by name; shipping the file's text and loading it on the worker keeps the
    job free of local-only state (the same on Dataflow as on this machine).
    """

    def __init__(self, features) -> None:
        self._fs = None
        self.filename = self.source = None
        if isinstance(features, (str, os.PathLike)):
            self.filename = os.path.basename(os.fspath(features))
            with open(features, encoding="utf-8") as f:
                self.source = f.read()
        else:
            self._fs = features

    def get(self):
        if self._fs is None:
            key = (self.filename, self.source)
            if key not in _LOADED:
                import shardforge.features as sf

                with tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, self.filename)
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(self.source)
                    _LOADED[key] = sf.load_feature_set(path)
            self._fs = _LOADED[key]
        return self._fs

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.source is not None:
            state["_fs"] = None
        return state


def _as_ref(features) -> FeatureSetRef:
    return features if isinstance(features, FeatureSetRef) else FeatureSetRef(features)


@dataclass
class Rows:
    """A typed input batch and, per input column, how many of its rows had no value."""

    batch: Batch
    missing: dict[str, int]




# ---------------------------------------------------------------------------------------------
# ReadRaw


class _ReadFn(beam.DoFn):
    """One split of a file → ``Rows`` (+ errors and rows read): the analyze pass."""

    def __init__(self, fs: FeatureSetRef, fmt: str | None, chunk_rows: int,
                 non_finite: str) -> None:
        self.fs, self.fmt, self.chunk_rows, self.non_finite = fs, fmt, chunk_rows, non_finite
        self.rows_read = Metrics.counter(NAMESPACE, "rows_read")

    def setup(self):
        progress.attach()

    def process(self, split: Split):
        read = 0
        for item in typed_chunks(self.fs.get(), split, self.fmt, self.chunk_rows,
                                 self.non_finite):
            if isinstance(item, TypedChunk):
                # every row read is counted, the ones that failed to parse too
                read += item.chunk.count
                self.rows_read.inc(item.chunk.count)
                progress.add("rows_read", item.chunk.count)
                if len(item.keep):
                    yield Rows(item.batch, item.missing)
            else:
                if item["stage"] == "read":
                    read += 1
                    self.rows_read.inc()
                    progress.add("rows_read")
                progress.add("errors")
                yield pvalue.TaggedOutput(ERRORS, item)
        if split.start == 0:
            progress.add("files_read")
        yield pvalue.TaggedOutput(NUM_READ, read)


def _split(file: tuple[str, int], fmt: str | None) -> list[Split]:
    path, size = file
    # about 16 splits a file (2-32 MiB each): every worker gets work from one big file
    target = min(max(size // 16, 2 << 20), 32 << 20)
    return reader_for(fmt, path).split(path, target)


class MatchFiles(beam.PTransform):
    """Globs → :class:`~shardforge.pipelines.readers.Split`\\ s of the matched files (each
    file cut by its format's reader: a big CSV, JSONL or Parquet file at row boundaries),
    spread over the workers."""

    def __init__(self, patterns: str | Sequence[str], fmt: str | None = None) -> None:
        super().__init__()
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.fmt = fmt

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda m: (m.path, m.size_in_bytes))
            | "SpreadFiles" >> beam.Reshuffle()
            | "SplitFiles" >> beam.FlatMap(_split, self.fmt)
            | "SpreadSplits" >> beam.Reshuffle()
        )


class ReadRaw(beam.PTransform):
    """Splits (from :class:`MatchFiles`) → ``{"rows": Rows, "errors": dict, "num_read": int}``.

    ``fmt`` names a reader of ``readers.READERS`` (``None``: from each file's suffix).
    Values are typed by the feature set's input declarations (``features.coerce``); reading and
    coercing run in one step, so no raw row crosses a stage boundary.
    """

    def __init__(self, features, fmt: str | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, non_finite: str = "error") -> None:
        super().__init__()
        self.fs, self.fmt, self.chunk_rows = _as_ref(features), fmt, chunk_rows
        self.non_finite = non_finite

    def expand(self, paths):
        read = paths | "ReadFiles" >> beam.ParDo(
            _ReadFn(self.fs, self.fmt, self.chunk_rows, self.non_finite)
        ).with_outputs(ERRORS, NUM_READ, main="rows")
        num_read = read[NUM_READ] | "CountRead" >> beam.CombineGlobally(sum)
        return {"rows": read.rows, "errors": read[ERRORS], "num_read": num_read}


# ---------------------------------------------------------------------------------------------
# Analyze


class AnalyzeCombineFn(beam.CombineFn):
    """``fs.analyzer()`` as one CombineFn: every analyzer of the feature set in one pass."""

    def __init__(self, fs: FeatureSetRef) -> None:
        self.fs = fs
        self._analyzer = None

    @property
    def analyzer(self):
        if self._analyzer is None:
            self._analyzer = self.fs.get().analyzer()
        return self._analyzer

    def __getstate__(self) -> dict:
        return {"fs": self.fs, "_analyzer": None}

    def create_accumulator(self):
        return self.analyzer.create()

    def add_input(self, acc, rows: Rows):
        return self.analyzer.add_batch(acc, rows.batch)

    def merge_accumulators(self, accs):
        # One part at a time: merging all bundles' parts at once holds their concatenation
        # (every bundle's quantile sketch side by side), which grows with the input.
        merged = None
        for acc in accs:
            merged = acc if merged is None else self.analyzer.merge([merged, acc])
        return self.create_accumulator() if merged is None else merged

    def extract_output(self, acc):
        return self.analyzer.extract(acc)


class _WriteSchemaFn(beam.DoFn):
    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, state):
        path = posixpath.join(self.output, SCHEMA_FILE)
        with tempfile.TemporaryDirectory() as tmp:
            write_file(path, read_file(state.save(tmp)))
        yield path


class Analyze(beam.PTransform):
    """``Rows`` → the singleton ``TransformState``; writes ``output/schema.pbtxt`` when given."""

    def __init__(self, features, output: str | None = None) -> None:
        super().__init__()
        self.fs, self.output = _as_ref(features), output

    def expand(self, rows):
        state = rows | "CombineAnalyzers" >> beam.CombineGlobally(AnalyzeCombineFn(self.fs))
        if self.output is not None:
            state | "WriteSchema" >> beam.ParDo(_WriteSchemaFn(self.output))
        return state


# ---------------------------------------------------------------------------------------------
# Transform


class _TransformFn(beam.DoFn):
    """The transform pass: read and coerce a file again, ``fs.transform`` with the analyzed
    state, encode, split, and spill sorted runs (``sort.RunSpiller``); each bundle's statistics
    of the batches it transformed go out as one ``stats.Accumulator``. Rows the analyze pass
    already reported (read and parse errors) are dropped silently here."""

    def __init__(self, fs: FeatureSetRef, fmt: str | None, chunk_rows: int, non_finite: str,
                 eval_fraction: float, split_key: str | None, spill_dir: str,
                 run_bytes: int) -> None:
        self.fs, self.fmt, self.chunk_rows, self.non_finite = fs, fmt, chunk_rows, non_finite
        self.eval_fraction, self.split_key = eval_fraction, split_key
        self.spill_dir, self.run_bytes = spill_dir, run_bytes

    def setup(self):
        progress.attach()

    def start_bundle(self):
        self.spiller = RunSpiller(self.spill_dir, self.run_bytes)
        self.stats = stats.Accumulator()

    def process(self, split: Split, state):
        from shardforge.records import RecordBlock, encode_batch

        fs = self.fs.get()
        for item in typed_chunks(fs, split, self.fmt, self.chunk_rows, self.non_finite):
            if not isinstance(item, TypedChunk) or not len(item.keep):
                continue
            batch = item.batch
            # Split and shard on the input row, not the serialized record: a row's place must
            # not depend on the encoder's byte layout nor on the learned state's last bit.
            # With a split key the key alone places a row (split and shard).
            row_hash = row_hashes(batch, [self.split_key] if self.split_key else list(batch))
            is_eval = split_of(row_hash, self.eval_fraction)
            self.stats.add_inputs(batch, item.missing, is_eval)
            out, errors = fs.transform(batch, state, errors="collect")
            for record in row_error_records(errors, "transform", item.row_id):
                progress.add("errors")
                yield pvalue.TaggedOutput(ERRORS, record)
            if errors:
                kept = np.ones(len(row_hash), dtype=bool)
                kept[[e.row for e in errors]] = False
                is_eval, row_hash = is_eval[kept], row_hash[kept]
            self.stats.add_outputs(out, is_eval, state)
            records = encode_batch(out)
            progress.add("records_written", len(records))  # into sorted runs on disk
            if not records:
                continue
            block = RecordBlock.from_records(records)
            keys = shard_keys(row_hash)
            for split, mask in (("train", ~is_eval), ("eval", is_eval)):
                idx = np.flatnonzero(mask)
                if len(idx):
                    yield from self.spiller.add(split, keys[idx], RecordBlock(
                        block.buf, block.offsets[idx], block.lengths[idx]))

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        for run in self.spiller.flush():
            yield GlobalWindows.windowed_value(run)
        yield pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(self.stats))


class Transform(beam.PTransform):
    """Splits (from :class:`MatchFiles`) + state → ``{"runs": run descriptors, "errors": dict,
    "stats": stats.Accumulator}`` (``stats``: one per bundle, of the inputs and outputs this pass
    transformed, for :class:`stats.ComputeStats`).

    Each file is read again (the analyze pass read it first), transformed and encoded a chunk at
    a time; records go to sorted runs on disk (``spill_dir``), which :class:`WriteShards`
    merges, so no step holds all records. A row goes to eval when the hash of its
    ``split_key`` input column (default: of all its input values) falls below
    ``eval_fraction``, so reruns split identically on any runner.
    """

    def __init__(self, features, state, spill_dir: str, eval_fraction: float = 0.1,
                 split_key: str | None = None, fmt: str | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, non_finite: str = "error",
                 run_bytes: int = DEFAULT_RUN_BYTES) -> None:
        super().__init__()
        self.fs, self.state, self.spill_dir = _as_ref(features), state, spill_dir
        self.eval_fraction, self.split_key = eval_fraction, split_key
        self.fmt, self.chunk_rows, self.non_finite = fmt, chunk_rows, non_finite
        self.run_bytes = run_bytes

    def expand(self, paths):
        out = paths | "TransformFiles" >> beam.ParDo(
            _TransformFn(self.fs, self.fmt, self.chunk_rows, self.non_finite,
                         self.eval_fraction, self.split_key, self.spill_dir, self.run_bytes),
            pvalue.AsSingleton(self.state),
        ).with_outputs(ERRORS, STATS, main="runs")
        return {"runs": out.runs, "errors": out[ERRORS], "stats": out[STATS]}


# ---------------------------------------------------------------------------------------------
# WriteShards


class _SplitSizes(beam.CombineFn):
    """``{split: [records, bytes]}`` over all run descriptors."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, run):
        c = acc.setdefault(run["split"], [0, 0])
        c[0] += run["records"]
        c[1] += run["bytes"]
        return acc

    def merge_accumulators(self, accs):
        out: dict = {}
        for acc in accs:
            for split, (n, b) in acc.items():
                c = out.setdefault(split, [0, 0])
                c[0] += n
                c[1] += b
        return out

    def extract_output(self, acc):
        return acc


def _num_shards(sizes: dict, split: str, num_shards: int | None, shard_size: int) -> int:
    return num_shards or num_shards_for(sizes.get(split, [0, 0])[1], shard_size)


class _AllShardsFn(beam.DoFn):
    """One element per shard to write, so every ``part-i-of-n`` exists even when empty."""

    def __init__(self, splits, num_shards, shard_size) -> None:
        self.splits, self.num_shards, self.shard_size = splits, num_shards, shard_size

    def process(self, sizes, _ready):
        for split in self.splits:
            n = _num_shards(sizes, split, self.num_shards, self.shard_size)
            for i in range(n):
                yield split, i, n


class _WriteShardFn(beam.DoFn):
    """Write one shard by merging its key range out of every run of its split (records in
    (key, bytes) order, so reruns write the same bytes) and its index.

    Both are written under a scratch directory and renamed into place (index first, so a visible
    shard always has its index); a retried bundle rewrites the same names with the same bytes.
    """

    def __init__(self, output: str, compression: str | None) -> None:
        self.output, self.compression = output, compression

    def setup(self):
        progress.attach()

    def process(self, shard, runs):
        from shardforge.records import TFRecordWriter

        split, i, n = shard
        opened = [Run(r["path"]) for r in runs if r["split"] == split]
        lo, hi = shard_bounds(i, n)
        name = shard_name(i, n, self.compression)
        dest = posixpath.join(self.output, split, name)
        remote = is_remote(dest)
        if not remote:  # scratch beside the destination: the rename stays on one filesystem
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        scratch = None if remote else os.path.dirname(dest)
        count = 0
        with tempfile.TemporaryDirectory(dir=scratch, prefix=".tmp-") as tmp:
            local = os.path.join(tmp, name)
            index = local + ".idx"
            # The writer records gzip flush points in the index, so readers can seek into
            # compressed shards too.
            with TFRecordWriter(local, compression=self.compression, index=True,
                                index_path=index) as w:
                for block in merge_runs(opened, lo, hi):
                    count += len(block)
                    w.write_block(block)
            for run in opened:
                run.close()
            if not remote:
                os.replace(index, index_path(dest, mkdir=True))
                os.replace(local, dest)
            else:
                for src, dst in ((index, index_path(dest)), (local, dest)):
                    write_file(dst, read_file(src))
        Metrics.counter(NAMESPACE, f"records_{split}").inc(count)
        yield dest


def _remove_runs(_, runs, spill_dir: str) -> None:
    paths = [r["path"] for r in runs]
    if paths:
        FileSystems.delete(paths)
    if not is_remote(spill_dir) and os.path.isdir(spill_dir):
        with_leftovers = os.listdir(spill_dir)
        if not with_leftovers:
            os.rmdir(spill_dir)


class WriteShards(beam.PTransform):
    """Sorted runs (from :class:`Transform`) → sharded TFRecord files and their index files
    (``records.layout.index_path``: where no shard glob matches them).

    ``num_shards`` fixes the count per split; otherwise shards are about ``shard_size`` bytes.
    A record's shard is the range its key falls in, so each shard writer merges only its part
    of each run. ``ready`` (optional singleton) must exist before anything is written: the
    error-budget gate. The runs are deleted once every shard is written.
    Returns ``{"paths": written shard paths, "sizes": {split: [records, bytes]}}``.
    """

    def __init__(self, output: str, splits: Sequence[str] = SPLITS,
                 num_shards: int | None = None, shard_size: int | str = DEFAULT_SHARD_SIZE,
                 compression: str | None = None, ready=None, spill_dir: str | None = None) -> None:
        super().__init__()
        self.output, self.splits = output, list(splits)
        self.num_shards, self.shard_size = num_shards, parse_size(shard_size)
        self.compression = compression_name(compression)
        self.ready, self.spill_dir = ready, spill_dir

    def expand(self, runs):
        sizes = runs | "SplitSizes" >> beam.CombineGlobally(_SplitSizes())
        ready = self.ready
        if ready is None:
            ready = runs.pipeline | "NoGate" >> beam.Create([True])
        paths = (
            sizes
            | "AllShards" >> beam.ParDo(
                _AllShardsFn(self.splits, self.num_shards, self.shard_size),
                pvalue.AsSingleton(ready))
            | "SpreadShards" >> beam.Reshuffle()
            | "WriteShard" >> beam.ParDo(_WriteShardFn(self.output, self.compression),
                                         pvalue.AsList(runs))
        )
        if self.spill_dir is not None:
            (
                paths
                | "ShardsDone" >> beam.combiners.Count.Globally()
                | "RemoveRuns" >> beam.Map(_remove_runs, pvalue.AsList(runs), self.spill_dir)
            )
        return {"paths": paths, "sizes": sizes}


# ---------------------------------------------------------------------------------------------
# Dead letters and the error budget


class TooManyErrors(RuntimeError):
    """More rows failed than ``max_error_fraction`` allows: ``rows_failed`` of ``rows_read``,
    each with its reason in ``errors_dir``.

    A worker that finds the budget exceeded also writes this verdict to ``errors_dir``
    (:data:`BUDGET_FILE`) before it fails the job, so the launcher raises it from that file
    (:meth:`found_in`) whatever the runner makes of the worker's exception.
    """

    def __init__(self, rows_failed: int, rows_read: int, max_error_fraction: float,
                 errors_dir: str) -> None:
        self.rows_failed, self.rows_read = rows_failed, rows_read
        self.max_error_fraction, self.errors_dir = max_error_fraction, errors_dir
        super().__init__(
            f"{rows_failed} of {rows_read} input rows failed "
            f"({rows_failed / max(rows_read, 1):.2%}), "
            + ("no row is left to write" if rows_failed >= rows_read else
               f"more than --max-error-fraction {max_error_fraction:g} allows")
            + f"; no shards were written. See the rows and reasons in {errors_dir}")

    def __reduce__(self):
        return type(self), (self.rows_failed, self.rows_read, self.max_error_fraction,
                            self.errors_dir)

    def moved_to(self, errors_dir: str) -> TooManyErrors:
        """The same verdict, its errors now in ``errors_dir``."""
        return TooManyErrors(self.rows_failed, self.rows_read, self.max_error_fraction,
                             errors_dir)

    @classmethod
    def found_in(cls, errors_dir: str) -> TooManyErrors | None:
        """The verdict a failed job left in ``errors_dir``, if the error budget failed it."""
        path = posixpath.join(errors_dir, BUDGET_FILE)
        if not is_remote(path) and not os.path.exists(path):
            return None
        try:
            d = json.loads(read_file(path))
        except (OSError, ValueError):
            return None
        return cls(d["rows_failed"], d["rows_read"], d["max_error_fraction"], errors_dir)


def check_error_budget(num_read: int, num_errors: int, max_error_fraction: float,
                       errors_dir: str) -> None:
    """Raise (and record beside the errors) :class:`TooManyErrors` when more than
    ``max_error_fraction`` of ``num_read`` rows failed, or when every row failed (whatever the
    fraction allows: an input with no good row never replaces an output).

    >>> check_error_budget(1000, 1000, 1.0, "out/errors")  # doctest: +SKIP
    TooManyErrors: 1000 of 1000 input rows failed (100.00%), ...
    """
    if num_errors and (num_errors >= num_read or num_errors / num_read > max_error_fraction):
        err = TooManyErrors(num_errors, num_read, max_error_fraction, errors_dir)
        write_file(posixpath.join(errors_dir, BUDGET_FILE), json.dumps(
            {"rows_failed": num_errors, "rows_read": num_read,
             "max_error_fraction": max_error_fraction}).encode())
        raise err


def _gate(_, num_read, num_errors, _files, max_error_fraction, errors_dir):
    check_error_budget(num_read, num_errors, max_error_fraction, errors_dir)
    return True


class DeadLetters(beam.PTransform):
    """Error dicts → ``output/errors/errors-SSSSS-of-NNNNN.jsonl``; returns the gate singleton
    that is ``True`` once the errors are written and the error budget holds (else the job fails
    with :class:`TooManyErrors`), and the number of failed rows."""

    def __init__(self, output: str, num_read, max_error_fraction: float = 0.01) -> None:
        super().__init__()
        self.output, self.num_read = output, num_read
        self.max_error_fraction = max_error_fraction

    def expand(self, errors):
        errors_dir = posixpath.join(self.output, ERRORS_DIR)
        files = (
            errors
            | "ToJson" >> beam.Map(lambda e: json.dumps(e, sort_keys=True))
            | "WriteErrors" >> beam.io.WriteToText(
                posixpath.join(errors_dir, "errors"), file_name_suffix=".jsonl", num_shards=1,
                # Beam's S3 writer fails on an empty object (a multipart upload of no parts)
                skip_if_empty=self.output.startswith("s3://"))
        )
        # one error per failed row (each lists every failing column)
        count = errors | "CountFailedRows" >> beam.combiners.Count.Globally()
        gate = (
            errors.pipeline
            | "GateSeed" >> beam.Create([None])
            | "ErrorBudget" >> beam.Map(
                _gate, pvalue.AsSingleton(self.num_read), pvalue.AsSingleton(count),
                pvalue.AsList(files), self.max_error_fraction, errors_dir)
        )
        return {"gate": gate, "count": count}


# ---------------------------------------------------------------------------------------------
# Everything


class Preprocess(beam.PTransform):
    """The whole job as one composite: raw files → ``output`` with schema, shards, stats, errors.

    The input is read twice, a file per worker at a time: once to analyze (and for the
    statistics and read errors), once to transform; the transform pass spills sorted runs that
    the shard writers merge. So memory does not grow with the number of rows.

    ``absent_ok``: declared inputs that may be missing from a CSV header or Parquet schema
    (otherwise such a file fails the job before it starts). ``non_finite``: ``"error"`` (a row
    with an infinite or out-of-float32-range value goes to errors) or ``"missing"``.

    >>> with beam.Pipeline() as p:                                       # doctest: +SKIP
    ...     p | Preprocess("features.py", "data/*.csv", "out/")
    """

    def __init__(self, features, input: str | Sequence[str], output: str, *,
                 fmt: str | None = None, eval_fraction: float = 0.1, split_key: str | None = None,
                 num_shards: int | None = None, shard_size: int | str = DEFAULT_SHARD_SIZE,
                 compression: str | None = None, max_error_fraction: float = 0.01,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, absent_ok: Sequence[str] = (),
                 non_finite: str = "error", check_inputs: bool = True) -> None:
        super().__init__()
        from shardforge.features.coerce import NON_FINITE

        if not 0.0 <= eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
        if non_finite not in NON_FINITE:
            raise ValueError(f"non_finite={non_finite!r}; expected one of {NON_FINITE}")
        self.fs = _as_ref(features)
        self.input, self.output, self.fmt = input, output.rstrip("/"), fmt
        self.eval_fraction, self.split_key = eval_fraction, split_key
        self.num_shards, self.shard_size, self.compression = num_shards, shard_size, compression
        self.max_error_fraction, self.chunk_rows = max_error_fraction, chunk_rows
        self.non_finite = non_finite
        if split_key is not None and split_key not in self.fs.get().input_spec():
            raise ValueError(f"split key {split_key!r} is not an input of the feature set")
        if check_inputs:
            check_input_columns(self.input, self.fs.get(), fmt, absent_ok)

    def expand(self, pbegin):
        paths = pbegin | "MatchFiles" >> MatchFiles(self.input, self.fmt)
        read = paths | "ReadRaw" >> ReadRaw(self.fs, self.fmt, self.chunk_rows, self.non_finite)
        rows = read["rows"]
        state = rows | "Analyze" >> Analyze(self.fs, self.output)
        spill_dir = posixpath.join(self.output, ".tmp-runs")
        transformed = paths | "Transform" >> Transform(
            self.fs, state, spill_dir, self.eval_fraction, self.split_key, self.fmt,
            self.chunk_rows, self.non_finite)
        errors = (read["errors"], transformed["errors"]) | "AllErrors" >> beam.Flatten()
        dead = errors | "DeadLetters" >> DeadLetters(
            self.output, read["num_read"], self.max_error_fraction)
        splits = SPLITS if self.eval_fraction > 0 else SPLITS[:1]
        written = transformed["runs"] | "WriteShards" >> WriteShards(
            self.output, splits, self.num_shards, self.shard_size, self.compression,
            ready=dead["gate"], spill_dir=spill_dir)
        # Statistics accumulated by the transform pass from the batches it transformed: the
        # state is at hand there, and no row is transformed (or an image decoded) twice.
        transformed["stats"] | "Stats" >> stats.ComputeStats(
            self.output, written["sizes"], read["num_read"], dead["count"], state=state)
        return written["paths"]
