"""Readers for the raw formats: each turns one file into chunks of raw column values.

A reader is a plain generator over one path (``gs://`` and other Beam filesystems included), so it
runs the same inside a Beam worker and in a test. Every record carries its source as a row id —
``file:line`` for text formats, ``file:row N`` for Parquet, ``file@offset`` for TFRecord — which is
what the errors output reports.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

FORMATS = ("csv", "jsonl", "parquet", "tfrecord", "text")
SUFFIXES = {
    ".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet", ".tfrecord": "tfrecord", ".tfrecords": "tfrecord",
    ".txt": "text", ".py": "text", ".md": "text",
}
COMPRESSED = (".gz", ".bz2")
DEFAULT_CHUNK_ROWS = 4096
# The columns a ``text`` record offers; a feature set declares the ones it uses.
TEXT_COLUMNS = ("text", "path")


@dataclass
class RawChunk:
    """Raw values of up to ``chunk_rows`` records: ``columns[name][i]`` belongs to ``ids[i]``.

    Values are what the file holds (CSV strings, JSON values, Arrow scalars); ``None`` is missing.
    """

    ids: list[str]
    columns: dict[str, list]


@dataclass
class ReadError:
    """A record that could not be read at all (bad JSON, wrong CSV field count, corrupt frame)."""

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


def _chunker(names: Sequence[str], chunk_rows: int):
    """Collects records into :class:`RawChunk`\\ s; ``add`` returns a full chunk or ``None``."""
    ids: list[str] = []
    cols: dict[str, list] = {n: [] for n in names}

    def add(row_id: str, record: dict) -> RawChunk | None:
        nonlocal ids, cols
        ids.append(row_id)
        for n in names:
            cols[n].append(record.get(n))
        if len(ids) >= chunk_rows:
            return flush()
        return None

    def flush() -> RawChunk | None:
        nonlocal ids, cols
        if not ids:
            return None
        chunk = RawChunk(ids, cols)
        ids, cols = [], {n: [] for n in names}
        return chunk

    return add, flush


def read_csv(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """CSV with a header row; empty fields are missing. Columns not in ``names`` are ignored."""
    add, flush = _chunker(names, chunk_rows)
    delimiter = "\t" if ".tsv" in path.lower() else ","
    with _open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        width = len(header)
        positions = {n: header.index(n) for n in names if n in header}
        line = reader.line_num
        for fields in reader:
            row_id = f"{path}:{line + 1}"
            line = reader.line_num
            if not fields:
                continue
            if len(fields) != width:
                yield ReadError(row_id, f"expected {width} fields (header), got {len(fields)}",
                                value=",".join(fields)[:200])
                continue
            record = {n: (fields[i] if fields[i] != "" else None) for n, i in positions.items()}
            if (chunk := add(row_id, record)) is not None:
                yield chunk
    if (chunk := flush()) is not None:
        yield chunk


def read_jsonl(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """One JSON object per line; absent keys and ``null`` are missing."""
    add, flush = _chunker(names, chunk_rows)
    with _open(path) as raw:
        for lineno, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), start=1):
            if not line.strip():
                continue
            row_id = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield ReadError(row_id, f"invalid JSON: {err.msg} at column {err.colno}",
                                value=line.strip()[:200])
                continue
            if not isinstance(record, dict):
                yield ReadError(row_id, f"expected a JSON object, got {type(record).__name__}",
                                value=line.strip()[:200])
                continue
            if (chunk := add(row_id, record)) is not None:
                yield chunk
    if (chunk := flush()) is not None:
        yield chunk


def read_parquet(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """Parquet read in Arrow record batches of ``chunk_rows``; only the ``names`` columns."""
    import pyarrow.parquet as pq

    with _open(path) as raw:
        pf = pq.ParquetFile(raw)
        present = [n for n in names if n in pf.schema_arrow.names]
        start = 0
        for rb in pf.iter_batches(batch_size=chunk_rows, columns=present):
            n = rb.num_rows
            ids = [f"{path}:row {start + i}" for i in range(n)]
            columns = {name: rb.column(name).to_pylist() for name in present}
            for name in names:
                columns.setdefault(name, [None] * n)
            start += n
            yield RawChunk(ids, columns)


def read_tfrecord(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  scalars: Collection[str] = ()):
    """tf.Example records: value lists, but a plain value for the ``scalars`` (inputs declared
    with one value) when the record holds exactly one; a missing feature is ``None``."""
    from shardforge.records import decode_example

    add, flush = _chunker(names, chunk_rows)
    offset = 0
    for data in _tfrecord_payloads(path):
        row_id = f"{path}@{offset}"
        offset += len(data) + 16  # length (8) + length crc (4) + payload + payload crc (4)
        try:
            example = decode_example(data)
        except Exception as err:  # a malformed payload is one bad record, not a failed job
            yield ReadError(row_id, f"not a tf.Example: {err}")
            continue
        record = {}
        for name in names:
            values = example.get(name)
            if values is None or len(values) == 0:
                record[name] = None
            elif name in scalars and len(values) == 1:
                record[name] = values[0].item() if hasattr(values[0], "item") else values[0]
            else:
                record[name] = values.tolist()
        if (chunk := add(row_id, record)) is not None:
            yield chunk
    if (chunk := flush()) is not None:
        yield chunk


def _tfrecord_payloads(path: str) -> Iterator[bytes]:
    from shardforge.records import read_records

    if "://" not in path:
        yield from read_records([path])
        return
    # Remote file: copy to local scratch first; the records reader works on local paths.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        with _open(path) as src, open(local, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        yield from read_records([local], compression=None)


def read_text(path: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """The whole file as one record: ``text`` (UTF-8, else raw bytes) and ``path``."""
    with _open(path) as raw:
        data = raw.read()
    try:
        text: str | bytes = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data
    record = {"text": text, "path": path}
    yield RawChunk([path], {n: [record.get(n)] for n in names})


READERS = {
    "csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet,
    "tfrecord": read_tfrecord, "text": read_text,
}


def read_file(path: str, fmt: str, names: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS,
              scalars: Collection[str] = ()):
    """Chunks and :class:`ReadError`\\ s of one file, in file order. ``scalars``: the inputs
    declared with one value (only TFRecord needs telling: its values always come as lists)."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "tfrecord":
        yield from read_tfrecord(path, names, chunk_rows, scalars)
    else:
        yield from READERS[fmt](path, names, chunk_rows)


def merge_chunks(chunks: Sequence[RawChunk]) -> RawChunk:
    """One chunk of several (small files, e.g. one document each, batched for the transforms)."""
    if len(chunks) == 1:
        return chunks[0]
    names = list(chunks[0].columns)
    return RawChunk([r for c in chunks for r in c.ids],
                    {n: [v for c in chunks for v in c.columns[n]] for n in names})


def _is_missing(value) -> bool:
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def missing_counts(chunk: RawChunk, keep: Sequence[int]) -> dict[str, int]:
    """How many of the kept rows had no value for each column (``None``, ``""`` or empty list)."""
    keep = np.asarray(keep, dtype=np.int64)
    counts = {}
    for name, values in chunk.columns.items():
        missing = np.fromiter(map(_is_missing, values), dtype=bool, count=len(values))
        counts[name] = int(missing[keep].sum())
    return counts
