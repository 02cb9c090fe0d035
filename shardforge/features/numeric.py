"""Numeric columns: values with an optional learned or fixed scaling, and bucketized values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import NumericStats, Quantiles
from shardforge.features.categorical import LookupColumn
from shardforge.features.column import Column, Input, Output, WithErrors, check_int, check_name
from shardforge.records.spec import _normalize_dtype

NORMALIZERS = ("none", "zscore", "minmax", "log1p", "clip")


@dataclass(frozen=True)
class NumericColumn(Column):
    """Dense numeric values (``tf.feature_column.numeric_column``), optionally scaled.

    ``normalize``: ``none`` | ``zscore`` (``tft.scale_to_z_score``: (x - mean) / std, x - mean
    when std is 0) | ``minmax`` (``tft.scale_to_0_1``: (x - min) / (max - min), sigmoid(x) when
    max <= min; then mapped onto ``output_range``, ``tft.scale_by_min_max``) | ``log1p`` |
    ``clip`` (to ``clip``).
    Statistics are learned over the filled values (tf.Transform's fill-then-analyze) unless
    ``present_only``. The output is float32 (int64 passes through unscaled).
    """

    source_input: Input | Column
    normalize: str = "none"
    clip: tuple[float, float] | None = None
    name: str = ""
    present_only: bool = False
    output_range: tuple[float, float] = (0.0, 1.0)
    column_type = "numeric"

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZERS:
            raise ValueError(f"numeric column {self.name!r}: normalize={self.normalize!r}; "
                             f"expected one of {NORMALIZERS}")
        if (self.normalize == "clip") != (self.clip is not None):
            raise ValueError(f"numeric column {self.name!r}: normalize='clip' needs "
                             "clip=(lo, hi), and clip= is only used with it")
        if self.clip is not None and not (len(self.clip) == 2 and self.clip[0] <= self.clip[1]):
            raise ValueError(f"numeric column {self.name!r}: clip=(lo, hi) needs lo <= hi")
        if self.output_range != (0.0, 1.0) and self.normalize != "minmax":
            raise ValueError(f"numeric column {self.name!r}: output_range is only used with "
                             "normalize='minmax'")
        if not (len(self.output_range) == 2 and self.output_range[0] < self.output_range[1]):
            raise ValueError(f"numeric column {self.name!r}: output_range=(lo, hi) needs "
                             "lo < hi (like tft.scale_by_min_max)")

    @property
    def dtype(self) -> str:
        inp = self.source_input
        return inp.dtype if isinstance(inp, Input) else "float32"

    def inputs(self) -> tuple[Input | Column, ...]:
        return (self.source_input,)

    def analyzers(self) -> dict[str, Any]:
        if self.normalize not in ("zscore", "minmax"):
            return {}
        return {"stats": NumericStats("int64" if self.dtype == "int64" else "float32")}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        x = values[0]
        if self.normalize == "none":
            return np.asarray(x, np.int64) if self.dtype == "int64" else x.astype(np.float32)
        x = np.asarray(x, dtype=np.float64)
        if self.normalize == "zscore":
            st = state["stats"]
            y = (x - st.mean) / (st.std if st.std > 0 else 1.0)
        elif self.normalize == "minmax":
            st = state["stats"]
            span = st.max - st.min
            # tft.scale_to_0_1: a constant (or empty) column is squashed by a sigmoid instead
            if span > 0:
                y = (x - st.min) / span
            else:
                with np.errstate(over="ignore"):  # sigmoid(-1e9) = 1 / inf = 0 is right
                    y = 1.0 / (1.0 + np.exp(-x))
            lo, hi = self.output_range
            if (lo, hi) != (0.0, 1.0):
                y = y * (hi - lo) + lo
        elif self.normalize == "clip":
            y = np.clip(x, self.clip[0], self.clip[1])
        else:
            bad = x <= -1
            y = np.log1p(np.where(bad, 0.0, x))
            if bad.any():
                rows = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
                return WithErrors(y.astype(np.float32), rows,
                                  x.reshape(len(x), -1)[rows, 0].tolist(),
                                  "log1p needs values > -1", self.schema_source())
        return y.astype(np.float32)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        dtype = "int64" if self.dtype == "int64" and self.normalize == "none" else "float32"
        return Output.numeric(inputs[0].shape, dtype)


def numeric(
    key: str | Column,
    dtype: str = "float32",
    shape: Sequence[int] = (),
    default: Any = None,
    normalize: str = "none",
    clip: tuple[float, float] | None = None,
    name: str | None = None,
    present_only: bool = False,
    output_range: tuple[float, float] = (0.0, 1.0),
) -> NumericColumn:
    """A numeric input (or a numeric column's output), optionally scaled.

    ``default`` fills a missing value before anything sees it (``None``: required);
    ``present_only=True`` learns the statistics over present values only;
    ``output_range=(lo, hi)`` with ``normalize="minmax"`` is ``tft.scale_by_min_max(x, lo, hi)``.

    >>> price = numeric("price", default=0.0, normalize="zscore")
    >>> rating = numeric("rating", default=0.0, normalize="minmax", output_range=(-1.0, 1.0))
    """
    out_range = (float(output_range[0]), float(output_range[1]))
    if isinstance(key, Column):
        return NumericColumn(key, normalize, _clip(clip), name or f"{key.name}_{normalize}",
                             present_only, out_range)
    check_name(key, "numeric key")
    dtype = _normalize_dtype(dtype)
    if dtype == "bytes":
        raise ValueError(f"numeric column {key!r}: dtype must be float32 or int64, not bytes")
    shape = tuple(check_int(d, f"numeric column {key!r} shape entry") for d in shape)
    if default is not None:
        arr = np.asarray(default, dtype=np.float64)
        if arr.shape not in ((), shape):
            raise ValueError(f"numeric column {key!r}: default of shape {arr.shape} != {shape}")
        if np.isnan(arr).any():
            raise ValueError(f"numeric column {key!r}: default must not be NaN")
        if arr.shape:
            default = tuple(arr.ravel().tolist())
        else:
            default = float(default) if dtype == "float32" else int(default)
    return NumericColumn(Input(key, dtype, shape, False, default), normalize, _clip(clip),
                         name or key, present_only, out_range)


def _clip(clip: Any) -> tuple[float, float] | None:
    return None if clip is None else (float(clip[0]), float(clip[1]))


@dataclass(frozen=True)
class BucketizedColumn(LookupColumn):
    """Bucket ids of a numeric column (``bucketized_column`` / ``tft.bucketize``).

    Bucket ``i`` holds ``boundaries[i-1] <= x < boundaries[i]``, compared in float32 like
    TensorFlow's ``Bucketize`` op; int64 values against explicit integer boundaries compare as
    integers (``tft.apply_buckets`` of int64 values and int boundaries). Learned boundaries are
    ``tft.quantiles``'s (see :class:`~shardforge.features.analyzers.Quantiles`), duplicates
    kept, so the column has ``bucket_count`` ids whatever the data. One-hot in the
    FeatureLayer when listed directly.
    """

    boundaries: tuple[float, ...] | None = None
    bucket_count: int = 0
    present_only: bool = False
    column_type = "bucketized"

    def analyzers(self) -> dict[str, Any]:
        if self.boundaries is not None:
            return {}
        return {"quantiles": Quantiles(self.bucket_count)}

    def bucket_boundaries(self, state: dict[str, Any]) -> tuple[float, ...]:
        return self.boundaries if self.boundaries is not None else state["quantiles"].values

    def num_buckets(self, state: dict[str, Any] | None = None) -> int:
        return self.bucket_count

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> np.ndarray:
        src, b = self.source_input, self.boundaries
        if (b is not None and src.dtype == "int64" and src.normalize == "none"
                and all(isinstance(v, int) for v in b)):
            # tft.apply_buckets casts to the wider of the two dtypes: int64 against int64
            return np.searchsorted(np.array(b, dtype=np.int64), np.asarray(values[0], np.int64),
                                   side="right")
        # TensorFlow's CPU kernels flush subnormals to zero, so a subnormal counts as 0 too.
        x = _flush_subnormals(np.asarray(values[0]).astype(np.float32))
        b = _flush_subnormals(np.asarray(self.bucket_boundaries(state), dtype=np.float32))
        return np.searchsorted(b, x, side="right").astype(np.int64)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.ids(self.bucket_count, inputs[0].shape, one_hot=True)


def _flush_subnormals(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < np.finfo(np.float32).tiny, np.float32(0), x)


def bucketized(
    source_column: Column,
    boundaries: Sequence[float] | None = None,
    num_buckets: int | None = None,
    name: str | None = None,
) -> BucketizedColumn:
    """Bucket ids of a numeric column, ``boundaries`` explicit or ``num_buckets`` learned.

    >>> age = bucketized(numeric("age", default=0), num_buckets=10)
    """
    if not isinstance(source_column, NumericColumn):
        raise ValueError(f"bucketized needs a numeric column, got {type(source_column).__name__}")
    what = f"bucketized({source_column.name!r})"
    if (boundaries is None) == (num_buckets is None):
        raise ValueError(f"{what}: give exactly one of boundaries or num_buckets")
    if boundaries is not None:
        # integers stay integers, so int64 values compare with them as integers
        b = tuple(int(x) if isinstance(x, (int, np.integer)) else float(x) for x in boundaries)
        if not b or any(b2 <= b1 for b1, b2 in zip(b, b[1:])):
            raise ValueError(f"{what}: boundaries must be non-empty and strictly increasing")
        return BucketizedColumn(source_column, name or f"{source_column.name}_bucketized",
                                boundaries=b, bucket_count=len(b) + 1)
    check_int(num_buckets, f"{what}: num_buckets", minimum=2)
    return BucketizedColumn(source_column, name or f"{source_column.name}_bucketized",
                            bucket_count=int(num_buckets), present_only=source_column.present_only)
