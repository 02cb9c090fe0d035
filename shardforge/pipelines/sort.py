"""The external sort of the transform pass: records spilled as sorted runs, merged by key range.

A transform worker buffers encoded records with their shard keys (``records.layout.shard_keys``)
and, every ``run_bytes``, writes them as one run sorted by (key, bytes) (:class:`RunSpiller`). A
shard writer then merges, out of every run of its split, only the records in its key range
(:func:`merge_runs`), holding a window of each run at a time: no step holds all records, and
records land in the same order whatever bundle delivered them. Pure numpy; runs are local files
or URLs (``pipelines.files``).
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shardforge.pipelines._kernels import gather
from shardforge.pipelines.files import is_remote, read_file, write_file
from shardforge.records.framing import RecordBlock

# Encoded bytes a transform worker buffers before it sorts them and spills a run to disk.
DEFAULT_RUN_BYTES = 32 << 20

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
        buf = gather(block.buf, block.offsets, block.lengths)
        lengths = np.asarray(block.lengths, dtype=np.int64)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        self.buffers.setdefault(split, []).append(_Spans(keys, buf, offsets, lengths))
        self.size += len(buf)
        if self.size >= self.run_bytes:
            yield from self.flush()

    def flush(self) -> list[dict]:
        runs = []
        buffers, self.buffers, self.size = self.buffers, {}, 0
        for split in sorted(buffers):
            spans = _Spans.concat(buffers.pop(split))
            spans = spans.take(spans.order())
            bounds = np.concatenate(([0], np.cumsum(spans.lengths))).astype(np.int64)
            path = posixpath.join(self.spill_dir, f"{split}-{uuid.uuid4().hex}.run")
            write_file(path, [_RUN_MAGIC, np.int64(len(spans.keys)).tobytes(), spans.keys,
                              bounds, spans.buf])
            runs.append({"split": split, "path": path, "records": len(spans.keys),
                         "bytes": int(bounds[-1])})
        return runs


class Run:
    """A run file opened for range reads: keys and offsets memory-mapped when local (only the
    pages a shard's range touches are read), records read a window at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        if is_remote(path):
            whole = np.frombuffer(read_file(path), dtype=np.uint8)
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


def merge_runs(runs: Sequence[Run], lo: int, hi: int | None):
    """``RecordBlock``\\ s of the records with keys in ``[lo, hi)`` of sorted runs, in
    (key, bytes) order, holding about ``MERGE_BYTES`` of records from all runs at a time."""
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


