"""Readers for the raw formats: each turns one file into columnar chunks of raw values.

A reader is a plain generator over one path (``gs://`` and other Beam filesystems included), so it
runs the same inside a Beam worker and in a test. It yields :class:`RawChunk`\\ s (Arrow arrays,
or Python lists on the slow paths) and :class:`ReadError`\\ s, in file order. A chunk carries its
source as (file, first line / row / record, count); a row's own ``file:line`` is built only when
that row goes to the errors output.

What a reader does with a bad input (the error policy, see the README):

- CSV (pyarrow's parser over blocks cut at row ends by a compiled scan): a row with the wrong
  number of fields, a row larger than :data:`MAX_ROW_BYTES`, a quoted field that runs over
  lines which look like whole rows (a stray quote: every line it swallowed is reported), an
  unterminated quote: errors with the line. A UTF-8 BOM is skipped; fields stay bytes until
  coerced, so a non-UTF-8 byte fails only the value that holds it.
- JSONL (pyarrow's JSON reader, typed by the declared inputs): a block it rejects is split in
  halves down to single lines, and only those lines are parsed one by one with ``json``; bad
  JSON, non-objects, non-UTF-8 bytes and nesting too deep for ``json`` are errors with the line.
- Parquet (``iter_batches``): an unreadable file or row group is one error naming the file.
- TFRecord (``records.iter_blocks``): a record failing its checksum or not a tf.Example is an
  error with its offset; a broken frame ends the file with an error.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

FORMATS = ("csv", "jsonl", "parquet", "tfrecord", "text")
SUFFIXES = {
    ".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet", ".tfrecord": "tfrecord", ".tfrecords": "tfrecord",
    ".txt": "text", ".py": "text", ".md": "text",
}
COMPRESSED = (".gz", ".bz2")
DEFAULT_CHUNK_ROWS = 8192
# Bytes read per refill of a text reader; a block holds at least one whole row.
READ_BYTES = 4 << 20
# A row (CSV, JSON line) larger than this goes to errors instead of into memory and a record.
MAX_ROW_BYTES = 16 << 20
# A quoted CSV field that spans lines holding at least this many delimiters per line looks like
# swallowed rows; it is reported line by line instead of becoming one value.
_EXCERPT = 200
# The columns a ``text`` record offers; a feature set declares the ones it uses.
TEXT_COLUMNS = ("text", "path")
BOM = b"\xef\xbb\xbf"


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
    read at all: bad JSON, wrong CSV field count, corrupt frame, truncated Parquet."""

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


class MissingColumnsError(ValueError):
    """Declared inputs that an input file's header or schema lacks (raised before the job)."""


def infer_format(path: str) -> str:
    """The format of ``path`` (or glob) from its suffix, looking through ``.gz`` and the like."""
    name = path.lower()
    for suffix in COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    ext = os.path.splitext(name)[1]
    if ext not in SUFFIXES:
        raise ValueError(
            f"cannot infer the input format of {path!r} from its suffix {ext!r}; "
            f"pass --format {'|'.join(FORMATS)}"
        )
    return SUFFIXES[ext]


@contextlib.contextmanager
def _open(path: str):
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


def _excerpt(data: bytes) -> str:
    return data[:_EXCERPT].decode("utf-8", "replace")


def _delimiter(path: str) -> str:
    return "\t" if ".tsv" in path.lower() else ","


# ---------------------------------------------------------------------------------------------
# CSV


def _refill(f, pending: bytes) -> tuple[bytes, bool]:
    data = f.read(READ_BYTES)
    return pending + data, not data


def csv_header(path: str) -> list[str]:
    """The column names of a CSV file's header row (a UTF-8 BOM is not part of the first)."""
    with _open(path) as f:
        head = f.read(1 << 16)
        while b"\n" not in head and len(head) < MAX_ROW_BYTES:
            more = f.read(1 << 16)
            if not more:
                break
            head += more
    head = head.removeprefix(BOM)
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    return next(csv.reader([line], delimiter=_delimiter(path)), [])


class _Limited:
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


@dataclass(frozen=True)
class Split:
    """A part of a file that one worker reads: bytes ``[start, end)`` of a CSV or JSONL file
    starting at line ``first`` (``start=0``: the whole file from its header), or Parquet row
    groups ``[start, end)`` whose first row is ``first``."""

    path: str
    start: int = 0
    end: int | None = None
    first: int = 0


# Bytes (or, for Parquet, rows) per split: enough work per element to amortize its overhead,
# enough splits that one big file keeps every worker busy.
SPLIT_BYTES = 8 << 20
SPLIT_ROWS = 1 << 18


def split_file(path: str, fmt: str, target: int = SPLIT_BYTES) -> list[Split]:
    """Cut a file into splits at row boundaries (uncompressed CSV and JSONL: a sequential scan
    with the row-end kernel; Parquet: by row groups). Other files are one split."""
    compressed = path.lower().endswith(COMPRESSED)
    if fmt == "parquet":
        return _split_parquet(path)
    if compressed or fmt not in ("csv", "jsonl"):
        return [Split(path)]
    from shardforge.pipelines._kernels import scan_rows

    delim = ord(_delimiter(path))
    splits: list[Split] = []
    start, first = 0, 1 if fmt == "jsonl" else 0  # the CSV header starts the first split
    pos, line = 0, 1  # file offset and line of pending[0]
    pending = b""
    with _open(path) as f:
        while True:
            data = f.read(READ_BYTES)
            pending += data
            if pos == 0 and pending.startswith(BOM):
                pending, pos = pending[len(BOM):], len(BOM)
            buf = np.frombuffer(pending, np.uint8)
            if fmt == "csv":
                ends, lines = scan_rows(buf, delim)
            else:
                ends = np.flatnonzero(buf == 10) + 1
                lines = np.arange(1, len(ends) + 1)
            if not len(ends):
                if not data or len(pending) > MAX_ROW_BYTES:
                    break  # the end, or a row the reader reports: the rest is one split
                continue
            if pos + int(ends[-1]) - start >= target:
                cut = pos + int(ends[-1])
                splits.append(Split(path, start, cut, first))
                start, first = cut, line + int(lines[-1])
            pos, line = pos + int(ends[-1]), line + int(lines[-1])
            pending = pending[int(ends[-1]):]
            if not data:
                break
    splits.append(Split(path, start, None, first))
    return splits


def _split_parquet(path: str) -> list[Split]:
    import pyarrow.parquet as pq

    try:
        with _open(path) as raw:
            meta = pq.ParquetFile(raw).metadata
    except Exception:  # noqa: BLE001 - the reader reports an unreadable file, naming it
        return [Split(path)]
    splits, start, first, rows = [], 0, 0, 0
    for g in range(meta.num_row_groups):
        rows += meta.row_group(g).num_rows
        if rows - first >= SPLIT_ROWS:
            splits.append(Split(path, start, g + 1, first))
            start, first = g + 1, rows
    if start < meta.num_row_groups or not splits:
        splits.append(Split(path, start, None, first))
    return splits


def read_csv(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS,
             split: Split | None = None):
    """CSV with a header row; empty fields are missing. Columns not in ``names`` are ignored,
    declared columns the header lacks are all missing (the job checks headers before it starts).
    ``split``: read only that part of the file.
    """
    from shardforge.pipelines._kernels import scan_rows

    split = split or Split(path)
    delim = _delimiter(path)
    header = csv_header(path)
    if not header:
        return
    width = len(header)
    present = [n for n in names if n in header]
    with _open(path) as raw:
        f = _Limited(raw, split.start, split.end)
        pending, eof = _refill(f, b"")
        line = split.first  # line number of the first byte of ``pending``
        if not split.start:
            pending = pending.removeprefix(BOM)
            ends, _ = scan_rows(np.frombuffer(pending, np.uint8), ord(delim))
            if not len(ends):
                return
            pending, line = pending[int(ends[0]):], 2
        while pending or not eof:
            buf = np.frombuffer(pending, np.uint8)
            ends, lines = scan_rows(buf, ord(delim))
            if not len(ends):
                if not eof and len(pending) <= MAX_ROW_BYTES:
                    pending, eof = _refill(f, pending)
                    continue
                if eof and pending and b"\n" not in pending:
                    pending += b"\n"  # the last row lacks its newline
                    continue
                # No row ends within the limit (or before the end of the file): an unterminated
                # quote or an oversized row. Its first line is the error; reading resumes after.
                cut = pending.find(b"\n")
                if cut < 0:  # one line larger than the limit: skip to its end
                    yield ReadError(f"{path}:{line}", f"row larger than the {_mb(MAX_ROW_BYTES)} "
                                    "limit", _excerpt(pending))
                    pending = _skip_line(f)
                    eof = pending is None
                    pending = pending or b""
                    line += 1
                    continue
                yield ReadError(f"{path}:{line}", "unterminated quoted field (a stray quote?)",
                                _excerpt(pending[:cut]))
                pending, line = pending[cut + 1:], line + 1
                continue
            # whole rows only; ``lines`` counts newlines from the block start through each row
            block_end = int(ends[-1])
            yield from _csv_block(path, pending[:block_end], ends, lines, line, header, width,
                                  present, names, delim, chunk_rows)
            line += int(lines[-1])
            pending = pending[block_end:]
            if not eof and len(pending) < READ_BYTES:
                pending, eof = _refill(f, pending)


def _mb(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def _skip_line(f) -> bytes | None:
    """Read past the next newline; the bytes after it, or ``None`` at the end of the file."""
    while True:
        data = f.read(READ_BYTES)
        if not data:
            return None
        cut = data.find(b"\n")
        if cut >= 0:
            return data[cut + 1:]


def _csv_block(path, block, ends, lines, first_line, header, width, present, names, delim,
               chunk_rows):
    """Parse one block of whole rows; yield its errors and chunks."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    n_rows = len(ends)
    starts = np.concatenate(([0], ends[:-1]))
    # the line each row starts on
    row_line = first_line + np.concatenate(([0], lines[:-1]))
    size = ends - starts
    blank = (size == 1) | ((size == 2) & (np.frombuffer(block, np.uint8)[starts] == 13))
    bad = np.zeros(n_rows, dtype=bool)
    errors: list[tuple[int, ReadError]] = []
    invalid: list = []

    def on_invalid(row) -> str:
        invalid.append(row)
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(block),
        read_options=pacsv.ReadOptions(column_names=header, use_threads=False,
                                       block_size=len(block) + 1),
        parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True,
                                         ignore_empty_lines=False, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.binary() for n in header}, include_columns=present,
            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    parsed = np.ones(n_rows, dtype=bool)
    for row in invalid:
        k = row.number - 1
        parsed[k] = False
        if not blank[k]:
            errors.append((k, ReadError(
                f"{path}:{row_line[k]}",
                f"expected {width} fields (header), got {row.actual_columns}",
                _excerpt(row.text.encode()))))
    multi = np.flatnonzero(parsed & (np.diff(np.concatenate(([0], lines))) > 1))
    for k in multi.tolist():
        text = block[starts[k]:ends[k]]
        swallowed = _swallowed_rows(text, delim, width)
        if swallowed:
            bad[k] = True
            span = f"{row_line[k]}-{row_line[k] + len(swallowed) - 1}"
            for j, piece in enumerate(swallowed):
                errors.append((k, ReadError(
                    f"{path}:{row_line[k] + j}",
                    f"a quoted field runs over lines {span} that look like whole rows "
                    "(a stray quote?)", _excerpt(piece))))
    huge = np.flatnonzero(parsed & (size > MAX_ROW_BYTES))
    for k in huge.tolist():
        bad[k] = True
        errors.append((k, ReadError(f"{path}:{row_line[k]}",
                                    f"row of {_mb(int(size[k]))} is larger than the "
                                    f"{_mb(MAX_ROW_BYTES)} limit", _excerpt(block[starts[k]:]))))
    for _, err in sorted(errors, key=lambda e: e[0]):
        yield err
    # rows of the table = parsed rows, in order; keep the good, non-blank ones
    keep_rows = np.flatnonzero(parsed)
    keep = ~(bad | blank)[keep_rows]
    if not keep.all():
        table = table.filter(pa.array(keep))
        keep_rows = keep_rows[keep]
    positions = row_line[keep_rows]
    regular = len(positions) == 0 or positions[-1] - positions[0] == len(positions) - 1
    for lo in range(0, table.num_rows, chunk_rows):
        part = table.slice(lo, chunk_rows)
        pos = positions[lo:lo + part.num_rows]
        columns = {n: pc.cast(part.column(n), pa.binary()).combine_chunks() for n in present}
        columns.update({n: None for n in names if n not in columns})
        yield RawChunk(path, int(pos[0]), part.num_rows, columns,
                       None if regular else pos.copy())


def _swallowed_rows(text: bytes, delim: str, width: int) -> list[bytes] | None:
    """The lines of a multi-line row when two or more of them look like whole rows by
    themselves (``width - 1`` delimiters or more): a quote opened by mistake."""
    lines = text.rstrip(b"\r\n").split(b"\n")
    if width < 2 or len(lines) < 2:
        return None
    d = delim.encode()
    rowlike = sum(1 for ln in lines if ln.count(d) >= width - 1)
    return lines if rowlike >= 2 else None


# ---------------------------------------------------------------------------------------------
# JSONL


def _json_schema(spec):
    import pyarrow as pa

    scalar = {"float32": pa.float64(), "int64": pa.int64(), "bytes": pa.string()}
    fields = []
    for name, s in spec.items():
        t = scalar[s.dtype]
        if getattr(s, "shape", ()) != () or not hasattr(s, "shape"):
            t = pa.list_(t)
        fields.append(pa.field(name, t))
    return pa.schema(fields)


def read_jsonl(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS,
               spec=None, split: Split | None = None):
    """One JSON object per line; absent keys and ``null`` are missing. With ``spec`` (the
    declared inputs) lines are read by pyarrow as typed columns, else one by one."""
    schema = _json_schema(spec) if spec is not None else None
    split = split or Split(path, first=1)
    line = split.first
    with _open(path) as raw:
        f = _Limited(raw, split.start, split.end)
        pending, eof = _refill(f, b"")
        while pending or not eof:
            cut = pending.rfind(b"\n") + 1
            if not cut:
                if not eof:
                    if len(pending) > MAX_ROW_BYTES:
                        yield ReadError(f"{path}:{line}", f"line larger than the "
                                        f"{_mb(MAX_ROW_BYTES)} limit", _excerpt(pending))
                        rest = _skip_line(f)
                        pending, eof, line = rest or b"", rest is None, line + 1
                        continue
                    pending, eof = _refill(f, pending)
                    continue
                pending += b"\n"
                cut = len(pending)
            block, pending = pending[:cut], pending[cut:]
            yield from _json_block(path, block, line, names, schema, chunk_rows)
            line += block.count(b"\n")
            if not eof:
                pending, eof = _refill(f, pending)


def _json_block(path, block, first_line, names, schema, chunk_rows):
    """Lines of ``block`` (each ends in a newline) starting at ``first_line``."""
    lines = block.split(b"\n")[:-1]
    nonblank = np.array([bool(ln.strip()) for ln in lines], dtype=bool) if lines else np.zeros(0)
    yield from _json_lines(path, [ln for ln, keep in zip(lines, nonblank) if keep],
                           first_line + np.flatnonzero(nonblank), names, schema, chunk_rows)


def _json_lines(path, lines, positions, names, schema, chunk_rows):
    import pyarrow as pa
    import pyarrow.json as pj

    for lo in range(0, len(lines), chunk_rows):
        part, pos = lines[lo:lo + chunk_rows], positions[lo:lo + chunk_rows]
        stack = [(part, pos)]
        while stack:
            sub, sub_pos = stack.pop()
            table = None
            too_big = any(len(ln) > MAX_ROW_BYTES for ln in sub)
            if schema is not None and not too_big:
                try:
                    table = pj.read_json(
                        io.BytesIO(b"\n".join(sub) + b"\n"),
                        read_options=pj.ReadOptions(use_threads=False,
                                                    block_size=sum(map(len, sub)) + len(sub) + 1),
                        parse_options=pj.ParseOptions(explicit_schema=schema,
                                                      unexpected_field_behavior="ignore"))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    table = None
                if table is not None and table.num_rows != len(sub):
                    table = None  # a line holding several objects: sort it out line by line
            if table is not None:
                columns = {n: table.column(n).combine_chunks() for n in names}
                yield RawChunk(path, int(sub_pos[0]), len(sub), columns, _irregular(sub_pos))
            elif len(sub) > 16 and not too_big:
                half = len(sub) // 2  # halves: only the failing lines end up parsed one by one
                stack.append((sub[half:], sub_pos[half:]))
                stack.append((sub[:half], sub_pos[:half]))
            else:
                yield from _json_one_by_one(path, sub, sub_pos, names)


def _irregular(pos: np.ndarray) -> np.ndarray | None:
    return None if pos[-1] - pos[0] == len(pos) - 1 else np.asarray(pos).copy()


def _json_one_by_one(path, lines, positions, names):
    records, kept = [], []
    for ln, p in zip(lines, positions.tolist()):
        source = f"{path}:{p}"
        if len(ln) > MAX_ROW_BYTES:
            yield ReadError(source, f"line larger than the {_mb(MAX_ROW_BYTES)} limit",
                            _excerpt(ln))
            continue
        try:
            record = json.loads(ln)
        except json.JSONDecodeError as err:
            yield ReadError(source, f"invalid JSON: {err.msg} at column {err.colno}",
                            _excerpt(ln.strip()))
            continue
        except UnicodeDecodeError as err:
            yield ReadError(source, f"not UTF-8: byte {ln[err.start]:#04x} at position "
                            f"{err.start}", _excerpt(ln.strip()))
            continue
        except RecursionError:
            yield ReadError(source, "JSON nested too deeply", _excerpt(ln.strip()))
            continue
        if not isinstance(record, dict):
            yield ReadError(source, f"expected a JSON object, got {type(record).__name__}",
                            _excerpt(ln.strip()))
            continue
        records.append(record)
        kept.append(p)
    if records:
        pos = np.asarray(kept, dtype=np.int64)
        yield RawChunk(path, int(pos[0]), len(records),
                       {n: [r.get(n) for r in records] for n in names}, _irregular(pos))


# ---------------------------------------------------------------------------------------------
# Parquet, TFRecord, text


def parquet_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    with _open(path) as raw:
        return list(pq.ParquetFile(raw).schema_arrow.names)


def read_parquet(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 split: Split | None = None):
    """Parquet read in Arrow record batches of ``chunk_rows``; only the ``names`` columns. A file
    (or row group) that cannot be read is one error naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    split = split or Split(path)
    start = split.first
    with _open(path) as raw:
        try:
            pf = pq.ParquetFile(raw)
            present = [n for n in names if n in pf.schema_arrow.names]
            groups = range(split.start, pf.metadata.num_row_groups if split.end is None
                           else split.end)
            for rb in pf.iter_batches(batch_size=chunk_rows, columns=present,
                                      row_groups=list(groups)):
                columns = {n: rb.column(n) for n in present}
                columns.update({n: None for n in names if n not in columns})
                yield RawChunk(path, start, rb.num_rows, columns, kind="row")
                start += rb.num_rows
        except (pa.ArrowException, OSError, ValueError) as err:
            where = "" if not start else f" after row {start}"
            yield ReadError(path, f"unreadable Parquet file{where}: {err}")


def _input_spec_varlen(spec):
    from shardforge.records.spec import VarLen

    return {n: VarLen(s.dtype) for n, s in spec.items()}


def read_tfrecord(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  scalars: Collection[str] = (), spec=None):
    """tf.Example records, decoded a block at a time. Every input comes as value lists
    (``Ragged``); coercion checks the counts against the declarations. A record failing its
    checksum or not a tf.Example is an error with its offset."""
    from shardforge.records.example import decode_batch
    from shardforge.records.framing import ReadReport, iter_blocks
    from shardforge.records.spec import VarLen

    varlen = ({n: VarLen(spec[n].dtype) for n in names} if spec is not None
              else None)
    with _local_copy(path) as local:
        report = ReadReport()
        seen = 0
        try:
            for _, offsets, block in iter_blocks(local, on_corrupt="skip", report=report,
                                                 compression="auto"):
                yield from _problems(path, report, seen)
                seen = len(report.problems)
                for lo in range(0, len(block), chunk_rows):
                    part, offs = block[lo:lo + chunk_rows], offsets[lo:lo + chunk_rows]
                    yield from _tfrecord_chunk(path, part, offs, names, varlen, decode_batch)
        except Exception as err:  # noqa: BLE001 - a broken file is one error, not a failed job
            yield ReadError(path, f"unreadable TFRecord file: {err}")
        yield from _problems(path, report, seen)


def _problems(path, report, seen):
    for p in report.problems[seen:]:
        yield ReadError(f"{path}@{p.offset}", f"corrupt record: {p.reason}")


def _tfrecord_chunk(path, block, offsets, names, varlen, decode_batch):
    from shardforge.records.example import decode_example

    if varlen is not None:
        try:
            batch = decode_batch(block, varlen)
            yield RawChunk(path, int(offsets[0]), len(block), {n: batch[n] for n in names},
                           np.asarray(offsets, dtype=np.int64), kind="offset")
            return
        except Exception:  # noqa: BLE001 - find the bad records one by one below
            pass
    records, kept = [], []
    for data, off in zip(block, offsets.tolist()):
        try:
            example = decode_example(data)
        except Exception as err:  # noqa: BLE001 - a malformed payload is one bad record
            yield ReadError(f"{path}@{off}", f"not a tf.Example: {err}")
            continue
        records.append({n: (None if example.get(n) is None or len(example[n]) == 0
                            else example[n].tolist()) for n in names})
        kept.append(off)
    if records:
        yield RawChunk(path, kept[0], len(records), {n: [r[n] for r in records] for n in names},
                       np.asarray(kept, dtype=np.int64), kind="offset")


@contextlib.contextmanager
def _local_copy(path: str):
    if "://" not in path:
        yield path
        return
    # Remote file: copy to local scratch first; the records reader works on local paths.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        with _open(path) as src, open(local, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        yield local


def read_text(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """The whole file as one record: ``text`` (UTF-8, else raw bytes) and ``path``."""
    with _open(path) as raw:
        data = raw.read()
    try:
        text: str | bytes = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data
    record = {"text": text, "path": path}
    yield RawChunk(path, 1, 1, {n: [record.get(n)] for n in names})


READERS = {
    "csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet,
    "tfrecord": read_tfrecord, "text": read_text,
}


def read_file(path: str, fmt: str, names: Sequence[str] | dict,
              chunk_rows: int = DEFAULT_CHUNK_ROWS, scalars: Collection[str] = (),
              split: Split | None = None):
    """Chunks and :class:`ReadError`\\ s of one file (or of one ``split`` of it, from
    :func:`split_file`), in file order. ``names``: the input names, or the input spec
    (``FeatureSet.input_spec()``), which types JSON and TFRecord reads."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    spec = names if isinstance(names, dict) else None
    names = list(names)
    if fmt == "tfrecord":
        yield from read_tfrecord(path, names, chunk_rows, scalars, spec=spec)
    elif fmt == "jsonl":
        yield from read_jsonl(path, names, chunk_rows, spec=spec, split=split)
    elif fmt in ("csv", "parquet"):
        yield from READERS[fmt](path, names, chunk_rows, split=split)
    else:
        yield from READERS[fmt](path, names, chunk_rows)


def file_columns(path: str, fmt: str) -> list[str] | None:
    """The columns a file declares up front (CSV header, Parquet schema); ``None`` for formats
    whose records name their own fields."""
    if fmt == "csv":
        return csv_header(path)
    if fmt == "parquet":
        return parquet_columns(path)
    return None


def check_columns(paths: Sequence[str], fmt: str | None, names: Sequence[str],
                  absent_ok: Collection[str] = ()) -> None:
    """Raise :class:`MissingColumnsError` when a CSV header or Parquet schema lacks a declared
    input (other than ``absent_ok``), naming the column, the file and the closest names.

    >>> check_columns(["clicks.csv"], None, ["prcie"])  # doctest: +SKIP
    MissingColumnsError: clicks.csv has no column 'prcie' (closest: 'price'); ...
    """
    import difflib

    problems = []
    for path in paths:
        f = fmt or infer_format(path)
        try:
            columns = file_columns(path, f)
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the reader
            continue
        if columns is None:
            continue
        for name in names:
            if name in columns or name in absent_ok:
                continue
            close = difflib.get_close_matches(name, columns, n=3, cutoff=0.5)
            hint = f" (closest: {', '.join(map(repr, close))})" if close else ""
            problems.append(f"{path} has no column {name!r}{hint}; its columns: "
                            f"{', '.join(columns[:20])}{' ...' if len(columns) > 20 else ''}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise MissingColumnsError(
            "declared inputs missing from the input files: " + "; ".join(problems[:5]) + more
            + ". Fix the header or the feature set, or list columns that may be absent in "
            "absent_ok (--allow-absent)")


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
