"""Per-key and elementwise statistics: ``tft.scale_to_z_score_per_key``,
``tft.scale_to_0_1_per_key``, ``tft.scale_by_min_max_per_key``, ``tft.bucketize_per_key``, and
the ``elementwise=True`` forms of ``scale_to_z_score`` / ``scale_to_0_1`` / ``scale_by_min_max``
/ ``bucketize`` (the key is then the element position), learned in the one analyze pass.

Each key's statistics are :class:`~shardforge.features.analyzers.NumericStats`' exact sums (or
exact :class:`~shardforge.features.analyzers.Quantiles`), so they depend only on the multiset of
(key, value) pairs. The state holds two entries learned from the same accumulator: ``keys`` (a
:class:`Vocab` of the keys in ascending order, with their counts) and ``values`` (each key's
``mean, std, min, max``, or boundaries, in the keys' order, as one flat :class:`Boundaries`).
A key not seen in the analysis maps as tf.Transform maps it: mean 0 and std 0 (the z-score is
``x``), min = max = 0 (the 0-1 scaling is ``sigmoid(x)``), bucket -1.

>>> price_by_country = scale_to_z_score_per_key("price", "country", default=0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import Boundaries, NumericStats, Quantiles, Vocab
from shardforge.features.column import Column, Input, Output, check_int, check_name
from shardforge.features.hashing import StrBuf
from shardforge.features.strings import to_strbuf
from shardforge.records.spec import Ragged

SCALINGS = ("zscore", "minmax")


class _PerKey:
    """An analyzer applied to the values of each key apart. Sees ``(values, keys)`` pairs,
    flat and aligned (keys bytes, or int64 element positions for the elementwise columns).

    ``part="keys"`` extracts the keys (ascending) with their value counts as a :class:`Vocab`;
    ``part="values"`` extracts each key's result flattened (``_row``), in the keys' order, as
    one :class:`Boundaries`. Both are functions of the multiset of pairs only.
    """

    reads_data = True
    inner: Any

    def __init__(self, part: str) -> None:
        if part not in ("keys", "values"):
            raise ValueError(f"{type(self).__name__} part={part!r}; expected 'keys' or 'values'")
        self.part = part

    def create(self) -> dict:
        return {}

    def add_batch(self, acc: dict, values: tuple[np.ndarray, Any]) -> dict:
        x, keys = values
        x = np.asarray(x, dtype=np.float64).ravel()
        objs = to_strbuf(keys).to_objects() if isinstance(keys, StrBuf) else np.asarray(keys)
        if len(objs) != len(x):
            raise ValueError(f"per-key statistics need one key per value, got {len(objs)} keys "
                             f"for {len(x)} values")
        uniq, inverse = np.unique(objs, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        for j, k in enumerate(uniq.tolist()):
            part = x[order[bounds[j]:bounds[j + 1]]]
            n, inner = acc.get(k, (0, None))
            acc[k] = (n + len(part), self.inner.add_batch(
                self.inner.create() if inner is None else inner, part))
        return acc

    def merge(self, accs) -> dict:
        parts: dict[Any, list] = {}
        for acc in accs:
            for k, a in acc.items():
                parts.setdefault(k, []).append(a)
        return {k: (sum(n for n, _ in a), self.inner.merge([i for _, i in a]))
                for k, a in parts.items()}

    def extract(self, acc: dict) -> Vocab | Boundaries:
        keys = sorted(acc)
        if self.part == "keys":
            dtype = "int64" if keys and isinstance(keys[0], int) else "bytes"
            return Vocab(keys, np.asarray([acc[k][0] for k in keys], np.int64), len(keys),
                         dtype=dtype)
        return Boundaries(tuple(v for k in keys for v in self._row(acc[k][1])))

    def _row(self, inner_acc: Any) -> tuple[float, ...]:
        """The flattened result of one key's inner accumulator."""
        raise NotImplementedError


class KeyedStats(_PerKey):
    """``NumericStats`` per key (``tft._mean_and_var_per_key``, ``count_per_key``): ``values``
    holds ``mean, std, min, max`` of each key. Exact per-key sums: the same for any batching
    and merge order.

    >>> an = KeyedStats("values")
    """

    inner = NumericStats()

    def _row(self, inner_acc: Any) -> tuple[float, ...]:
        st = self.inner.extract(inner_acc)
        return (st.mean, st.std, st.min, st.max)


class KeyedQuantiles(_PerKey):
    """``Quantiles(num_buckets)`` per key (``tft.bucketize_per_key``): ``values`` holds the
    ``num_buckets - 1`` boundaries of each key (exact, see
    :class:`~shardforge.features.analyzers.Quantiles`).

    >>> an = KeyedQuantiles("values", num_buckets=4)
    """

    def __init__(self, part: str, num_buckets: int) -> None:
        super().__init__(part)
        self.inner = Quantiles(num_buckets)

    def _row(self, inner_acc: Any) -> tuple[float, ...]:
        return self.inner.extract(inner_acc).values


def per_key_rows(state: dict[str, Any], keys: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(key ids, [n, width] float64 rows)``: each key's flattened result (``state["values"]``)
    and its id in ``state["keys"]``; a key the analysis did not see has id -1 and a row of
    zeros (what tf.Transform maps it to)."""
    table = np.asarray(state["values"].values, dtype=np.float64).reshape(-1, width)
    n = len(keys)
    ids = state["keys"].lookup(keys) if len(table) else np.full(n, -1, np.int64)
    table = np.vstack([table, np.zeros((1, width))])  # row -1: the unseen key
    return ids, table[ids]


def _pairs(values: Sequence[Any], elementwise: bool) -> tuple[np.ndarray, Any]:
    """Flat float64 values and one key per value: the element position (``elementwise``), or
    the key input (a row's key repeated over its values, or a list aligned with them)."""
    x = values[0]
    xv = np.asarray(x.values if isinstance(x, Ragged) else x, dtype=np.float64)
    per_row = xv.reshape(len(xv), -1).shape[1] if not isinstance(x, Ragged) and xv.ndim else 1
    xv = xv.ravel()
    if elementwise:
        if isinstance(x, Ragged):
            raise ValueError("elementwise statistics need a fixed-shape value, not a varlen one "
                             "(as tf.Transform)")
        return xv, np.tile(np.arange(per_row, dtype=np.int64), len(xv) // max(per_row, 1))
    keys = values[1]
    if isinstance(keys, Ragged):
        return xv, keys.values
    kv = to_strbuf(keys).to_objects() if isinstance(keys, StrBuf) else np.asarray(keys)
    if isinstance(x, Ragged):
        return xv, kv[np.repeat(np.arange(len(x)), x.row_lengths())]
    return xv, np.repeat(kv, per_row)


def _reshaped(y: np.ndarray, like: Any) -> Any:
    return Ragged(y, like.row_splits) if isinstance(like, Ragged) else y.reshape(np.shape(like))


@dataclass(frozen=True)
class PerKeyScaled(Column):
    """A numeric value scaled with the statistics of its key (see the module docstring), or of
    its element position when ``key`` is ``None`` (``elementwise=True`` in tf.Transform).

    ``scaling``: ``zscore`` (``(x - mean_k) / std_k``, ``x - mean_k`` when ``std_k`` is 0) or
    ``minmax`` (``(x - min_k) / (max_k - min_k)``, ``sigmoid(x)`` when ``max_k <= min_k``, then
    onto ``output_range``). ``x`` one value per row, a fixed shape or a varlen list; ``key``
    one bytes key per row (shared by the row's values) or a list aligned with ``x``. Output
    float32, shaped like ``x``.
    """

    value: Column | Input
    key: Column | Input | str | None
    scaling: str
    name: str
    output_range: tuple[float, float] = (0.0, 1.0)
    column_type = "per_key_scaled"

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"per-key scaling {self.scaling!r}; expected one of {SCALINGS}")
        lo, hi = self.output_range
        if not lo < hi:
            raise ValueError(f"{self.name!r}: output_range=(lo, hi) needs lo < hi "
                             "(tft.scale_by_min_max_per_key: output_min < output_max)")

    def inputs(self) -> tuple[Column | Input | str, ...]:
        return (self.value,) if self.key is None else (self.value, self.key)

    def undeclared_input(self, name: str) -> Input | None:
        return Input(name, "bytes", (), False, b"") if name == self.key else None

    def analyzers(self) -> dict[str, Any]:
        return {"keys": KeyedStats("keys"), "values": KeyedStats("values")}

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        pairs = _pairs(values, self.key is None)
        return {"keys": pairs, "values": pairs}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        x, keys = _pairs(values, self.key is None)
        _, m = per_key_rows(state, keys, 4)
        if self.scaling == "zscore":
            std = m[:, 1]
            y = np.where(std > 0, (x - m[:, 0]) / np.where(std > 0, std, 1.0), x - m[:, 0])
        else:
            span = m[:, 3] - m[:, 2]
            with np.errstate(over="ignore"):
                sig = 1.0 / (1.0 + np.exp(-x))
            y = np.where(span > 0, (x - m[:, 2]) / np.where(span > 0, span, 1.0), sig)
            lo, hi = self.output_range
            y = y * (hi - lo) + lo
        return _reshaped(y.astype(np.float32), values[0])

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        src = inputs[0]
        if src.varlen:
            return Output("numeric", "float32", (), True, layer="none")
        return Output.numeric(src.shape)


@dataclass(frozen=True)
class PerKeyBucketized(Column):
    """Bucket ids from each key's own quantiles (``tft.bucketize_per_key``), or each element
    position's when ``key`` is ``None`` (``tft.bucketize(x, elementwise=True)``).

    A key's ``num_buckets - 1`` boundaries are the exact quantiles of its values (rank
    ``floor(i * n / num_buckets)``, see :class:`~shardforge.features.analyzers.Quantiles`);
    bucket ``i`` holds ``b[i-1] <= x < b[i]`` compared in float32. A key the analysis did not
    see gets -1, as in tf.Transform. int64 ids, shaped like ``x``.
    """

    value: Column | Input
    key: Column | Input | str | None
    num_buckets: int
    name: str
    column_type = "per_key_bucketized"

    def inputs(self) -> tuple[Column | Input | str, ...]:
        return (self.value,) if self.key is None else (self.value, self.key)

    def undeclared_input(self, name: str) -> Input | None:
        return Input(name, "bytes", (), False, b"") if name == self.key else None

    def analyzers(self) -> dict[str, Any]:
        return {"keys": KeyedQuantiles("keys", self.num_buckets),
                "values": KeyedQuantiles("values", self.num_buckets)}

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        pairs = _pairs(values, self.key is None)
        return {"keys": pairs, "values": pairs}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        x, keys = _pairs(values, self.key is None)
        ids, b = per_key_rows(state, keys, self.num_buckets - 1)
        xf = x.astype(np.float32)[:, None]
        buckets = np.count_nonzero(b.astype(np.float32) <= xf, axis=1).astype(np.int64)
        buckets[np.isnan(xf[:, 0])] = self.num_buckets - 1  # NaN sorts last, as searchsorted
        return _reshaped(np.where(ids < 0, -1, buckets), values[0])

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        src = inputs[0]
        return Output.ids(self.num_buckets, () if src.varlen else src.shape, varlen=src.varlen)


def _value(x: str | Input | Column, default: float | None, what: str) -> Column | Input:
    if isinstance(x, (Column, Input)):
        return x
    check_name(x, f"{what} value")
    return Input(x, "float32", (), False, None if default is None else float(default))


def _key(key: str | Input | Column, what: str) -> str | Input | Column:
    if isinstance(key, str):
        check_name(key, f"{what} key")
    elif not isinstance(key, (Input, Column)):
        raise ValueError(f"{what}: key must be an input name, an Input or a strings column, "
                         f"got {key!r}")
    return key


def _label(x: Any) -> str:
    return x if isinstance(x, str) else x.name


def scale_to_z_score_per_key(x: str | Input | Column, key: str | Input | Column,
                             default: float | None = None,
                             name: str | None = None) -> PerKeyScaled:
    """``tft.scale_to_z_score_per_key(x, key)``: ``(x - mean) / std`` with the mean and
    population std of the values of ``x``'s key (``x - mean`` when that std is 0).

    ``x``: a float input name (``default`` fills a missing value), an ``Input`` or a numeric
    column; ``key``: a bytes input name (missing = ``""``) or a strings column.

    >>> z = scale_to_z_score_per_key("price", "country", default=0.0)
    """
    what = "scale_to_z_score_per_key"
    return PerKeyScaled(_value(x, default, what), _key(key, what), "zscore",
                        name or f"{_label(x)}_z_per_{_label(key)}")


def scale_by_min_max_per_key(x: str | Input | Column, key: str | Input | Column,
                             output_min: float = 0.0, output_max: float = 1.0,
                             default: float | None = None,
                             name: str | None = None) -> PerKeyScaled:
    """``tft.scale_by_min_max_per_key(x, key, output_min, output_max)``: ``x`` scaled from its
    key's ``[min, max]`` onto ``[output_min, output_max]`` (``sigmoid(x)`` mapped the same way
    when the key has one distinct value or was not seen).

    >>> s = scale_by_min_max_per_key("price", "country", -1.0, 1.0, default=0.0)
    """
    what = "scale_by_min_max_per_key"
    return PerKeyScaled(_value(x, default, what), _key(key, what), "minmax",
                        name or f"{_label(x)}_minmax_per_{_label(key)}",
                        (float(output_min), float(output_max)))


def scale_to_0_1_per_key(x: str | Input | Column, key: str | Input | Column,
                         default: float | None = None, name: str | None = None) -> PerKeyScaled:
    """``tft.scale_to_0_1_per_key(x, key)``: ``scale_by_min_max_per_key`` onto ``[0, 1]``.

    >>> s = scale_to_0_1_per_key("price", "country", default=0.0)
    """
    return scale_by_min_max_per_key(x, key, 0.0, 1.0, default,
                                    name or f"{_label(x)}_01_per_{_label(key)}")


def bucketize_per_key(x: str | Input | Column, key: str | Input | Column, num_buckets: int,
                      default: float | None = None,
                      name: str | None = None) -> PerKeyBucketized:
    """``tft.bucketize_per_key(x, key, num_buckets)``: bucket ids from the exact quantiles of
    each key's values (-1 for a key not seen in the analysis).

    >>> b = bucketize_per_key("price", "country", 10, default=0.0)
    """
    what = "bucketize_per_key"
    k = check_int(num_buckets, f"{what}: num_buckets", minimum=2)
    return PerKeyBucketized(_value(x, default, what), _key(key, what), k,
                            name or f"{_label(x)}_bucketized_per_{_label(key)}")


def scale_elementwise(x: Input | Column, normalize: str, output_range: tuple[float, float] = (
        0.0, 1.0), name: str | None = None) -> PerKeyScaled:
    """``tft.scale_to_z_score(x, elementwise=True)`` (``normalize="zscore"``),
    ``tft.scale_to_0_1`` / ``tft.scale_by_min_max(x, lo, hi, elementwise=True)``
    (``normalize="minmax"``, ``output_range=(lo, hi)``): each element position of a
    fixed-shape value scaled with its own statistics.

    >>> z = scale_elementwise(Input("xy", "float32", (2,), default=0.0), "zscore")
    """
    _check_fixed(x, "scale_elementwise")
    return PerKeyScaled(x, None, normalize, name or f"{x.name}_{normalize}_elementwise",
                        (float(output_range[0]), float(output_range[1])))


def bucketize_elementwise(x: Input | Column, num_buckets: int,
                          name: str | None = None) -> PerKeyBucketized:
    """``tft.bucketize(x, num_buckets, elementwise=True)``: each element position of a
    fixed-shape value bucketized by its own exact quantiles.

    >>> b = bucketize_elementwise(Input("xy", "float32", (2,), default=0.0), 4)
    """
    _check_fixed(x, "bucketize_elementwise")
    k = check_int(num_buckets, "bucketize_elementwise: num_buckets", minimum=2)
    return PerKeyBucketized(x, None, k, name or f"{x.name}_bucketized_elementwise")


def _check_fixed(x: Any, what: str) -> None:
    if not isinstance(x, (Input, Column)):
        raise ValueError(f"{what} needs an Input or a numeric column, got {x!r}")
    if isinstance(x, Input) and x.multivalued:
        raise ValueError(f"{what}: {x.name!r} is varlen; elementwise statistics need a fixed "
                         "shape (as tf.Transform)")


__all__ = ["KeyedQuantiles", "KeyedStats", "PerKeyBucketized", "PerKeyScaled",
           "bucketize_elementwise", "bucketize_per_key", "per_key_rows", "scale_by_min_max_per_key",
           "scale_elementwise", "scale_to_0_1_per_key", "scale_to_z_score_per_key"]
