"""The pipeline's compiled loops: where CSV rows end, and gathering records' bytes.

``row_ends`` is the one sequential scan the columnar CSV reader needs. pyarrow parses fields
fast but neither reports a row's line number nor lets a reader cut a file into blocks at row
boundaries it has not parsed yet. This scan does both: it follows RFC 4180's quoting (a quote
opens a field only at its start, ``""`` inside quotes is one quote, a newline inside quotes
belongs to the field) the way pyarrow's parser does, and records for each row the byte just past
its newline and the number of newlines up to there. ``gather_spans`` lays records out in a new
order (sorted runs) without a Python object per record.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NEWLINE = 10


@njit(cache=True, nogil=True)
def row_ends(buf, start, delim, quote, ends, lines):  # pragma: no cover - compiled
    """Rows of ``buf[start:]`` that end in a newline: writes each one's end (exclusive) into
    ``ends`` and the newlines counted from ``start`` through it into ``lines``; returns how many.
    A row cut off by the end of ``buf`` (no newline yet, or an open quote) is not counted."""
    n = 0
    nl = 0
    i = start
    size = len(buf)
    cap = len(ends)
    in_quotes = False
    field_start = True
    while i < size and n < cap:
        c = buf[i]
        if in_quotes:
            if c == quote:
                if i + 1 >= size:
                    break  # an escaped quote or the closing one: the next byte decides
                if buf[i + 1] == quote:
                    i += 2
                    continue
                in_quotes = False
            elif c == NEWLINE:
                nl += 1
        elif c == NEWLINE:
            nl += 1
            ends[n] = i + 1
            lines[n] = nl
            n += 1
            field_start = True
            i += 1
            continue
        elif c == delim:
            field_start = True
            i += 1
            continue
        elif c == quote and field_start:
            in_quotes = True
        field_start = False
        i += 1
    return n


def scan_rows(buf: np.ndarray, delim: int, quote: int = 34) -> tuple[np.ndarray, np.ndarray]:
    """``(ends, lines)`` of the complete rows of ``buf`` (a ``uint8`` array).

    >>> ends, lines = scan_rows(np.frombuffer(b'a,"b\\nc"\\nd\\ne', np.uint8), ord(","))
    >>> ends.tolist(), lines.tolist()
    ([8, 10], [2, 3])
    """
    cap = int(np.count_nonzero(buf == NEWLINE))
    ends = np.empty(cap, dtype=np.int64)
    lines = np.empty(cap, dtype=np.int64)
    n = row_ends(buf, 0, delim, quote, ends, lines)
    return ends[:n], lines[:n]


@njit(cache=True, nogil=True)
def gather_spans(buf, offsets, lengths, out):  # pragma: no cover - compiled
    """Copy the spans ``buf[offsets[i]:offsets[i] + lengths[i]]`` back to back into ``out``."""
    pos = 0
    for i in range(len(offsets)):
        o = offsets[i]
        n = lengths[i]
        out[pos:pos + n] = buf[o:o + n]
        pos += n


def gather(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The spans of ``buf`` in the given order, as one contiguous ``uint8`` array.

    >>> gather(np.frombuffer(b"abcdef", np.uint8), np.array([4, 0]), np.array([2, 1])).tobytes()
    b'efa'
    """
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if len(offsets) and (offsets.min() < 0 or (offsets + lengths).max() > len(buf)):
        raise ValueError("a span lies outside the buffer")
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    gather_spans(buf, offsets, lengths, out)
    return out
