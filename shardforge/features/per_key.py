"""Per-key scaling: ``tft.scale_to_z_score_per_key``, ``tft.scale_to_0_1_per_key``,
``tft.scale_by_min_max_per_key``, with the per-key statistics learned in the one analyze pass.

Each key's statistics are :class:`~shardforge.features.analyzers.NumericStats`' exact sums, so
they depend only on the multiset of (key, value) pairs. The state holds two entries learned from
the same accumulator: ``keys`` (a :class:`Vocab` of the keys in byte order, with their counts)
and ``moments`` (``mean, std, min, max`` per key, in the keys' order, as a flat
:class:`Boundaries`). A key not seen in the analysis maps as tf.Transform maps it: mean 0 and
std 0 (the z-score is ``x``), min = max = 0 (the 0-1 scaling is ``sigmoid(x)``).

>>> price_by_country = scale_to_z_score_per_key("price", "country", default=0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import Boundaries, NumericStats, Vocab
from shardforge.features.column import Column, Input, Output, check_name
from shardforge.features.hashing import StrBuf
from shardforge.features.strings import to_strbuf
from shardforge.records.spec import Ragged

SCALINGS = ("zscore", "minmax")
_STATS = NumericStats()


class KeyedStats:
    """``NumericStats`` per key: the analyzer behind the ``*_per_key`` scalings (and
    ``tft.count_per_key``'s counts). Sees ``(values, keys)`` pairs, flat and aligned.

    ``part="keys"`` extracts the keys (byte order) with their value counts as a :class:`Vocab`;
    ``part="moments"`` extracts ``mean, std, min, max`` of each key, in that order, flattened
    into a :class:`Boundaries`. Exact per-key sums: the same for any batching and merge order.
    """

    reads_data = True

    def __init__(self, part: str) -> None:
        if part not in ("keys", "moments"):
            raise ValueError(f"KeyedStats part={part!r}; expected 'keys' or 'moments'")
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
        uniq, inverse = np.unique(objs.astype(object), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        for j, k in enumerate(uniq.tolist()):
            part = x[order[bounds[j]:bounds[j + 1]]]
            acc[k] = _STATS.add_batch(acc.get(k) or _STATS.create(), part)
        return acc

    def merge(self, accs) -> dict:
        parts: dict[Any, list] = {}
        for acc in accs:
            for k, a in acc.items():
                parts.setdefault(k, []).append(a)
        return {k: _STATS.merge(a) for k, a in parts.items()}

    def extract(self, acc: dict) -> Vocab | Boundaries:
        keys = sorted(acc)
        stats = [_STATS.extract(acc[k]) for k in keys]
        if self.part == "keys":
            dtype = "int64" if keys and isinstance(keys[0], int) else "bytes"
            return Vocab(keys, np.asarray([s.count for s in stats], np.int64), len(keys),
                         dtype=dtype)
        return Boundaries(tuple(v for s in stats for v in (s.mean, s.std, s.min, s.max)))


def per_key_moments(state: dict[str, Any], keys: Any) -> np.ndarray:
    """``[n, 4]`` float64 ``mean, std, min, max`` of each key's values (zeros for a key the
    analysis did not see, as tf.Transform maps it)."""
    table = np.asarray(state["moments"].values, dtype=np.float64).reshape(-1, 4)
    ids = state["keys"].lookup(keys) if len(table) else np.full(len(keys), -1, np.int64)
    table = np.vstack([table, np.zeros((1, 4))])  # row -1: the unseen key
    return table[ids]


@dataclass(frozen=True)
class PerKeyScaled(Column):
    """A numeric value scaled with the statistics of its key (see the module docstring).

    ``scaling``: ``zscore`` (``(x - mean_k) / std_k``, ``x - mean_k`` when ``std_k`` is 0) or
    ``minmax`` (``(x - min_k) / (max_k - min_k)``, ``sigmoid(x)`` when ``max_k <= min_k``, then
    onto ``output_range``). ``x`` one value per row or a varlen list; ``key`` one bytes key per
    row (shared by the row's values) or a list aligned with ``x``. Output float32.
    """

    value: Column | Input
    key: Column | Input | str
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
        return (self.value, self.key)

    def undeclared_input(self, name: str) -> Input | None:
        return Input(name, "bytes", (), False, b"") if name == self.key else None

    def analyzers(self) -> dict[str, Any]:
        return {"keys": KeyedStats("keys"), "moments": KeyedStats("moments")}

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        pair = _aligned(*values)
        return {"keys": pair, "moments": pair}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        x, keys = _aligned(*values)
        m = per_key_moments(state, keys)
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
        y = y.astype(np.float32)
        value = values[0]
        return Ragged(y, value.row_splits) if isinstance(value, Ragged) else y.reshape(
            np.shape(value))

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        src = inputs[0]
        if src.varlen:
            return Output("numeric", "float32", (), True, layer="none")
        return Output.numeric(src.shape)


def _aligned(x: Any, keys: Any) -> tuple[np.ndarray, Any]:
    """Flat float64 values and one key per value (a row's key repeated over its values)."""
    xv = np.asarray(x.values if isinstance(x, Ragged) else x, dtype=np.float64)
    per_row = xv.reshape(len(xv), -1).shape[1] if not isinstance(x, Ragged) and xv.ndim else 1
    xv = xv.ravel()
    if isinstance(keys, Ragged):
        return xv, keys.values
    kv = to_strbuf(keys).to_objects() if isinstance(keys, StrBuf) else np.asarray(keys)
    if isinstance(x, Ragged):
        return xv, kv[np.repeat(np.arange(len(x)), x.row_lengths())]
    return xv, np.repeat(kv, per_row)


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


__all__ = ["KeyedStats", "PerKeyScaled", "per_key_moments",
           "scale_by_min_max_per_key", "scale_to_0_1_per_key", "scale_to_z_score_per_key"]
