"""What every reader shares: the :class:`Reader` protocol, the :class:`Split` a worker reads, the
:class:`RawChunk`\\ s and :class:`ReadError`\\ s it yields, missing-value masks, and the byte-level
helpers of the line-based readers (opening any Beam filesystem path, cutting a file at row ends).

A reader is plain Python over one path (``gs://`` and other Beam filesystems included), so it runs
the same inside a Beam worker and in a test. It yields chunks and errors in file order. A chunk
carries its source as (file, first line / row / record, count); a row's own ``file:line`` is built
only when that row goes to the errors output.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

COMPRESSED = (".gz", ".bz2")
DEFAULT_CHUNK_ROWS = 32768
# Bytes read per refill of a text reader; a block holds at least one whole row.
READ_BYTES = 4 << 20
# A row (CSV, JSON line) larger than this goes to errors instead of into memory and a record.
MAX_ROW_BYTES = 16 << 20
# Bytes of a bad row kept in its error.
_EXCERPT = 200
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Split:
    """A part of a file that one worker reads: bytes ``[start, end)`` of a CSV or JSONL file
    starting at line ``first`` (``start=0``: the whole file from its start), or Parquet row
    groups ``[start, end)`` whose first row is ``first``. ``Split(path)`` is the whole file."""

    path: str
    start: int = 0
    end: int | None = None
    first: int = 0


@dataclass
class RawChunk:
    """Raw values of ``count`` consecutive records of ``source``.

    ``columns[name]`` is an Arrow array or a list (``None`` is missing); record ``i`` sits at
    ``first + i`` (a line, a Parquet row or a record index), or at ``positions[i]`` when records
    are not consecutive (quoted newlines, skipped lines). ``kind`` says how :meth:`row_id` names
    it: ``"line"`` → ``file:line``, ``"row"`` → ``file:row N``, ``"offset"`` → ``file@offset``.
    """

    source: str
    first: int
    count: int
    columns: dict
    positions: np.ndarray | None = None
    kind: str = "line"

    def position(self, i: int) -> int:
        return int(self.positions[i]) if self.positions is not None else self.first + i

    def row_id(self, i: int) -> str:
        p = self.position(i)
        if self.kind == "offset":
            return f"{self.source}@{p}"
        if self.kind == "row":
            return f"{self.source}:row {p}"
        return f"{self.source}:{p}"


@dataclass
class ReadError:
    """A record (or a whole file, ``rows`` of unknown size counting as one) that could not be
    read at all: bad JSON, wrong CSV field count, corrupt frame, truncated Parquet. Its
    :meth:`to_json` is the dead-letter record of the errors output, for every stage."""

    source: str
    reason: str
    value: str = ""
    feature: str | None = None
    stage: str = field(default="read")

    def to_json(self) -> dict:
        return {
            "source": self.source, "stage": self.stage, "feature": self.feature,
            "reason": self.reason, "value": self.value,
        }


def _value_text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return (value if isinstance(value, str) else repr(value))[:_EXCERPT]


def row_error_records(errors: Sequence, stage: str, row_id: Callable[[int], str]
                      ) -> Iterator[dict]:
    """One JSON-able dead letter per failed row from features ``RowError``\\ s (several per row
    when several columns fail), naming every failing column; ``row_id(row)``: the row's source.

    >>> from shardforge.features.column import RowError
    >>> [e["feature"] for e in row_error_records(
    ...     [RowError(3, "x", "a", "bad x"), RowError(3, "c", "", "bad c")], "parse", str)]
    ['x, c']
    """
    by_row: dict = {}
    for e in errors:
        by_row.setdefault(e.row, []).append(e)
    for row, errs in by_row.items():
        if len(errs) == 1:
            feature, reason, value = errs[0].feature, errs[0].reason, _value_text(errs[0].value)
        else:
            feature = ", ".join(e.feature for e in errs)
            reason = "; ".join(f"{e.feature}: {e.reason}" for e in errs)
            value = "; ".join(f"{e.feature}={_value_text(e.value)}" for e in errs)
        yield ReadError(row_id(row), reason, value, feature, stage).to_json()


class MissingColumnsError(ValueError):
    """Declared inputs that an input file's header or schema lacks (raised before the job)."""


Inputs = Mapping[str, object] | Sequence[str]


class Reader(Protocol):
    """One input format. Register an instance in ``readers.READERS`` to add a format.

    ``read``'s ``inputs`` are the input names, or the input spec (``FeatureSet.input_spec()``),
    which a reader may use to type its values; a declared input a file lacks is all missing.
    """

    name: str  # the ``--format`` value
    suffixes: tuple[str, ...]  # lowercase file suffixes (``.csv``) inferred as this format

    def inputs(self, spec: dict) -> dict:
        """The declared inputs this format fills (text files offer only ``text`` and ``path``;
        the others are left to their defaults)."""

    def columns(self, path: str) -> list[str] | None:
        """The columns ``path`` declares up front (a CSV header, a Parquet schema), checked
        against the declared inputs before the job; ``None`` where records name their own."""

    def split(self, path: str, target: int) -> list[Split]:
        """``path`` cut into :class:`Split`\\ s of about ``target`` bytes at record boundaries
        (or ``[Split(path)]``), so that one big file keeps every worker busy."""

    def read(self, split: Split, inputs: Inputs, chunk_rows: int
             ) -> Iterator[RawChunk | ReadError]:
        """Chunks of at most ``chunk_rows`` records of ``split`` and the records that could not
        be read, in file order."""


@contextlib.contextmanager
def open_path(path: str):
    """A binary, io-compatible reader of any Beam filesystem path, decompressing by suffix."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        lower = path.lower()
        if lower.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw) as f:
                yield f
        elif lower.endswith(".bz2"):
            with bz2.BZ2File(raw) as f:
                yield f
        else:
            yield raw
    finally:
        raw.close()


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSED)


def excerpt(data: bytes) -> str:
    return data[:_EXCERPT].decode("utf-8", "replace")


def mb(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def refill(f, pending: bytes) -> tuple[bytes, bool]:
    """``pending`` plus the next block of ``f``, and whether ``f`` is at its end."""
    data = f.read(READ_BYTES)
    return pending + data, not data


def skip_line(f) -> bytes | None:
    """Read past the next newline; the bytes after it, or ``None`` at the end of the file."""
    while True:
        data = f.read(READ_BYTES)
        if not data:
            return None
        cut = data.find(b"\n")
        if cut >= 0:
            return data[cut + 1:]


def irregular(pos: np.ndarray) -> np.ndarray | None:
    """``pos`` when the records it places are not consecutive lines, else ``None``."""
    return None if pos[-1] - pos[0] == len(pos) - 1 else np.asarray(pos).copy()


class Limited:
    """The bytes ``[start, end)`` of an open file (``end=None``: to its end)."""

    def __init__(self, f, start: int, end: int | None) -> None:
        if start:
            f.seek(start)
        self.f, self.left = f, None if end is None else end - start

    def read(self, n: int) -> bytes:
        if self.left is None:
            return self.f.read(n)
        data = self.f.read(min(n, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data


RowEnds = Callable[[bytes], tuple[np.ndarray, np.ndarray]]


def split_at_row_ends(path: str, target: int, row_ends: RowEnds, first: int) -> list[Split]:
    """Cut an uncompressed line-based file into splits of about ``target`` bytes by a
    sequential scan. ``row_ends(block)`` gives the end offset of each whole row in ``block`` and
    the newlines from the block's start through it; the first split starts at line ``first``."""
    if is_compressed(path):
        return [Split(path)]
    splits: list[Split] = []
    start = 0
    pos, line = 0, 1  # file offset and line of pending[0]
    pending = b""
    with open_path(path) as f:
        while True:
            data = f.read(READ_BYTES)
            pending += data
            if pos == 0 and pending.startswith(BOM):
                pending, pos = pending[len(BOM):], len(BOM)
            ends, lines = row_ends(pending)
            if not len(ends):
                if not data or len(pending) > MAX_ROW_BYTES:
                    break  # the end, or a row the reader reports: the rest is one split
                continue
            absolute = ends + pos
            while True:  # cut at the first row end at or past each target
                k = int(np.searchsorted(absolute, start + target))
                if k >= len(absolute):
                    break
                cut = int(absolute[k])
                splits.append(Split(path, start, cut, first))
                start, first = cut, line + int(lines[k])
            pos, line = pos + int(ends[-1]), line + int(lines[-1])
            pending = pending[int(ends[-1]):]
            if not data:
                break
    splits.append(Split(path, start, None, first))
    return splits


def missing_mask(values, n: int) -> np.ndarray:
    """Which of ``n`` raw values are missing: ``None``/null, empty string or bytes, empty list.

    >>> missing_mask(["1", "", None, [], [2]], 5).tolist()
    [False, True, True, True, False]
    """
    from shardforge.records.spec import Ragged

    if values is None:
        return np.ones(n, dtype=bool)
    if isinstance(values, Ragged):
        return values.row_lengths() == 0
    if type(values).__module__.startswith("pyarrow"):
        import pyarrow as pa
        import pyarrow.compute as pc

        null = values.is_null().to_numpy(zero_copy_only=False)
        t = values.type
        if pa.types.is_binary(t) or pa.types.is_string(t) or pa.types.is_large_binary(
                t) or pa.types.is_large_string(t):
            return null | (pc.binary_length(values).fill_null(0).to_numpy() == 0)
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return null | (pc.list_value_length(values).fill_null(0).to_numpy() == 0)
        return null
    return np.fromiter((v is None or (hasattr(v, "__len__") and len(v) == 0) for v in values),
                       dtype=bool, count=n)
