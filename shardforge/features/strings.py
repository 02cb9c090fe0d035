"""String columns: ``tf.strings`` operations as columns, composable with every other column.

Each takes a raw input name (the input another column declares, else a bytes input with
default ``""``), an :class:`~shardforge.features.column.Input` or a column, and outputs bytes:
one string per row, or a varlen list (:class:`~shardforge.records.spec.Ragged`) for ``split``
and ``ngrams``. Elementwise ops keep the row structure of a varlen input. Vectorized (Arrow
compute or numba over one byte buffer); the flat strings travel between built-in columns as a
zero-copy :class:`~shardforge.features.hashing.StrBuf`.

>>> import shardforge.features as sf
>>> cross = sf.categorical_hash(sf.join(["country", sf.as_string(age_bucket)], "_"), 1000)
... # doctest: +SKIP

is ``tf.strings.to_hash_bucket_fast(country + "_" + tf.strings.as_string(age_bucket), 1000)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardforge.features.column import (
    Column,
    Input,
    Output,
    check_int,
    check_name,
    flat,
    wrap,
)
from shardforge.features.hashing import StrBuf, _to_arrow, int_to_strbuf
from shardforge.records.spec import Ragged

Source = str | Input | Column


class _StringColumn(Column):
    """Built-in string ops: bytes in (as a StrBuf), an undeclared input name is a bytes input."""

    reads_strbuf = True

    def undeclared_input(self, name: str) -> Input:
        return Input(name, "bytes", (), False, b"")


def to_strbuf(values: Any) -> StrBuf:
    """Flat bytes values (object array, StrBuf, or int64 as decimal strings) as a StrBuf."""
    if isinstance(values, StrBuf):
        return values
    arr = np.asarray(values)
    if arr.dtype != object:
        if arr.dtype.kind not in "iu":
            raise TypeError(f"cannot use {arr.dtype} values as strings (format floats first)")
        return int_to_strbuf(arr.ravel())
    return StrBuf.from_values(arr)


def _arrow(sb: StrBuf) -> pa.Array:
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(sb), [
        None, pa.py_buffer(sb.offsets), pa.py_buffer(sb.buf)])


def _as_text(sb: StrBuf) -> pa.Array:
    """The strings as Arrow UTF-8 strings without validation (the kernels used are byte-safe)."""
    return _arrow(sb).view(pa.large_string())


def _from_arrow(arr: pa.Array) -> StrBuf:
    if pa.types.is_large_string(arr.type):
        arr = arr.view(pa.large_binary())
    return StrBuf.from_arrow(arr)


@dataclass(frozen=True)
class _StringOp(_StringColumn):
    """Base of the elementwise string ops: one input, bytes out, row structure kept."""

    source_input: Source
    name: str
    column_type = "strings"

    def inputs(self) -> tuple[Source, ...]:
        return (self.source_input,)

    def apply(self, sb: StrBuf) -> StrBuf:
        raise NotImplementedError

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        values_flat, splits = flat(values[0])
        return wrap(self.apply(to_strbuf(values_flat)), splits)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.strings(inputs[0].varlen)


@dataclass(frozen=True)
class Lower(_StringOp):
    """``tf.strings.lower``: ASCII letters to lower case (other bytes unchanged)."""

    def apply(self, sb: StrBuf) -> StrBuf:
        return StrBuf(_ascii_lower(sb.buf), sb.offsets)


@dataclass(frozen=True)
class Strip(_StringOp):
    """``tf.strings.strip``: leading and trailing ASCII whitespace removed."""

    def apply(self, sb: StrBuf) -> StrBuf:
        return _from_arrow(pc.ascii_trim_whitespace(_as_text(sb)))


@dataclass(frozen=True)
class RegexReplace(_StringOp):
    """``tf.strings.regex_replace`` (RE2 syntax, ``\\1`` in ``rewrite``)."""

    pattern: str = ""
    rewrite: str = ""
    replace_global: bool = True

    def apply(self, sb: StrBuf) -> StrBuf:
        return _from_arrow(pc.replace_substring_regex(
            _as_text(sb), pattern=self.pattern, replacement=self.rewrite,
            max_replacements=None if self.replace_global else 1))


@dataclass(frozen=True)
class AsString(_StringOp):
    """``tf.strings.as_string`` of int64 values (decimal); bytes pass through."""

    def apply(self, sb: StrBuf) -> StrBuf:
        return sb


@dataclass(frozen=True)
class Split(_StringColumn):
    """``tf.strings.split``: each string's parts, as a varlen list.

    ``sep=None`` splits on runs of ASCII whitespace and drops empty parts; a given ``sep``
    splits on every occurrence, keeping empty parts exactly like TensorFlow and Python's
    ``bytes.split(sep)`` (``"a  b"`` -> ``a, "", b``; ``""`` -> one empty string).
    ``maxsplit`` (``-1``: no limit) caps the splits per string; with ``sep=None`` the rest
    after the last split is one more part, even empty, as in TensorFlow.
    """

    source_input: Source
    sep: bytes | None = None
    maxsplit: int = -1
    name: str = ""
    column_type = "split"

    def inputs(self) -> tuple[Source, ...]:
        return (self.source_input,)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Ragged:
        sb = to_strbuf(flat(values[0])[0])
        if self.sep is None:
            buf, offsets, splits = _split_whitespace(sb.buf, sb.offsets, self.maxsplit)
            return Ragged(StrBuf(buf, offsets), splits)
        lists = pc.split_pattern(_arrow(sb), pattern=self.sep,
                                 max_splits=None if self.maxsplit < 0 else self.maxsplit)
        return _ragged_from_lists(lists, len(sb))

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        if inputs[0].varlen:
            raise ValueError(f"split column {self.name!r}: its input must be one string a row")
        return Output.strings(varlen=True)


@dataclass(frozen=True)
class RegexSplit(Split):
    """Split on matches of ``pattern`` (RE2), dropping empty parts."""

    pattern: str = ""
    column_type = "regex_split"

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Ragged:
        sb = to_strbuf(flat(values[0])[0])
        tokens = _ragged_from_lists(pc.split_pattern_regex(_as_text(sb), self.pattern), len(sb))
        keep = np.flatnonzero(np.diff(tokens.values.offsets) > 0)
        if len(keep) == len(tokens.values):
            return tokens
        rows = np.searchsorted(tokens.row_splits, keep, side="right") - 1
        splits = np.zeros(len(sb) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(sb)), out=splits[1:])
        return Ragged(take_strings(tokens.values, keep), splits)


def _ragged_from_lists(lists: pa.Array, n: int) -> Ragged:
    parts = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    splits = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=n), out=splits[1:])
    return Ragged(_from_arrow(parts), splits)


@dataclass(frozen=True)
class Join(_StringColumn):
    """``tf.strings.join``: the parts of each row (bytes, or int64 as decimal strings) joined
    with ``separator``."""

    parts: tuple[Source, ...]
    separator: bytes = b""
    name: str = ""
    column_type = "join"

    def inputs(self) -> tuple[Source, ...]:
        return self.parts

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> StrBuf:
        arrays = [_arrow(to_strbuf(v)) for v in values]
        sep = pa.scalar(self.separator, pa.large_binary())
        return _from_arrow(pc.binary_join_element_wise(*arrays, sep))

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        for part, desc in zip(self.parts, inputs):
            if desc.varlen or desc.shape or desc.dtype == "float32":
                raise ValueError(
                    f"join column {self.name!r}: part {_label(part)!r} must be one bytes or "
                    f"int64 value a row (got {desc.dtype}{'[]' if desc.varlen else ''})")
        return Output.strings()


@dataclass(frozen=True)
class NGrams(_StringColumn):
    """``tf.strings.ngrams``: each row's n-grams of a varlen strings column, for every width
    in ``widths`` in turn, tokens joined with ``separator`` (no padding). ``order="position"``
    lists them by start position, then width: ``tft.ngrams``'s order."""

    source_input: Column
    widths: tuple[int, ...] = (2,)
    separator: bytes = b" "
    name: str = ""
    order: str = "width"
    column_type = "ngrams"

    def inputs(self) -> tuple[Column, ...]:
        return (self.source_input,)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Ragged:
        tokens = values[0]
        sb = to_strbuf(tokens.values)
        n = len(tokens)
        row_end = np.repeat(tokens.row_splits[1:], tokens.row_lengths())
        pos = np.arange(len(sb), dtype=np.int64)
        pieces, rows, starts, order = [], [], [], []
        sep = pa.scalar(self.separator, pa.large_binary())
        arr = _arrow(sb)
        for k, w in enumerate(self.widths):
            start = pos[row_end - pos >= w]
            grams = pc.binary_join_element_wise(*[arr.take(start + i) for i in range(w)], sep)
            pieces.append(grams)
            rows.append(np.searchsorted(tokens.row_splits, start, side="right") - 1)
            starts.append(start)
            order.append(np.full(len(start), k))
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        # Row-major, then width by width (TensorFlow's order), then by position: a stable sort;
        # tft.ngrams: row-major, then by position, then width.
        keys = (np.concatenate(order), row) if self.order == "width" else (
            np.concatenate(order), np.concatenate(starts), row)
        index = np.lexsort(keys)
        joined = pa.concat_arrays(pieces).take(pa.array(index)) if pieces else arr.slice(0, 0)
        splits = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=n), out=splits[1:])
        return Ragged(_from_arrow(joined), splits)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        if not inputs[0].varlen:
            raise ValueError(f"ngrams column {self.name!r} needs a varlen strings column")
        return Output.strings(varlen=True)


def _label(source: Source) -> str:
    return source if isinstance(source, str) else source.name


def _string_source(source: Source, what: str) -> Source:
    if isinstance(source, (Input, Column)):
        return source
    return check_name(source, what)


def lower(source: Source, name: str | None = None) -> Lower:
    """``tf.strings.lower`` (ASCII). ``source``: input name, Input or column."""
    source = _string_source(source, "lower source")
    return Lower(source, name or f"{_label(source)}_lower")


def strip(source: Source, name: str | None = None) -> Strip:
    """``tf.strings.strip``: ASCII whitespace removed at both ends."""
    source = _string_source(source, "strip source")
    return Strip(source, name or f"{_label(source)}_strip")


def regex_replace(source: Source, pattern: str, rewrite: str, replace_global: bool = True,
                  name: str | None = None) -> RegexReplace:
    """``tf.strings.regex_replace(source, pattern, rewrite, replace_global)`` (RE2).

    >>> digits = regex_replace("query", r"[0-9]+", "#")
    """
    source = _string_source(source, "regex_replace source")
    _check_regex(pattern, "regex_replace")
    return RegexReplace(source, name or f"{_label(source)}_replaced", pattern, rewrite,
                        replace_global)


def as_string(source: Source, name: str | None = None) -> AsString:
    """``tf.strings.as_string`` of an int64 input or column (e.g. bucket ids)."""
    source = _string_source(source, "as_string source")
    return AsString(source, name or f"{_label(source)}_string")


def split(source: Source, sep: str | bytes | None = None, maxsplit: int = -1,
          name: str | None = None) -> Split:
    """``tf.strings.split(source, sep, maxsplit)``, exactly (see :class:`Split`).

    >>> words = split("query", sep=" ")
    """
    source = _string_source(source, "split source")
    if sep is not None:
        sep = sep.encode() if isinstance(sep, str) else bytes(sep)
        if not sep:
            raise ValueError("split: sep must be non-empty (None splits on whitespace)")
    if isinstance(maxsplit, bool) or not isinstance(maxsplit, int) or maxsplit < -1:
        raise ValueError(f"split: maxsplit must be an integer >= -1, got {maxsplit!r}")
    return Split(source, sep, maxsplit, name or f"{_label(source)}_split")


def regex_split(source: Source, pattern: str, name: str | None = None) -> RegexSplit:
    """Parts between matches of ``pattern`` (RE2), empty parts dropped."""
    source = _string_source(source, "regex_split source")
    _check_regex(pattern, "regex_split")
    return RegexSplit(source, None, -1, name or f"{_label(source)}_split", pattern)


def join(parts: Sequence[Source], separator: str | bytes = "", name: str | None = None) -> Join:
    """``tf.strings.join(parts, separator)``: bytes parts, int64 parts as decimal strings.

    >>> key = join(["country", "device"], "_")
    """
    parts = tuple(_string_source(p, "join part") for p in parts)
    if len(parts) < 2:
        raise ValueError("join needs at least two parts")
    sep = separator.encode() if isinstance(separator, str) else bytes(separator)
    return Join(parts, sep, name or "_".join(_label(p) for p in parts) + "_joined")


def ngrams(source: Column, width: int | Sequence[int], separator: str | bytes = " ",
           name: str | None = None, order: str = "width") -> NGrams:
    """``tf.strings.ngrams(tokens, width, separator)`` of a varlen strings column.

    ``order="position"`` gives ``tft.ngrams(tokens, (lo, hi), separator)``'s order (by start
    position, then width) for ``width=range(lo, hi + 1)``; the n-grams are the same.

    >>> bigrams = ngrams(split("query"), 2)
    >>> tft_style = ngrams(split("query"), (1, 2), order="position")
    """
    if not isinstance(source, Column):
        raise ValueError("ngrams needs a varlen strings column, e.g. split('query')")
    if order not in ("width", "position"):
        raise ValueError(f"ngrams order={order!r}; expected 'width' (tf.strings.ngrams) or "
                         "'position' (tft.ngrams)")
    widths = (width,) if isinstance(width, int) else tuple(width)
    widths = tuple(check_int(w, "ngrams width") for w in widths)
    if not widths:
        raise ValueError("ngrams needs at least one width; tft.ngrams(tokens, (lo, hi), sep) is "
                         "width=range(lo, hi + 1), which needs 1 <= lo <= hi")
    sep = separator.encode() if isinstance(separator, str) else bytes(separator)
    return NGrams(source, widths, sep, name or f"{source.name}_ngrams", order)


def _check_regex(pattern: str, what: str) -> None:
    if not pattern:
        raise ValueError(f"{what} needs a pattern")
    try:
        re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{what}: invalid regex {pattern!r}: {err}") from None


# --------------------------------------------------------------------------- kernels


def to_arrow_strings(values: np.ndarray) -> pa.Array:
    """Object array of bytes as an Arrow string view (bytes are not UTF-8 validated)."""
    return _to_arrow(values).view(pa.large_string())


def _ascii_lower(buf: np.ndarray) -> np.ndarray:
    upper = (buf >= ord("A")) & (buf <= ord("Z"))
    return np.where(upper, buf + np.uint8(32), buf).astype(np.uint8)


@numba.njit(cache=True, nogil=True)
def _split_whitespace(buf, offsets, maxsplit):
    """TensorFlow's whitespace ``StringSplitV2``: per row, skip leading whitespace, then take a
    run of non-whitespace, skip whitespace, ...; after ``maxsplit`` tokens (> 0) the rest of the
    row is one more token, even empty (``"a"``, maxsplit 1 -> ``a, ""``); ``maxsplit == 0``
    keeps the row whole. Whitespace as absl::ascii_isspace: space, \t, \n, \v, \f, \r."""
    n = len(offsets) - 1
    out = np.empty(len(buf), dtype=np.uint8)
    # a token has >= 1 byte, except the (possibly empty) rest after maxsplit: one per row
    tok = np.empty(len(buf) + n + 1, dtype=np.int64)
    splits = np.zeros(n + 1, dtype=np.int64)
    nt = 0
    pos = 0
    for r in range(n):
        i, end = offsets[r], offsets[r + 1]
        if maxsplit == 0:
            tok[nt] = pos
            nt += 1
            for k in range(i, end):
                out[pos] = buf[k]
                pos += 1
            splits[r + 1] = nt
            continue
        while i < end and (buf[i] == 32 or (buf[i] >= 9 and buf[i] <= 13)):
            i += 1
        count = 0
        while i < end:
            tok[nt] = pos
            nt += 1
            while i < end and not (buf[i] == 32 or (buf[i] >= 9 and buf[i] <= 13)):
                out[pos] = buf[i]
                pos += 1
                i += 1
            while i < end and (buf[i] == 32 or (buf[i] >= 9 and buf[i] <= 13)):
                i += 1
            count += 1
            if count == maxsplit:
                tok[nt] = pos
                nt += 1
                for k in range(i, end):
                    out[pos] = buf[k]
                    pos += 1
                break
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
