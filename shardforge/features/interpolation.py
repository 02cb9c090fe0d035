"""``tft.apply_buckets_with_interpolation``: a numeric value as its bucket position, linearly
interpolated inside the bucket and normalized to ``[0, 1]`` (robust to outliers, unlike
min-max scaling), with explicit or learned (``tft.quantiles``) boundaries.

>>> price_01 = bucket_interpolated(numeric("price", default=0.0), num_buckets=100)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import Quantiles
from shardforge.features.column import Column, Output, check_int
from shardforge.features.numeric import NumericColumn


def interpolate_buckets(x: np.ndarray, boundaries: Sequence[float]) -> np.ndarray:
    """tf.Transform's ``apply_buckets_with_interpolation`` in float32, its formula step by step:
    bucket ``i`` = the number of boundaries ``<= x``; below the first or from the last boundary
    on, 0 or 1; inside, ``(i - 1 + (x - b[i-1]) / (b[i] - b[i-1])) / (n - 1)`` (0.5 inside a
    zero-width bucket); NaN -> 0.5; one boundary: 0 below it, else 1. Non-finite boundaries
    are dropped first; none left is an error."""
    b = np.asarray(boundaries, dtype=np.float32)
    b = b[np.isfinite(b)]
    if not len(b):
        raise ValueError("apply_buckets_with_interpolation needs at least one finite boundary")
    x = np.asarray(x).astype(np.float32)
    n = len(b)
    idx = np.searchsorted(b, x, side="right")
    if n == 1:
        return np.where(idx == 0, np.float32(0), np.float32(1)).astype(np.float32)
    hi = np.concatenate([b, b[-1:]])[idx]
    lo = np.concatenate([b[:1], b])[idx]
    width = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.where(width == 0, np.float32(0.5), (x - lo) / width)
    interp = np.where((idx == 0) | (idx == n), np.float32(0), inside).astype(np.float32)
    y = (np.maximum(idx - 1, 0).astype(np.float32) + interp) / np.float32(n - 1)
    return np.where(np.isnan(x), np.float32(0.5), y).astype(np.float32)


@dataclass(frozen=True)
class BucketInterpolated(Column):
    """A numeric column through :func:`interpolate_buckets`: float32 in ``[0, 1]``, same
    shape. ``boundaries`` explicit, or ``num_buckets`` learned as ``tft.quantiles`` (exact,
    see :class:`~shardforge.features.analyzers.Quantiles`)."""

    source_input: NumericColumn
    name: str
    boundaries: tuple[float, ...] | None = None
    num_buckets: int = 0
    present_only: bool = False
    column_type = "bucket_interpolated"

    def inputs(self) -> tuple[Column, ...]:
        return (self.source_input,)

    def analyzers(self) -> dict[str, Any]:
        return {} if self.boundaries is not None else {"quantiles": Quantiles(self.num_buckets)}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> np.ndarray:
        b = self.boundaries if self.boundaries is not None else state["quantiles"].values
        return interpolate_buckets(values[0], b)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.numeric(inputs[0].shape)


def bucket_interpolated(source: NumericColumn, boundaries: Sequence[float] | None = None,
                        num_buckets: int | None = None,
                        name: str | None = None) -> BucketInterpolated:
    """``tft.apply_buckets_with_interpolation(x, boundaries)``; ``num_buckets=k`` learns the
    boundaries as ``tft.quantiles(x, k)``.

    >>> age_01 = bucket_interpolated(numeric("age", default=0.0), boundaries=[18, 30, 65])
    """
    if not isinstance(source, NumericColumn):
        raise ValueError(f"bucket_interpolated needs a numeric column, got {source!r}")
    what = f"bucket_interpolated({source.name!r})"
    if (boundaries is None) == (num_buckets is None):
        raise ValueError(f"{what}: give exactly one of boundaries or num_buckets")
    out = name or f"{source.name}_interpolated"
    if boundaries is not None:
        b = tuple(float(v) for v in boundaries)
        finite = [v for v in b if np.isfinite(v)]
        if not finite or any(b2 < b1 for b1, b2 in zip(finite, finite[1:])):
            raise ValueError(f"{what}: boundaries must hold a finite value and be sorted")
        return BucketInterpolated(source, out, boundaries=b)
    k = check_int(num_buckets, f"{what}: num_buckets", minimum=2)
    return BucketInterpolated(source, out, num_buckets=k, present_only=source.present_only)
