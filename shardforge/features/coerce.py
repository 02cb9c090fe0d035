"""Raw values -> typed input batches: the one place where inputs are parsed and checked.

``FeatureSet.coerce`` delegates here. Rows with a value that does not parse, or a missing required
value, leave the batch and come back as :class:`~shardforge.features.feature_set.RowError`\\ s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from shardforge.features.columns import Input
from shardforge.features.feature_set import RowError
from shardforge.records.spec import Batch, Ragged, take_rows


def coerce(
    inputs: Iterable[Input], raw: dict[str, Any], row_ids: Sequence | None = None
) -> tuple[Batch, list[RowError]]:
    """Raw values of ``inputs`` -> ``(typed batch without the bad rows, errors)``.

    >>> import shardforge.features as sf
    >>> fs = sf.FeatureSet([sf.numeric("x", default=0.0)])
    >>> batch, errors = coerce(fs.input_columns, {"x": ["1.5", "", "abc"]})
    >>> batch["x"].tolist(), [e.reason for e in errors]
    ([1.5, nan], ["cannot parse 'abc' as float32"])
    """
    n = _raw_rows(raw)
    batch: Batch = {}
    bad: dict[int, list[tuple[str, Any, str]]] = {}
    for inp in inputs:
        values = raw.get(inp.name)
        if values is None:
            values = np.full(n, None, dtype=object)
        batch[inp.name] = _coerce_input(inp, values, n, bad)
    if not bad:
        return batch, []
    ids = list(range(n)) if row_ids is None else list(row_ids)
    errors = [RowError(ids[i], f, v, r) for i in sorted(bad) for f, v, r in bad[i]]
    keep = np.setdiff1d(np.arange(n), np.fromiter(bad, dtype=np.int64))
    return take_rows(batch, keep), errors



def _raw_rows(raw: dict[str, Any]) -> int:
    sizes = {len(v) for v in raw.values() if v is not None}
    if len(sizes) > 1:
        raise ValueError(f"raw columns disagree on the number of rows: {sorted(sizes)}")
    return sizes.pop() if sizes else 0


def _is_missing(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != object:
        return np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(len(arr), dtype=bool)
    # None, "" and b"" (CSV, JSON null), and float NaN (pandas-style missing): NaN != NaN
    return np.equal(arr, None) | np.equal(arr, "") | np.equal(arr, b"") | np.not_equal(arr, arr)


def _parse_one(value: Any, dtype: str) -> Any:
    """Parse one value (slow path, used to find the bad ones); raises ValueError."""
    if dtype == "bytes":
        if isinstance(value, (bytes, np.bytes_)):
            return bytes(value)
        if isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(
            value, bool
        ):
            return str(value).encode()
        raise ValueError(f"cannot use {type(value).__name__} as bytes")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple, dict, bool)):
        raise ValueError(f"cannot parse {type(value).__name__} as {dtype}")
    if dtype == "float32":
        return float(value)
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise ValueError("not an integer")
        return int(value)
    return int(str(value).strip())


def _parse_many(
    values: np.ndarray, dtype: str, where: np.ndarray, bad: dict, name: str
) -> np.ndarray:
    """Parse an object array; failures go to ``bad`` keyed by ``where`` (row of each value)."""
    np_dtype = {"float32": np.float64, "int64": np.int64, "bytes": object}[dtype]
    if dtype == "bytes":
        try:
            out = np.empty(len(values), dtype=object)
            out[:] = [v.encode() if type(v) is str else v for v in values]
            if all(type(v) is bytes for v in out):
                return out
        except AttributeError:
            pass
    elif values.dtype != object:
        return values.astype(np_dtype)
    else:
        try:
            out = values.astype(np_dtype)
            if dtype == "float32" or np.array_equal(
                out.astype(np.float64), values.astype(np.float64)
            ):
                return out
        except (ValueError, TypeError, OverflowError):
            pass
    out = (
        np.zeros(len(values), dtype=np_dtype)
        if dtype != "bytes"
        else np.full(len(values), b"", object)
    )
    for i, v in enumerate(values):
        try:
            out[i] = _parse_one(v, dtype)
        except (ValueError, TypeError, OverflowError):
            bad.setdefault(int(where[i]), []).append((name, v, f"cannot parse {v!r} as {dtype}"))
    return out


def _coerce_input(inp: Input, values: Any, n: int, bad: dict) -> np.ndarray | Ragged:
    if inp.multivalued:
        return _coerce_multivalued(inp, values, n, bad)
    if inp.shape:
        return _coerce_fixed(inp, values, n, bad)
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if arr.dtype.kind in "U S":
        arr = arr.astype(object)
    missing = _is_missing(arr)
    rows = np.arange(n)
    present = ~missing
    out = np.empty(n, dtype={"float32": np.float64, "int64": np.int64, "bytes": object}[inp.dtype])
    out[present] = _parse_many(arr[present], inp.dtype, rows[present], bad, inp.name)
    if missing.any():
        if inp.default is None:
            for i in np.nonzero(missing)[0].tolist():
                bad.setdefault(i, []).append((inp.name, None, "missing value and no default"))
            fill = np.nan if inp.dtype == "float32" else (0 if inp.dtype == "int64" else b"")
        else:
            # Floats keep NaN as the missing marker: the transform fills the default, and the
            # analyzers count it as missing instead of learning statistics from it.
            fill = np.nan if inp.dtype == "float32" else inp.default
        out[missing] = fill
    return out.astype(np.float32) if inp.dtype == "float32" else out


def _coerce_fixed(inp: Input, values: Any, n: int, bad: dict) -> np.ndarray:
    size = int(np.prod(inp.shape))
    dtype = {"float32": np.float32, "int64": np.int64, "bytes": object}[inp.dtype]
    out = (
        np.zeros((n, size), dtype=dtype)
        if inp.dtype != "bytes"
        else np.full((n, size), b"", object)
    )
    for i, v in enumerate(values):
        if v is None or (isinstance(v, (str, bytes)) and not v):
            if inp.default is None:
                bad.setdefault(i, []).append((inp.name, v, "missing value and no default"))
            else:
                out[i] = (
                    np.nan
                    if inp.dtype == "float32"
                    else np.broadcast_to(np.asarray(inp.default), size)
                )
            continue
        flat = np.ravel(np.asarray(v, dtype=object))
        if len(flat) != size:
            bad.setdefault(i, []).append(
                (inp.name, v, f"expected {size} values (shape {inp.shape}), got {len(flat)}")
            )
            continue
        before = len(bad.get(i, []))
        parsed = _parse_many(flat, inp.dtype, np.full(size, i), bad, inp.name)
        if len(bad.get(i, [])) == before:
            out[i] = parsed
    return out.reshape((n, *inp.shape))


def _coerce_multivalued(inp: Input, values: Any, n: int, bad: dict) -> Ragged:
    if isinstance(values, Ragged):
        return values
    rows = [
        [] if v is None else list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
        for v in values
    ]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n)
    splits = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=splits[1:])
    flat = np.empty(int(splits[-1]), dtype=object)
    flat[:] = [v for r in rows for v in r]
    where = np.repeat(np.arange(n), lengths)
    missing = _is_missing(flat) if len(flat) else np.zeros(0, bool)
    for i in np.unique(where[missing]).tolist():
        bad.setdefault(int(i), []).append((inp.name, values[i], "missing value inside a list"))
    parsed = _parse_many(
        np.where(missing, "0" if inp.dtype != "bytes" else b"", flat).astype(object),
        inp.dtype,
        where,
        bad,
        inp.name,
    )
    if inp.dtype == "float32":
        parsed = parsed.astype(np.float32)
    return Ragged(parsed, splits)
