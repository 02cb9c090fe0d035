"""Vectorized tokenizers and ragged helpers (Arrow compute kernels, no per-row Python)."""

from __future__ import annotations

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
    ``pattern`` (RE2 syntax); ``bytes`` makes every byte a token.
    """
    arr = to_arrow_strings(values)
    if lowercase:
        arr = pc.ascii_lower(arr)
    if tokenizer == "bytes":
        sb = StrBuf.from_arrow(arr.view(pa.large_binary()))
        index = np.arange(len(sb.buf) + 1, dtype=np.int64)
        return StrBuf(sb.buf, index), sb.offsets
    if tokenizer == "whitespace":
        lists = pc.ascii_split_whitespace(arr)
    elif tokenizer == "regex":
        lists = pc.split_pattern_regex(arr, pattern)
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; expected one of {TOKENIZERS}")
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
