"""The Beam job as named composites: ReadRaw → Analyze → Transform → WriteShards, plus dead
letters and stats, and ``Preprocess``, which wires them together for a user's own pipeline.

DoFns stay thin: parsing, analyzing and transforming are the feature set's pure functions from
``shardforge.features``; framing and index files are ``shardforge.records``. Elements between
steps are batches (``Rows``: row ids + a columnar batch), never one Python dict per row.
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

from shardforge.pipelines import sources, stats
from shardforge.records.spec import Batch, Ragged, batch_size

ERRORS = "errors"
NUM_READ = "num_read"
NAMESPACE = "shardforge"
DEFAULT_SHARD_SIZE = 128 << 20


# ---------------------------------------------------------------------------------------------
# Carrying the feature set to workers


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
            import shardforge.features as sf

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, self.filename)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(self.source)
                self._fs = sf.load_feature_set(path)
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
    """A typed input batch with the source of each row and per-column missing counts."""

    ids: list[str]
    batch: Batch
    missing: dict[str, int]


def error_record(err, stage: str) -> dict:
    """A JSON-able dead letter from a features ``RowError``."""
    value = err.value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    text = value if isinstance(value, str) else repr(value)
    return {"source": str(err.row), "stage": stage, "feature": err.feature,
            "reason": err.reason, "value": text[:200]}


def _write_bytes(path: str, data: bytes) -> None:
    """Write a whole small file to any Beam filesystem; local files are renamed into place."""
    if "://" not in path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with FileSystems.create(path) as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# ReadRaw


class _ReadFileFn(beam.DoFn):
    def __init__(self, fmt: str | None, spec, chunk_rows: int) -> None:
        self.fmt, self.names, self.chunk_rows = fmt, list(spec), chunk_rows
        self.scalars = {n for n, s in spec.items() if getattr(s, "shape", None) == ()}
        self.rows_read = Metrics.counter(NAMESPACE, "rows_read")

    def process(self, path: str):
        fmt = self.fmt or sources.infer_format(path)
        for item in sources.read_file(path, fmt, self.names, self.chunk_rows, self.scalars):
            if isinstance(item, sources.ReadError):
                self.rows_read.inc()
                yield pvalue.TaggedOutput(NUM_READ, 1)
                yield pvalue.TaggedOutput(ERRORS, item.to_json())
            else:
                self.rows_read.inc(len(item.ids))
                yield pvalue.TaggedOutput(NUM_READ, len(item.ids))
                yield item


class _CoerceFn(beam.DoFn):
    """Raw values → typed input batch via ``fs.coerce``; rows it rejects become dead letters."""

    def __init__(self, fs: FeatureSetRef) -> None:
        self.fs = fs

    def process(self, chunk: sources.RawChunk):
        batch, errors = self.fs.get().coerce(chunk.columns, row_ids=chunk.ids)
        bad = {str(e.row) for e in errors}
        keep = np.array([i for i, r in enumerate(chunk.ids) if r not in bad], dtype=np.int64)
        for e in errors:
            yield pvalue.TaggedOutput(ERRORS, error_record(e, "parse"))
        if len(keep):
            yield Rows([chunk.ids[i] for i in keep], batch, sources.missing_counts(chunk, keep))


class ReadRaw(beam.PTransform):
    """Files matching ``patterns`` → ``{"rows": Rows, "errors": dict, "num_read": int}``.

    ``fmt`` is one of csv, jsonl, parquet, tfrecord, text (``None``: from each file's suffix).
    CSV and JSON values are typed by the feature set's input declarations (``fs.coerce``).
    """

    def __init__(self, patterns: str | Sequence[str], features, fmt: str | None = None,
                 chunk_rows: int = sources.DEFAULT_CHUNK_ROWS) -> None:
        super().__init__()
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.fs, self.fmt, self.chunk_rows = _as_ref(features), fmt, chunk_rows

    def expand(self, pbegin):
        spec = self.fs.get().input_spec()
        if self.fmt == "text":
            spec = {n: s for n, s in spec.items() if n in sources.TEXT_COLUMNS}
        read = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda m: m.path)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadFileFn(self.fmt, spec, self.chunk_rows))
            .with_outputs(ERRORS, NUM_READ, main="chunks")
        )
        parsed = (
            read.chunks
            | "SpreadChunks" >> beam.Reshuffle()
            # Small chunks (small files, one-document text files) join up to chunk_rows rows;
            # a full chunk passes alone.
            | "Batch" >> beam.BatchElements(
                min_batch_size=self.chunk_rows, max_batch_size=self.chunk_rows,
                element_size_fn=lambda chunk: len(chunk.ids))
            | "MergeChunks" >> beam.Map(sources.merge_chunks)
            | "Coerce" >> beam.ParDo(_CoerceFn(self.fs)).with_outputs(ERRORS, main="rows")
        )
        errors = (read[ERRORS], parsed[ERRORS]) | "ReadErrors" >> beam.Flatten()
        num_read = read[NUM_READ] | "CountRead" >> beam.CombineGlobally(sum)
        return {"rows": parsed.rows, "errors": errors, "num_read": num_read}


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
        return self.analyzer.merge(list(accs))

    def extract_output(self, acc):
        return self.analyzer.extract(acc)


class _WriteSchemaFn(beam.DoFn):
    def __init__(self, output: str) -> None:
        self.output = output

    def process(self, state):
        path = posixpath.join(self.output, "schema.pbtxt")
        with tempfile.TemporaryDirectory() as tmp:
            local = state.save(os.path.join(tmp, "schema.pbtxt"))
            with open(local, "rb") as f:
                _write_bytes(path, f.read())
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


def split_of(hashes: np.ndarray, eval_fraction: float) -> np.ndarray:
    """``True`` where a row goes to eval: the top 53 bits of its hash as a uniform in [0, 1)."""
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53) < eval_fraction


_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, vectorized (uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _value_hashes(values: np.ndarray) -> np.ndarray:
    from shardforge.features.hashing import fingerprint64

    values = np.asarray(values)
    if values.dtype == object:
        return fingerprint64(values)
    if values.dtype.kind == "f":
        return _mix(values.astype(np.float64).view(np.uint64))
    return _mix(values.astype(np.int64).view(np.uint64))


def _column_hashes(col, n: int) -> np.ndarray:
    if isinstance(col, Ragged):
        lengths = col.row_lengths().astype(np.uint64)
        position = np.arange(len(col.values), dtype=np.uint64) - np.repeat(
            col.row_splits[:-1], col.row_lengths()).astype(np.uint64)
        mixed = _mix(_value_hashes(col.values) ^ _mix(position + np.uint64(1)))
        sums = np.zeros(len(mixed) + 1, dtype=np.uint64)
        np.cumsum(mixed, dtype=np.uint64, out=sums[1:])
        return _mix((sums[col.row_splits[1:]] - sums[col.row_splits[:-1]]) ^ lengths)
    values = np.asarray(col).reshape(n, -1)
    h = np.zeros(n, dtype=np.uint64)
    for j in range(values.shape[1]):
        h = _mix(h ^ _value_hashes(values[:, j]) + np.uint64(j))
    return h


def row_hashes(batch: Batch, columns: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash per row of the typed input ``columns``, vectorized: the same on
    every run, runner and machine (FarmHash for strings, splitmix64 for numbers; no Python
    ``hash`` and nothing learned)."""
    n = batch_size(batch)
    h = np.full(n, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for name in sorted(columns):
        h = _mix(h ^ _column_hashes(batch[name], n))
    return h


class _TransformFn(beam.DoFn):
    """``fs.transform`` on one batch with the analyzed state, then encode and split."""

    def __init__(self, fs: FeatureSetRef, eval_fraction: float, split_key: str | None) -> None:
        self.fs, self.eval_fraction, self.split_key = fs, eval_fraction, split_key

    def process(self, rows: Rows, state):
        from shardforge.records import encode_batch

        # Split and shard on the input row, not the serialized record: a row's place must not
        # depend on the encoder's byte layout (the split once hashed the Example bytes, whose
        # feature-map order protobuf picked per process, so reruns split differently) nor move
        # when the learned state differs in the last bit between runs (float sums merge in any
        # order).
        # With a split key the key alone places a row (split and shard): a corpus keyed by its
        # text shards the same wherever its files lie, though their paths are input columns.
        row_hash = row_hashes(rows.batch, [self.split_key] if self.split_key else list(rows.batch))
        is_eval = split_of(row_hash, self.eval_fraction)
        out, errors = self.fs.get().transform(rows.batch, state, errors="collect",
                                              row_ids=rows.ids)
        for e in errors:
            yield pvalue.TaggedOutput(ERRORS, error_record(e, "transform"))
        if errors:
            bad = {str(e.row) for e in errors}
            kept = np.array([r not in bad for r in rows.ids], dtype=bool)
            is_eval, row_hash = is_eval[kept], row_hash[kept]
        records = encode_batch(out)
        if not records:
            return
        for split, mask in (("train", ~is_eval), ("eval", is_eval)):
            idx = np.flatnonzero(mask)
            if len(idx):
                yield split, [records[i] for i in idx], row_hash[idx]


class Transform(beam.PTransform):
    """``Rows`` + state → ``{"records": (split, [bytes], hashes), "errors": dict}``; ``hashes``
    are of the records' input rows, or of their ``split_key`` (they pick the split, the shard
    and the order in it).

    Rows arrive batched (the readers emit chunks of ``chunk_rows``: the equivalent of
    ``beam.BatchElements`` without a per-row step). A row goes to eval when the hash of its
    ``split_key`` input column (default: of all its input values) falls below
    ``eval_fraction``, so reruns split identically on any runner.
    """

    def __init__(self, features, state, eval_fraction: float = 0.1,
                 split_key: str | None = None) -> None:
        super().__init__()
        self.fs, self.state = _as_ref(features), state
        self.eval_fraction, self.split_key = eval_fraction, split_key

    def expand(self, rows):
        out = rows | "TransformBatches" >> beam.ParDo(
            _TransformFn(self.fs, self.eval_fraction, self.split_key),
            pvalue.AsSingleton(self.state),
        ).with_outputs(ERRORS, main="records")
        return {"records": out.records, "errors": out[ERRORS]}


# ---------------------------------------------------------------------------------------------
# WriteShards


def parse_size(text: str | int) -> int:
    """``"128MB"`` → bytes (KB/MB/GB are powers of 1024)."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


def _shard_name(i: int, n: int, compression: str | None) -> str:
    return f"part-{i:05d}-of-{n:05d}.tfrecord" + (".gz" if compression == "gzip" else "")


class _SplitSizes(beam.CombineFn):
    """``{split: [records, bytes]}`` over all record groups."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        split, records, _ = element
        c = acc.setdefault(split, [0, 0])
        c[0] += len(records)
        c[1] += sum(len(r) for r in records)
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
    if num_shards:
        return num_shards
    return max(1, -(-sizes.get(split, [0, 0])[1] // shard_size))


class _KeyByShardFn(beam.DoFn):
    def __init__(self, num_shards, shard_size) -> None:
        self.num_shards, self.shard_size = num_shards, shard_size

    def process(self, element, sizes, _ready):
        split, records, hashes = element
        n = _num_shards(sizes, split, self.num_shards, self.shard_size)
        shard = (hashes % np.uint64(n)).astype(np.int64)
        for s in np.unique(shard):
            idx = np.flatnonzero(shard == s)
            yield (split, int(s), n), (hashes[idx], [records[i] for i in idx])


class _AllShardsFn(beam.DoFn):
    """One empty group per shard, so every ``part-i-of-n`` exists even when no record hashes
    into it."""

    def __init__(self, splits, num_shards, shard_size) -> None:
        self.splits, self.num_shards, self.shard_size = splits, num_shards, shard_size

    def process(self, sizes, _ready):
        for split in self.splits:
            n = _num_shards(sizes, split, self.num_shards, self.shard_size)
            for i in range(n):
                yield (split, i, n), (np.zeros(0, dtype=np.uint64), [])


def _shard_order(hashes: np.ndarray, records: list[bytes]) -> np.ndarray:
    """Indices of ``records`` by hash, ties (rows sharing a split key, duplicates) by bytes, so
    the order does not depend on which bundle delivered a record first."""
    order = np.argsort(hashes, kind="stable")
    ties = np.flatnonzero(np.diff(hashes[order]) == 0)
    if len(ties):
        # runs of equal hashes: [start, stop) in sorted positions
        starts = ties[np.r_[True, np.diff(ties) > 1]]
        stops = ties[np.r_[np.diff(ties) > 1, True]] + 2
        for a, b in zip(starts, stops):
            order[a:b] = sorted(order[a:b], key=records.__getitem__)
    return order


class _WriteShardFn(beam.DoFn):
    """Write one shard (records in the order of their input rows' hashes, equal hashes by the
    records' bytes, so reruns write the same bytes) and its index.

    Both are written under a scratch directory and renamed into place (index first, so a visible
    shard always has its index); a retried bundle rewrites the same names with the same bytes.
    """

    def __init__(self, output: str, compression: str | None) -> None:
        self.output, self.compression = output, compression

    def process(self, element):
        from shardforge.records import TFRecordWriter

        (split, i, n), groups = element
        groups = list(groups)
        hashes = np.concatenate([h for h, _ in groups])
        records = [r for _, rs in groups for r in rs]
        order = _shard_order(hashes, records)
        name = _shard_name(i, n, self.compression)
        dest = posixpath.join(self.output, split, name)
        remote = "://" in dest
        if not remote:  # scratch beside the destination: the rename stays on one filesystem
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        scratch = None if remote else os.path.dirname(dest)
        with tempfile.TemporaryDirectory(dir=scratch, prefix=".tmp-") as tmp:
            local = os.path.join(tmp, name)
            index = local + ".idx"
            # The writer records gzip flush points in the index, so readers can seek into
            # compressed shards too.
            with TFRecordWriter(local, compression=self.compression, index=True,
                                index_path=index) as w:
                for k in order:
                    w.write(records[k])
            if not remote:
                os.replace(index, dest + ".idx")
                os.replace(local, dest)
            else:
                for src, dst in ((index, dest + ".idx"), (local, dest)):
                    with open(src, "rb") as f:
                        _write_bytes(dst, f.read())
        Metrics.counter(NAMESPACE, f"records_{split}").inc(len(records))
        yield dest


class WriteShards(beam.PTransform):
    """``(split, [bytes], hashes)`` → sharded TFRecord files + ``.idx`` per split.

    ``num_shards`` fixes the count per split; otherwise shards are about ``shard_size`` bytes.
    ``ready`` (optional singleton) must exist before anything is written: the error-budget gate.
    Returns ``{"paths": written shard paths, "sizes": {split: [records, bytes]}}``.
    """

    def __init__(self, output: str, splits: Sequence[str] = ("train", "eval"),
                 num_shards: int | None = None, shard_size: int | str = DEFAULT_SHARD_SIZE,
                 compression: str | None = None, ready=None) -> None:
        super().__init__()
        self.output, self.splits = output, list(splits)
        self.num_shards, self.shard_size = num_shards, parse_size(shard_size)
        self.compression = None if compression in (None, "none") else compression
        self.ready = ready

    def expand(self, records):
        sizes = records | "SplitSizes" >> beam.CombineGlobally(_SplitSizes())
        ready = self.ready
        if ready is None:
            ready = records.pipeline | "NoGate" >> beam.Create([True])
        side = (pvalue.AsSingleton(sizes), pvalue.AsSingleton(ready))
        keyed = records | "KeyByShard" >> beam.ParDo(
            _KeyByShardFn(self.num_shards, self.shard_size), *side)
        empty = sizes | "AllShards" >> beam.ParDo(
            _AllShardsFn(self.splits, self.num_shards, self.shard_size),
            pvalue.AsSingleton(ready))
        paths = (
            (keyed, empty)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShardFn(self.output, self.compression))
        )
        return {"paths": paths, "sizes": sizes}


# ---------------------------------------------------------------------------------------------
# Dead letters and the error budget


class TooManyErrors(RuntimeError):
    """More rows failed than ``max_error_fraction`` allows."""


def check_error_budget(num_read: int, num_errors: int, max_error_fraction: float,
                       errors_dir: str) -> None:
    if num_read and num_errors / num_read > max_error_fraction:
        raise TooManyErrors(
            f"{num_errors} of {num_read} input rows failed ({num_errors / num_read:.2%}), more "
            f"than --max-error-fraction {max_error_fraction:g} allows; no shards were written. "
            f"See the rows and reasons in {errors_dir}"
        )


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
        errors_dir = posixpath.join(self.output, "errors")
        files = (
            errors
            | "ToJson" >> beam.Map(lambda e: json.dumps(e, sort_keys=True))
            | "WriteErrors" >> beam.io.WriteToText(
                posixpath.join(errors_dir, "errors"), file_name_suffix=".jsonl", num_shards=1)
        )
        # a row can fail on several features: the budget counts rows, the file lists each
        count = (
            errors
            | "FailedRows" >> beam.Map(lambda e: e["source"])
            | "DistinctRows" >> beam.Distinct()
            | "CountFailedRows" >> beam.combiners.Count.Globally()
        )
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

    >>> with beam.Pipeline() as p:                                       # doctest: +SKIP
    ...     p | Preprocess("features.py", "data/*.csv", "out/")
    """

    def __init__(self, features, input: str | Sequence[str], output: str, *,
                 fmt: str | None = None, eval_fraction: float = 0.1, split_key: str | None = None,
                 num_shards: int | None = None, shard_size: int | str = DEFAULT_SHARD_SIZE,
                 compression: str | None = None, max_error_fraction: float = 0.01,
                 chunk_rows: int = sources.DEFAULT_CHUNK_ROWS) -> None:
        super().__init__()
        if not 0.0 <= eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
        self.fs = _as_ref(features)
        self.input, self.output, self.fmt = input, output.rstrip("/"), fmt
        self.eval_fraction, self.split_key = eval_fraction, split_key
        self.num_shards, self.shard_size, self.compression = num_shards, shard_size, compression
        self.max_error_fraction, self.chunk_rows = max_error_fraction, chunk_rows
        if split_key is not None and split_key not in self.fs.get().input_spec():
            raise ValueError(f"split key {split_key!r} is not an input of the feature set")

    def expand(self, pbegin):
        read = pbegin | "ReadRaw" >> ReadRaw(self.input, self.fs, self.fmt, self.chunk_rows)
        rows = read["rows"]
        state = rows | "Analyze" >> Analyze(self.fs, self.output)
        transformed = rows | "Transform" >> Transform(
            self.fs, state, self.eval_fraction, self.split_key)
        errors = (read["errors"], transformed["errors"]) | "AllErrors" >> beam.Flatten()
        dead = errors | "DeadLetters" >> DeadLetters(
            self.output, read["num_read"], self.max_error_fraction)
        splits = ("train", "eval") if self.eval_fraction > 0 else ("train",)
        written = transformed["records"] | "WriteShards" >> WriteShards(
            self.output, splits, self.num_shards, self.shard_size, self.compression,
            ready=dead["gate"])
        rows | "Stats" >> stats.ComputeStats(
            self.output, written["sizes"], read["num_read"], dead["count"], features=self.fs,
            state=state, eval_fraction=self.eval_fraction, split_key=self.split_key)
        return written["paths"]
