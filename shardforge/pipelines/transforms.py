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

from shardforge.pipelines import progress, stats
from shardforge.pipelines.readers import DEFAULT_CHUNK_ROWS, Split, reader_for
from shardforge.pipelines.readers.base import error_record
from shardforge.pipelines.readers.typed import TypedChunk, check_input_columns, typed_chunks
from shardforge.records.spec import Batch, Ragged, batch_size

ERRORS = "errors"
NUM_READ = "num_read"
ROWS = "rows"
NAMESPACE = "shardforge"
DEFAULT_SHARD_SIZE = 128 << 20
# Encoded bytes a transform worker buffers before it sorts them and spills a run to disk.
DEFAULT_RUN_BYTES = 32 << 20


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
    """A typed input batch and, per input column, how many of its rows had no value."""

    batch: Batch
    missing: dict[str, int]


def _write_bytes(path: str, data) -> None:
    """Write a whole file (``bytes``, or a sequence of buffers written one after the other) to
    any Beam filesystem; local files are renamed into place."""
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    if "://" not in path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
        os.replace(tmp, path)
        return
    with FileSystems.create(path) as f:
        for part in parts:
            f.write(part)


# ---------------------------------------------------------------------------------------------
# ReadRaw


class _ReadFn(beam.DoFn):
    """One split of a file → ``Rows`` (+ errors and rows read): the analyze pass."""

    def __init__(self, fs: FeatureSetRef, fmt: str | None, chunk_rows: int,
                 non_finite: str) -> None:
        self.fs, self.fmt, self.chunk_rows, self.non_finite = fs, fmt, chunk_rows, non_finite
        self.rows_read = Metrics.counter(NAMESPACE, "rows_read")

    def process(self, split: Split):
        read = 0
        for item in typed_chunks(self.fs.get(), split, self.fmt, self.chunk_rows,
                                 self.non_finite):
            if isinstance(item, TypedChunk):
                read += item.chunk.count
                self.rows_read.inc(item.chunk.count)
                progress.add("rows_read", item.chunk.count)
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


_SHARD_SALT = np.uint64(0xD1B54A32D192ED03)


def shard_keys(row_hash: np.ndarray) -> np.ndarray:
    """The key that places a record in its split's shards (by range) and orders it there: a
    remix of its row hash, independent of the bits that chose the split."""
    return _mix(row_hash ^ _SHARD_SALT)


class _TransformFn(beam.DoFn):
    """The transform pass: read and coerce a file again, ``fs.transform`` with the analyzed
    state, encode, split, and spill sorted runs (:class:`RunSpiller`). Rows the analyze pass
    already reported (read and parse errors) are dropped silently here."""

    def __init__(self, fs: FeatureSetRef, fmt: str | None, chunk_rows: int, non_finite: str,
                 eval_fraction: float, split_key: str | None, spill_dir: str,
                 run_bytes: int) -> None:
        self.fs, self.fmt, self.chunk_rows, self.non_finite = fs, fmt, chunk_rows, non_finite
        self.eval_fraction, self.split_key = eval_fraction, split_key
        self.spill_dir, self.run_bytes = spill_dir, run_bytes

    def start_bundle(self):
        self.spiller = RunSpiller(self.spill_dir, self.run_bytes)

    def process(self, split: Split, state):
        from shardforge.records import RecordBlock, encode_batch

        fs = self.fs.get()
        for item in typed_chunks(fs, split, self.fmt, self.chunk_rows, self.non_finite):
            if not isinstance(item, TypedChunk):
                continue
            batch = item.batch
            # Split and shard on the input row, not the serialized record: a row's place must
            # not depend on the encoder's byte layout nor on the learned state's last bit.
            # With a split key the key alone places a row (split and shard).
            row_hash = row_hashes(batch, [self.split_key] if self.split_key else list(batch))
            is_eval = split_of(row_hash, self.eval_fraction)
            yield pvalue.TaggedOutput(ROWS, Rows(batch, item.missing))
            out, errors = fs.transform(batch, state, errors="collect")
            progress.add("errors", len(errors))
            for e in errors:
                yield pvalue.TaggedOutput(ERRORS, error_record(e, "transform", item.row_id(e.row)))
            if errors:
                kept = np.ones(len(row_hash), dtype=bool)
                kept[[e.row for e in errors]] = False
                is_eval, row_hash = is_eval[kept], row_hash[kept]
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


class Transform(beam.PTransform):
    """Splits (from :class:`MatchFiles`) + state → ``{"runs": run descriptors, "errors": dict,
    "rows": Rows}`` (``rows``: the typed input batches again, for statistics that need the state:
    consumed in the same stage, they are never held).

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
        ).with_outputs(ERRORS, ROWS, main="runs")
        return {"runs": out.runs, "errors": out[ERRORS], "rows": out[ROWS]}


# ---------------------------------------------------------------------------------------------
# Sorted runs: spill and merge


def parse_size(text: str | int) -> int:
    """``"128MB"`` → bytes (KB/MB/GB are powers of 1024)."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


_RUN_MAGIC = b"SFRUN001"


@dataclass
class _Spans:
    """Records as one contiguous buffer with their keys: the unit of spilling and merging."""

    keys: np.ndarray
    buf: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[_Spans]) -> _Spans:
        bases = np.cumsum([0] + [len(p.buf) for p in parts[:-1]])
        return cls(np.concatenate([p.keys for p in parts]),
                   np.concatenate([p.buf for p in parts]),
                   np.concatenate([p.offsets + b for p, b in zip(parts, bases)]),
                   np.concatenate([p.lengths for p in parts]))

    def take(self, idx: np.ndarray) -> _Spans:
        """The records ``idx``, compacted into a buffer of their own."""
        from shardforge.pipelines._kernels import gather

        lengths = self.lengths[idx]
        offsets = np.zeros(len(idx), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        return _Spans(self.keys[idx], gather(self.buf, self.offsets[idx], lengths), offsets,
                      lengths)

    def order(self) -> np.ndarray:
        """Indices by key, ties (rows sharing a split key, duplicates) by bytes, so the order
        does not depend on which bundle delivered a record first."""
        order = np.argsort(self.keys, kind="stable")
        ties = np.flatnonzero(np.diff(self.keys[order]) == 0)
        if len(ties):
            # runs of equal keys: [start, stop) in sorted positions
            starts = ties[np.r_[True, np.diff(ties) > 1]]
            stops = ties[np.r_[np.diff(ties) > 1, True]] + 2
            for a, b in zip(starts, stops):
                order[a:b] = sorted(order[a:b].tolist(), key=self.record)
        return order

    def record(self, i: int) -> bytes:
        o = int(self.offsets[i])
        return self.buf[o:o + int(self.lengths[i])].tobytes()


class RunSpiller:
    """Collects ``(split, keys, RecordBlock)`` and writes them as runs sorted by (key, bytes)
    once ``run_bytes`` are buffered; returns descriptors ``{"split", "path", "records",
    "bytes"}``.

    A run file: magic, record count ``n``, ``n`` uint64 keys, ``n + 1`` int64 offsets, the
    records' bytes. Keys and offsets let a shard writer find its key range by binary search
    and read only that part.
    """

    def __init__(self, spill_dir: str, run_bytes: int = DEFAULT_RUN_BYTES) -> None:
        self.spill_dir, self.run_bytes = spill_dir, run_bytes
        self.buffers: dict[str, list[_Spans]] = {}
        self.size = 0

    def add(self, split: str, keys: np.ndarray, block):
        """Buffer ``block``'s records under ``keys``; yields the runs this spilled."""
        from shardforge.pipelines._kernels import gather

        buf = gather(block.buf, block.offsets, block.lengths)
        lengths = np.asarray(block.lengths, dtype=np.int64)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        self.buffers.setdefault(split, []).append(_Spans(keys, buf, offsets, lengths))
        self.size += len(buf)
        if self.size >= self.run_bytes:
            yield from self.flush()

    def flush(self) -> list[dict]:
        import uuid

        runs = []
        buffers, self.buffers, self.size = self.buffers, {}, 0
        for split in sorted(buffers):
            spans = _Spans.concat(buffers.pop(split))
            spans = spans.take(spans.order())
            bounds = np.concatenate(([0], np.cumsum(spans.lengths))).astype(np.int64)
            path = posixpath.join(self.spill_dir, f"{split}-{uuid.uuid4().hex}.run")
            _write_bytes(path, [_RUN_MAGIC, np.int64(len(spans.keys)).tobytes(), spans.keys,
                                bounds, spans.buf])
            runs.append({"split": split, "path": path, "records": len(spans.keys),
                         "bytes": int(bounds[-1])})
        return runs


class _Run:
    """A run file opened for range reads: keys and offsets memory-mapped when local (only the
    pages a shard's range touches are read), records read a window at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        if "://" in path:
            with FileSystems.open(path) as f:
                whole = np.frombuffer(f.read(), dtype=np.uint8)
            self._file = None
        else:
            whole = np.memmap(path, dtype=np.uint8, mode="r")
            self._file = open(path, "rb")
        n = int(whole[8:16].view(np.int64)[0])
        self.keys = whole[16:16 + 8 * n].view(np.uint64)
        self.offsets = whole[16 + 8 * n:16 + 16 * n + 8].view(np.int64)
        self.data_start = 16 + 16 * n + 8
        self._whole = whole if self._file is None else None

    def range_of(self, lo: int, hi: int | None) -> tuple[int, int]:
        a = int(np.searchsorted(self.keys, np.uint64(lo), side="left"))
        b = len(self.keys) if hi is None else int(
            np.searchsorted(self.keys, np.uint64(hi), side="left"))
        return a, b

    def spans(self, a: int, b: int) -> _Spans:
        bounds = np.array(self.offsets[a:b + 1], dtype=np.int64)
        start, stop = self.data_start + int(bounds[0]), self.data_start + int(bounds[-1])
        if self._file is None:
            buf = self._whole[start:stop]
        else:
            self._file.seek(start)
            buf = np.frombuffer(self._file.read(stop - start), dtype=np.uint8)
        return _Spans(np.array(self.keys[a:b]), buf, bounds[:-1] - bounds[0], np.diff(bounds))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# Bytes of records a shard writer holds from all runs at once (a window from each), so its memory
# does not grow with the number of runs (that is, with the input).
MERGE_BYTES = 16 << 20


def merge_runs(runs: Sequence[_Run], lo: int, hi: int | None):
    """``RecordBlock``\\ s of the records with keys in ``[lo, hi)`` of sorted runs, in
    (key, bytes) order, holding about ``MERGE_BYTES`` of records from all runs at a time."""
    from shardforge.records import RecordBlock

    cursors = []
    records = size = 0
    for run in runs:
        a, b = run.range_of(lo, hi)
        if b > a:
            cursors.append([run, a, b])
            records += b - a
            size += int(run.offsets[b]) - int(run.offsets[a])
    if not cursors:
        return
    per_record = max(1, size // records)
    window = max(16, MERGE_BYTES // per_record // len(cursors))
    # per run: [run, next record to load, end, loaded but not yet written]
    state = [[run, a, b, None] for run, a, b in cursors]

    def load(st) -> None:
        run, a, b, held = st
        stop = min(b, a + window)
        new = run.spans(a, stop)
        st[1], st[3] = stop, new if held is None else _Spans.concat([held, new])

    while True:
        for st in state:
            if (st[3] is None or not len(st[3].keys)) and st[1] < st[2]:
                load(st)
        live = [st for st in state if st[3] is not None and len(st[3].keys)]
        if not live:
            return
        # a run with more on disk is safe only below the last key it has loaded
        tails = [int(st[3].keys[-1]) for st in live if st[1] < st[2]]
        limit = min(tails) if tails else None
        parts = []
        for st in live:
            held = st[3]
            n = len(held.keys) if limit is None else int(
                np.searchsorted(held.keys, np.uint64(limit), side="left"))
            if n:
                parts.append(held.take(np.arange(n)))
                st[3] = held.take(np.arange(n, len(held.keys)))
        if parts:
            spans = _Spans.concat(parts)
            order = spans.order()
            yield RecordBlock(spans.buf, spans.offsets[order], spans.lengths[order])
        else:  # every loaded key equals the limit (a constant split key): load further
            for st in live:
                if st[1] < st[2] and int(st[3].keys[-1]) == limit:
                    load(st)


def shard_bounds(i: int, n: int) -> tuple[int, int | None]:
    """Keys ``[lo, hi)`` of shard ``i`` of ``n`` (``hi`` is ``None`` for the last)."""
    return -(-(i << 64) // n), None if i + 1 == n else -(-((i + 1) << 64) // n)


# ---------------------------------------------------------------------------------------------
# WriteShards


def _shard_name(i: int, n: int, compression: str | None) -> str:
    return f"part-{i:05d}-of-{n:05d}.tfrecord" + (".gz" if compression == "gzip" else "")


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
    if num_shards:
        return num_shards
    return max(1, -(-sizes.get(split, [0, 0])[1] // shard_size))


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

    def process(self, shard, runs):
        from shardforge.records import TFRecordWriter, index_path

        split, i, n = shard
        opened = [_Run(r["path"]) for r in runs if r["split"] == split]
        lo, hi = shard_bounds(i, n)
        name = _shard_name(i, n, self.compression)
        dest = posixpath.join(self.output, split, name)
        remote = "://" in dest
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
                    with open(src, "rb") as f:
                        _write_bytes(dst, f.read())
        Metrics.counter(NAMESPACE, f"records_{split}").inc(count)
        yield dest


def _remove_runs(_, runs, spill_dir: str) -> None:
    paths = [r["path"] for r in runs]
    if paths:
        FileSystems.delete(paths)
    if "://" not in spill_dir and os.path.isdir(spill_dir):
        with_leftovers = os.listdir(spill_dir)
        if not with_leftovers:
            os.rmdir(spill_dir)


class WriteShards(beam.PTransform):
    """Sorted runs (from :class:`Transform`) → sharded TFRecord files and their index files
    (``records.index_path``: where no shard glob matches them).

    ``num_shards`` fixes the count per split; otherwise shards are about ``shard_size`` bytes.
    A record's shard is the range its key falls in, so each shard writer merges only its part
    of each run. ``ready`` (optional singleton) must exist before anything is written: the
    error-budget gate. The runs are deleted once every shard is written.
    Returns ``{"paths": written shard paths, "sizes": {split: [records, bytes]}}``.
    """

    def __init__(self, output: str, splits: Sequence[str] = ("train", "eval"),
                 num_shards: int | None = None, shard_size: int | str = DEFAULT_SHARD_SIZE,
                 compression: str | None = None, ready=None, spill_dir: str | None = None) -> None:
        super().__init__()
        self.output, self.splits = output, list(splits)
        self.num_shards, self.shard_size = num_shards, parse_size(shard_size)
        self.compression = None if compression in (None, "none") else compression
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
        splits = ("train", "eval") if self.eval_fraction > 0 else ("train",)
        written = transformed["runs"] | "WriteShards" >> WriteShards(
            self.output, splits, self.num_shards, self.shard_size, self.compression,
            ready=dead["gate"], spill_dir=spill_dir)
        # Statistics from the transform pass, where the state is at hand: a consumer of the
        # analyze pass's rows that needs the state would hold every row until it is learned.
        transformed["rows"] | "Stats" >> stats.ComputeStats(
            self.output, written["sizes"], read["num_read"], dead["count"], features=self.fs,
            state=state, eval_fraction=self.eval_fraction, split_key=self.split_key)
        return written["paths"]
