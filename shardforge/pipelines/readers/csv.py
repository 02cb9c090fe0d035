"""CSV (and TSV) with a header row: pyarrow's parser over blocks cut at row ends by a compiled scan.

A row with the wrong number of fields, a row larger than ``MAX_ROW_BYTES``, a quoted field that
runs over lines which look like whole rows (a stray quote: every line it swallowed is reported),
an unterminated quote: errors with the line. A UTF-8 BOM is skipped; fields stay bytes until
coerced, so a non-UTF-8 byte fails only the value that holds it. Empty fields are missing.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from shardforge.pipelines.readers.base import (
    BOM,
    MAX_ROW_BYTES,
    READ_BYTES,
    Inputs,
    Limited,
    RawChunk,
    ReadError,
    Split,
    excerpt,
    mb,
    open_path,
    refill,
    skip_line,
    split_at_row_ends,
)


def _delimiter(path: str) -> str:
    return "\t" if ".tsv" in path.lower() else ","


class CsvReader:
    """CSV with a header row (``.tsv``: tab-separated). Columns not declared are ignored,
    declared columns the header lacks are all missing (the job checks headers before it starts).
    """

    name = "csv"
    suffixes = (".csv", ".tsv")

    def inputs(self, spec: dict) -> dict:
        return spec

    def columns(self, path: str) -> list[str]:
        """The column names of the header row (a UTF-8 BOM is not part of the first)."""
        with open_path(path) as f:
            head = f.read(1 << 16)
            while b"\n" not in head and len(head) < MAX_ROW_BYTES:
                more = f.read(1 << 16)
                if not more:
                    break
                head += more
        head = head.removeprefix(BOM)
        line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
        return next(csv.reader([line], delimiter=_delimiter(path)), [])

    def split(self, path: str, target: int) -> list[Split]:
        from shardforge.pipelines._kernels import scan_rows

        delim = ord(_delimiter(path))
        # the header starts the first split
        return split_at_row_ends(path, target, lambda block: scan_rows(block, delim), 0)

    def read(self, split: Split, inputs: Inputs, chunk_rows: int):
        from shardforge.pipelines._kernels import scan_rows

        path, names = split.path, list(inputs)
        delim = _delimiter(path)
        header = self.columns(path)
        if not header:
            return
        width = len(header)
        present = [n for n in names if n in header]
        with open_path(path) as raw:
            f = Limited(raw, split.start, split.end)
            pending, eof = refill(f, b"")
            line = split.first  # line number of the first byte of ``pending``
            if not split.start:
                pending = pending.removeprefix(BOM)
                ends, _ = scan_rows(pending, ord(delim))
                if not len(ends):
                    return
                pending, line = pending[int(ends[0]):], 2
            while pending or not eof:
                ends, lines = scan_rows(pending, ord(delim))
                if not len(ends):
                    if not eof and len(pending) <= MAX_ROW_BYTES:
                        pending, eof = refill(f, pending)
                        continue
                    if eof and pending and b"\n" not in pending:
                        pending += b"\n"  # the last row lacks its newline
                        continue
                    # No row ends within the limit (or before the end of the file): an
                    # unterminated quote or an oversized row. Its first line is the error;
                    # reading resumes after.
                    cut = pending.find(b"\n")
                    if cut < 0:  # one line larger than the limit: skip to its end
                        yield ReadError(f"{path}:{line}", f"row larger than the "
                                        f"{mb(MAX_ROW_BYTES)} limit", excerpt(pending))
                        pending = skip_line(f)
                        eof = pending is None
                        pending = pending or b""
                        line += 1
                        continue
                    yield ReadError(f"{path}:{line}", "unterminated quoted field (a stray "
                                    "quote?)", excerpt(pending[:cut]))
                    pending, line = pending[cut + 1:], line + 1
                    continue
                # whole rows only; ``lines`` counts newlines from the block start through each row
                block_end = int(ends[-1])
                yield from _csv_block(path, pending[:block_end], ends, lines, line, header,
                                      width, present, names, delim, chunk_rows)
                line += int(lines[-1])
                pending = pending[block_end:]
                if not eof and len(pending) < READ_BYTES:
                    pending, eof = refill(f, pending)


def _csv_block(path, block, ends, lines, first_line, header, width, present, names, delim,
               chunk_rows):
    """Parse one block of whole rows; yield its errors and chunks."""
    import pyarrow as pa
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
                excerpt(row.text.encode()))))
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
                    "(a stray quote?)", excerpt(piece))))
    huge = np.flatnonzero(parsed & (size > MAX_ROW_BYTES))
    for k in huge.tolist():
        bad[k] = True
        errors.append((k, ReadError(f"{path}:{row_line[k]}",
                                    f"row of {mb(int(size[k]))} is larger than the "
                                    f"{mb(MAX_ROW_BYTES)} limit", excerpt(block[starts[k]:]))))
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
    # equal chunks of at most chunk_rows (no small remainder chunk per block)
    step = -(-table.num_rows // max(1, -(-table.num_rows // chunk_rows)))
    for lo in range(0, table.num_rows, max(step, 1)):
        part = table.slice(lo, step)
        pos = positions[lo:lo + part.num_rows]
        columns = {n: part.column(n).combine_chunks() for n in present}
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
