"""JSON Lines: one object per line, read by pyarrow's JSON reader typed by the declared inputs.

A block pyarrow rejects is split in halves down to single lines, and only those lines are parsed
one by one with ``json``; bad JSON, non-objects, non-UTF-8 bytes, strings holding a lone
surrogate escape (``"\\ud800"``) and nesting too deep for ``json`` are errors with the line.
Absent keys and ``null`` are missing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import numpy as np

from shardforge.pipelines.readers.base import (
    MAX_ROW_BYTES,
    Inputs,
    Limited,
    RawChunk,
    ReadError,
    Split,
    excerpt,
    irregular,
    mb,
    open_path,
    refill,
    skip_line,
    split_at_row_ends,
)


def _line_ends(block: bytes) -> tuple[np.ndarray, np.ndarray]:
    ends = np.flatnonzero(np.frombuffer(block, np.uint8) == 10) + 1
    return ends, np.arange(1, len(ends) + 1)


class JsonlReader:
    """One JSON object per line. With the input spec, lines are read by pyarrow as typed
    columns; with names only, one by one."""

    name = "jsonl"
    suffixes = (".jsonl", ".json", ".ndjson")

    def inputs(self, spec: dict) -> dict:
        return spec

    def columns(self, path: str) -> None:
        return None

    def split(self, path: str, target: int) -> list[Split]:
        return split_at_row_ends(path, target, _line_ends, 1)

    def read(self, split: Split, inputs: Inputs, chunk_rows: int):
        path, names = split.path, list(inputs)
        schema = _json_schemas(inputs) if isinstance(inputs, Mapping) else ()
        line = split.first if split.start else 1
        with open_path(path) as raw:
            f = Limited(raw, split.start, split.end)
            pending, eof = refill(f, b"")
            while pending or not eof:
                cut = pending.rfind(b"\n") + 1
                if not cut:
                    if not eof:
                        if len(pending) > MAX_ROW_BYTES:
                            yield ReadError(f"{path}:{line}", f"line larger than the "
                                            f"{mb(MAX_ROW_BYTES)} limit", excerpt(pending))
                            rest = skip_line(f)
                            pending, eof, line = rest or b"", rest is None, line + 1
                            continue
                        pending, eof = refill(f, pending)
                        continue
                    pending += b"\n"
                    cut = len(pending)
                block, pending = pending[:cut], pending[cut:]
                yield from _json_block(path, block, line, names, schema, chunk_rows)
                line += block.count(b"\n")
                if not eof:
                    pending, eof = refill(f, pending)


def _json_schemas(spec) -> tuple:
    """The typed schemas pyarrow's JSON reader tries in turn: the declared types, then (when a
    bytes input is declared) the same with bytes inputs as integers, the usual numeric ids."""
    import pyarrow as pa

    def schema(bytes_type):
        scalar = {"float32": pa.float64(), "int64": pa.int64(), "bytes": bytes_type}
        fields = []
        for name, s in spec.items():
            t = scalar[s.dtype]
            if getattr(s, "shape", ()) != () or not hasattr(s, "shape"):
                t = pa.list_(t)
            fields.append(pa.field(name, t))
        return pa.schema(fields)

    has_bytes = any(s.dtype == "bytes" for s in spec.values())
    return (schema(pa.string()),) + ((schema(pa.int64()),) if has_bytes else ())


def _json_block(path, block, first_line, names, schema, chunk_rows):
    """Lines of ``block`` (each ends in a newline) starting at ``first_line``: the whole block
    to pyarrow at once; Python line objects only when pyarrow rejects it."""
    buf = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    size = ends - starts
    blank = (size == 0) | ((size == 1) & (buf[np.minimum(starts, len(buf) - 1)] == 13))
    positions = first_line + np.flatnonzero(~blank)
    table = None
    if schema and len(positions) and int(size.max()) <= MAX_ROW_BYTES:
        table = _read_json_table(block, schema)
        if table is not None and table.num_rows != len(positions):
            table = None  # blank-looking lines or several objects on a line: line by line
    if table is not None:
        for lo in range(0, table.num_rows, chunk_rows):
            part = table.slice(lo, chunk_rows)
            pos = positions[lo:lo + part.num_rows]
            yield RawChunk(path, int(pos[0]), part.num_rows,
                           {n: part.column(n).combine_chunks() for n in names}, irregular(pos))
        return
    lines = block.split(b"\n")[:-1]
    yield from _json_lines(path, [ln for ln, b in zip(lines, blank.tolist()) if not b],
                           positions, names, schema, chunk_rows)


def _read_json_table(data: bytes, schemas: tuple):
    """pyarrow's JSON reader on whole lines, typed by the first of ``schemas`` that fits them;
    ``None`` if none does."""
    import pyarrow as pa
    import pyarrow.json as pj

    for schema in schemas:
        try:
            return pj.read_json(
                io.BytesIO(data),
                read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
                parse_options=pj.ParseOptions(explicit_schema=schema,
                                              unexpected_field_behavior="ignore"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
    return None


def _json_lines(path, lines, positions, names, schema, chunk_rows):
    for lo in range(0, len(lines), chunk_rows):
        yield from _json_halves(path, lines[lo:lo + chunk_rows], positions[lo:lo + chunk_rows],
                                names, schema)


def _json_halves(path, lines, positions, names, schema):
    """pyarrow on ``lines``; where it fails, on each half, down to the failing lines. When both
    halves fail too the bad lines are dense (say a number where a string is declared on every
    line): those lines are parsed one by one at once instead of halved further."""
    table = None
    if schema and all(len(ln) <= MAX_ROW_BYTES for ln in lines):
        table = _read_json_table(b"\n".join(lines) + b"\n", schema)
        if table is not None and table.num_rows != len(lines):
            table = None  # a line holding several objects: sort it out line by line
    if table is not None:
        columns = {n: table.column(n).combine_chunks() for n in names}
        yield RawChunk(path, int(positions[0]), len(lines), columns, irregular(positions))
        return
    if not schema or len(lines) <= 16:
        yield from _json_one_by_one(path, lines, positions, names)
        return
    half = len(lines) // 2
    parts = [(lines[:half], positions[:half]), (lines[half:], positions[half:])]
    tables = [_read_json_table(b"\n".join(ls) + b"\n", schema) for ls, _ in parts]
    for (ls, ps), t in zip(parts, tables):
        if t is not None and t.num_rows == len(ls):
            yield RawChunk(path, int(ps[0]), len(ls),
                           {n: t.column(n).combine_chunks() for n in names}, irregular(ps))
        elif all(t is None for t in tables):
            yield from _json_one_by_one(path, ls, ps, names)
        else:
            yield from _json_halves(path, ls, ps, names, schema)


def _json_one_by_one(path, lines, positions, names):
    records, kept = [], []
    for ln, p in zip(lines, positions.tolist()):
        source = f"{path}:{p}"
        if len(ln) > MAX_ROW_BYTES:
            yield ReadError(source, f"line larger than the {mb(MAX_ROW_BYTES)} limit",
                            excerpt(ln))
            continue
        try:
            record = json.loads(ln)
        except json.JSONDecodeError as err:
            yield ReadError(source, f"invalid JSON: {err.msg} at column {err.colno}",
                            excerpt(ln.strip()))
            continue
        except UnicodeDecodeError as err:
            yield ReadError(source, f"not UTF-8: byte {ln[err.start]:#04x} at position "
                            f"{err.start}", excerpt(ln.strip()))
            continue
        except RecursionError:
            yield ReadError(source, "JSON nested too deeply", excerpt(ln.strip()))
            continue
        if not isinstance(record, dict):
            yield ReadError(source, f"expected a JSON object, got {type(record).__name__}",
                            excerpt(ln.strip()))
            continue
        try:  # a \ud800 escape is valid JSON but no text: it has no UTF-8 bytes to store
            json.dumps([record.get(n) for n in names], ensure_ascii=False).encode()
        except UnicodeEncodeError as err:
            yield ReadError(source, f"a string holds a lone surrogate "
                            f"{err.object[err.start:err.end]!r}, which is not Unicode text",
                            excerpt(ln.strip()))
            continue
        records.append(record)
        kept.append(p)
    if records:
        pos = np.asarray(kept, dtype=np.int64)
        yield RawChunk(path, int(pos[0]), len(records),
                       {n: [r.get(n) for r in records] for n in names}, irregular(pos))
