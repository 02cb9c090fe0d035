"""Raw values -> typed input batches: the one place where inputs are parsed and checked.

``FeatureSet.coerce`` delegates here. Rows with a value that does not parse, or a missing required
value, leave the batch and come back as :class:`~shardforge.features.column.RowError`\\ s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from shardforge.features.column import Input, RowError
from shardforge.records.spec import Batch, Ragged, take_rows

NON_FINITE = ("error", "missing")
_F32_MAX = float(np.finfo(np.float32).max)


def coerce(
    inputs: Iterable[Input], raw: dict[str, Any], row_ids: Sequence | None = None,
    *, non_finite: str = "error",
) -> tuple[Batch, list[RowError]]:
    """Raw values of ``inputs`` -> ``(typed batch without the bad rows, errors)``.

    Raw columns are Python sequences, numpy arrays, Arrow arrays (parsed in compiled code: CSV
    bytes, typed JSON or Parquet columns) or ``Ragged`` value lists (decoded tf.Examples).
    ``non_finite`` is the policy for a float input that is infinite or beyond float32's range
    (``inf``, ``1e39``, JSON ``Infinity``): ``"error"`` rejects the row, ``"missing"`` treats
    the value as missing. Either way it never reaches a learned statistic. In a multivalued
    input a non-finite value always rejects the row.

    >>> import shardforge.features as sf
    >>> fs = sf.FeatureSet([sf.numeric("x", default=0.0)])
    >>> batch, errors = coerce(fs.input_columns, {"x": ["1.5", "", "abc"]})
    >>> batch["x"].tolist(), [e.reason for e in errors]
    ([1.5, nan], ["cannot parse 'abc' as float32"])
    """
    if non_finite not in NON_FINITE:
        raise ValueError(f"non_finite={non_finite!r}; expected one of {NON_FINITE}")
    n = _raw_rows(raw)
    batch: Batch = {}
    bad: dict[int, list[tuple[str, Any, str]]] = {}
    for inp in inputs:
        values = raw.get(inp.name)
        if values is None:
            values = np.full(n, None, dtype=object)
        batch[inp.name] = _coerce_input(inp, values, n, bad, non_finite)
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


def _parse_reason(value: Any, dtype: str) -> str:
    if isinstance(value, (list, tuple)):
        return f"expected one {dtype} value, got a list of {len(value)}"
    if isinstance(value, dict):
        return f"expected one {dtype} value, got an object"
    return f"cannot parse {value!r} as {dtype}"


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
            bad.setdefault(int(where[i]), []).append((name, v, _parse_reason(v, dtype)))
    return out


def _coerce_input(
    inp: Input, values: Any, n: int, bad: dict, non_finite: str = "error"
) -> np.ndarray | Ragged:
    if inp.multivalued:
        return _coerce_multivalued(inp, values, n, bad)
    if inp.shape:
        return _coerce_fixed(inp, _as_rows(values), n, bad)
    fast = _fast_scalar(inp, values, n, bad)
    if fast is not None:
        out, missing = fast
    else:
        arr = _object_array(values)
        missing = _is_missing(arr)
        rows = np.arange(n)
        present = ~missing
        out = np.empty(n, dtype=_NP_DTYPE[inp.dtype])
        out[present] = _parse_many(arr[present], inp.dtype, rows[present], bad, inp.name)
    if inp.dtype == "float32":
        missing = _check_finite(inp.name, out, missing, bad, non_finite)
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


_NP_DTYPE = {"float32": np.float64, "int64": np.int64, "bytes": object}


def _check_finite(name: str, out: np.ndarray, missing: np.ndarray, bad: dict,
                  non_finite: str) -> np.ndarray:
    """Rows whose present value is infinite or overflows float32 (NaN is missing already)."""
    with np.errstate(invalid="ignore"):
        over = ~missing & (np.abs(out) > _F32_MAX)
    if not over.any():
        return missing
    values = out[over]
    out[over] = np.nan  # never cast to float32 (or learned from), whatever the policy
    if non_finite == "missing":
        return missing | over
    for i, v in zip(np.flatnonzero(over).tolist(), values.tolist()):
        bad.setdefault(i, []).append((name, v, (
            f"non-finite value {v!r} (beyond float32); pass non_finite='missing' "
            "(--non-finite missing) to treat such values as missing")))
    return missing


def _is_arrow(values: Any) -> bool:
    return type(values).__module__.startswith("pyarrow")


def _object_array(values: Any) -> np.ndarray:
    """A 1-D object array of the raw values (never 2-D: rows that are lists stay lists)."""
    if _is_arrow(values):
        values = _arrow_pylist(values)
    elif isinstance(values, Ragged):
        values = values.to_list()
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values.astype(object) if values.dtype.kind in "US" else values
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = v
    return arr


def _arrow_pylist(values: Any) -> list:
    """Python values of an Arrow array; an empty CSV field (``b""``) is missing."""
    import pyarrow as pa

    out = values.to_pylist()
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        return [None if v == b"" else v for v in out]
    return out


def _as_rows(values: Any) -> Any:
    if _is_arrow(values):
        return _arrow_pylist(values)
    if isinstance(values, Ragged):
        return [None if not len(r) else r for r in values.to_list()]
    return values


def _arrow_ragged(arr, dtype: str) -> Ragged | None:
    """An Arrow list array as ``Ragged`` of ``dtype`` values (``None``: only the slow path can
    type them); a null list is an empty row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    flat = arr.flatten()
    if flat.null_count:
        return None
    try:
        if dtype == "bytes":
            if not (pa.types.is_binary(flat.type) or pa.types.is_string(flat.type)):
                return None
            values = pc.cast(flat, pa.binary()).to_numpy(zero_copy_only=False)
        elif pa.types.is_integer(flat.type) or (dtype == "float32"
                                                 and pa.types.is_floating(flat.type)):
            target = pa.float64() if dtype == "float32" else pa.int64()
            values = pc.cast(flat, target).to_numpy(zero_copy_only=False)
        else:
            return None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy()
    splits = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=splits[1:])
    return Ragged(values, splits)


def _fast_scalar(inp: Input, values: Any, n: int, bad: dict):
    """``(values, missing)`` of a scalar input parsed without a Python object per value, or
    ``None`` when only the slow path can say which values are bad."""
    if isinstance(values, Ragged):
        lengths = values.row_lengths()
        for i in np.flatnonzero(lengths > 1).tolist():
            bad.setdefault(i, []).append(
                (inp.name, values[i].tolist(), f"expected one value, got {int(lengths[i])}"))
        missing = lengths == 0
        first = np.minimum(values.row_splits[:-1], max(len(values.values) - 1, 0))
        if inp.dtype == "bytes":
            out = np.full(n, b"", dtype=object)
        else:
            out = np.zeros(n, dtype=_NP_DTYPE[inp.dtype])
        if len(values.values):
            out[~missing] = values.values[first[~missing]]
        return out, missing
    if not _is_arrow(values):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        ragged = _arrow_ragged(arr, inp.dtype)
        return None if ragged is None else _fast_scalar(inp, ragged, n, bad)
    textual = pa.types.is_binary(t) or pa.types.is_string(t) or pa.types.is_large_binary(
        t) or pa.types.is_large_string(t)
    null = arr.is_null().to_numpy(zero_copy_only=False)
    try:
        if inp.dtype == "bytes":
            if not (textual or pa.types.is_integer(t)):
                return None
            out = pc.cast(pc.cast(arr, pa.string()) if not textual else arr,
                          pa.binary()).to_numpy(zero_copy_only=False, writable=True)
            missing = null | (pc.binary_length(arr).fill_null(0).to_numpy() == 0 if textual
                              else null)
            return out, missing
        target = pa.float64() if inp.dtype == "float32" else pa.int64()
        if textual:
            missing = null | (pc.binary_length(arr).fill_null(0).to_numpy() == 0)
            text = pc.cast(arr, pa.string())
            text = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text)
            parsed = pc.cast(text, target)
        elif pa.types.is_floating(t) or pa.types.is_integer(t):
            missing = null
            if inp.dtype == "int64" and pa.types.is_floating(t):
                return None  # only the slow path tells 3.0 from 3.5
            parsed = pc.cast(arr, target)
        else:
            return None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if inp.dtype == "float32":
        out = parsed.to_numpy(zero_copy_only=False, writable=True)
        return out, missing | np.isnan(out)
    return parsed.fill_null(0).to_numpy(zero_copy_only=False, writable=True), missing


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
        if inp.dtype == "float32":
            _check_list_finite(inp.name, values, bad)
        return values
    values = _as_rows(values)
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
    if not len(flat):
        missing = np.zeros(0, bool)
    elif inp.dtype == "bytes":
        # an empty string is a value of a bytes list, as in a tf.Example BytesList (a decoded
        # shard keeps it) and tf.Transform's VarLenFeature; None / NaN are still missing
        missing = np.equal(flat, None) | np.not_equal(flat, flat)
    else:
        missing = _is_missing(flat)
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
        _check_list_finite(inp.name, Ragged(parsed, splits), bad)
        parsed = parsed.astype(np.float32)
    return Ragged(parsed, splits)


def _check_list_finite(name: str, values: Ragged, bad: dict) -> None:
    flat = np.asarray(values.values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        over = np.abs(flat) > _F32_MAX
    if over.any():
        where = np.repeat(np.arange(len(values)), values.row_lengths())
        for i in np.unique(where[over]).tolist():
            bad.setdefault(int(i), []).append(
                (name, values[i].tolist(), "non-finite value in a list (beyond float32)"))
