"""Vectorized tokenizers (numba over one byte buffer; Arrow RE2 for regex), ragged helpers."""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardforge.features.hashing import StrBuf, _to_arrow

TOKENIZERS = ("whitespace", "regex", "bytes")


def to_arrow_strings(values: np.ndarray) -> pa.Array:
    """Object array of bytes as an Arrow string view (bytes are not UTF-8 validated)."""
    arr = _to_arrow(values)
    return arr.view(pa.large_string())


def tokenize(
    values: np.ndarray, tokenizer: str, pattern: str | None = None, lowercase: bool = False
) -> tuple[StrBuf, np.ndarray]:
    """Tokens of each string as ``(StrBuf of tokens, row_splits)``; empty tokens are dropped.

    ``whitespace`` splits on ASCII whitespace like ``str.split()``; ``regex`` splits on matches of
    ``pattern`` (RE2 syntax); ``bytes`` makes every byte a token. Whitespace and bytes run in
    numba over the concatenated buffer; regex uses Arrow's RE2 kernel.
    """
    if tokenizer in ("whitespace", "bytes"):
        sb = values if isinstance(values, StrBuf) else StrBuf.from_values(values)
        buf = _ascii_lower(sb.buf) if lowercase else sb.buf
        if tokenizer == "bytes":
            return StrBuf(buf, np.arange(len(buf) + 1, dtype=np.int64)), sb.offsets
        tok_buf, tok_offsets, splits = _split_whitespace(buf, sb.offsets)
        return StrBuf(tok_buf, tok_offsets), splits
    if tokenizer != "regex":
        raise ValueError(f"unknown tokenizer {tokenizer!r}; expected one of {TOKENIZERS}")
    arr = to_arrow_strings(values)
    if lowercase:
        arr = pc.ascii_lower(arr)
    lists = pc.split_pattern_regex(arr, pattern)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    tokens = StrBuf.from_arrow(
        flat.view(pa.large_binary())
        if pa.types.is_large_string(flat.type)
        else flat.cast(pa.binary())
    )
    keep = np.diff(tokens.offsets) > 0
    if not keep.all():
        tokens = take_strings(tokens, np.nonzero(keep)[0])
        parents = parents[keep]
    splits = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=len(values)), out=splits[1:])
    return tokens, splits


def _ascii_lower(buf: np.ndarray) -> np.ndarray:
    upper = (buf >= ord("A")) & (buf <= ord("Z"))
    return np.where(upper, buf + np.uint8(32), buf).astype(np.uint8)


@numba.njit(cache=True, nogil=True)
def _split_whitespace(buf, offsets):
    # ASCII whitespace as bytes.split() sees it: space, \t, \n, \v, \f, \r.
    n = len(offsets) - 1
    out = np.empty(len(buf), dtype=np.uint8)
    tok = np.empty(len(buf) // 2 + 2, dtype=np.int64)
    splits = np.zeros(n + 1, dtype=np.int64)
    nt = 0
    pos = 0
    for r in range(n):
        inside = False
        for i in range(offsets[r], offsets[r + 1]):
            c = buf[i]
            space = c == 32 or (c >= 9 and c <= 13)
            if space:
                inside = False
            else:
                if not inside:
                    tok[nt] = pos
                    nt += 1
                    inside = True
                out[pos] = c
                pos += 1
        splits[r + 1] = nt
    tok_offsets = np.empty(nt + 1, dtype=np.int64)
    tok_offsets[:nt] = tok[:nt]
    tok_offsets[nt] = pos
    return out[:pos].copy(), tok_offsets, splits


def take_strings(sb: StrBuf, index: np.ndarray) -> StrBuf:
    """The strings of ``sb`` at ``index`` as a new compact StrBuf (vectorized gather)."""
    starts, lens = sb.offsets[index], np.diff(sb.offsets)[index]
    offsets = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    gather = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1])
    return StrBuf(sb.buf[gather], offsets)


def truncate_index(row_splits: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Value positions keeping the first ``max_length`` values of each row, and the new splits."""
    lens = np.minimum(np.diff(row_splits), max_length)
    splits = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=splits[1:])
    index = np.repeat(row_splits[:-1] - splits[:-1], lens) + np.arange(splits[-1])
    return index, splits
