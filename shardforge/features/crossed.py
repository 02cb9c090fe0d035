"""Crossed columns: ``tf.feature_column.crossed_column`` / ``tf.sparse.cross_hashed``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.categorical import CategoricalColumn
from shardforge.features.column import Column, Output, check_int
from shardforge.features.hashing import StrBuf, cross_hash, fingerprint64
from shardforge.features.numeric import BucketizedColumn
from shardforge.records.spec import Ragged


@dataclass(frozen=True)
class CrossedColumn(CategoricalColumn):
    """Hashed cross of categorical columns and raw inputs.

    Ids equal ``tf.sparse.cross_hashed`` (FingerprintCat64 chain, TensorFlow's default hash
    key): strings enter as their Fingerprint64, ints and ids as themselves; a ``[k]``-shaped
    bucketized column adds ``i * num_buckets`` at position ``i`` (as TensorFlow does).
    String keys name inputs declared by other columns of the feature set.
    """

    keys: tuple[str | CategoricalColumn, ...]
    hash_bucket_size: int
    name: str = ""
    column_type = "crossed"
    reads_strbuf = True

    @property
    def varlen(self) -> bool:  # raw keys are taken as one value a row here
        return any(isinstance(k, CategoricalColumn) and k.varlen for k in self.keys)

    def num_buckets(self, state: dict[str, Any]) -> int:
        return self.hash_bucket_size

    def inputs(self) -> tuple[str | Column, ...]:
        return self.keys

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        cols = [self._key_values(k, v) for k, v in zip(self.keys, values)]
        ids, splits = cross_hash(cols, self.hash_bucket_size)
        varlen = any(isinstance(v, Ragged) or np.ndim(v) > 1 for v in values)
        return Ragged(ids, splits) if varlen else ids

    @staticmethod
    def _key_values(key: Any, value: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(value, Ragged):
            values, splits = value.values, value.row_splits
        else:
            arr = value if isinstance(value, StrBuf) else np.asarray(value)
            width = 1 if isinstance(arr, StrBuf) else math.prod(arr.shape[1:])
            if width > 1:
                arr = arr.reshape(len(arr), width)
                if isinstance(key, BucketizedColumn):
                    arr = arr + np.arange(width) * key.bucket_count
                arr = arr.ravel()
            values = arr
            splits = np.arange(len(value) + 1, dtype=np.int64) * width
        if isinstance(values, StrBuf) or values.dtype == object:
            return fingerprint64(values), splits
        return np.asarray(values, dtype=np.int64).view(np.uint64), splits

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        for key, desc in zip(self.keys, inputs):
            if desc.dtype == "float32":
                raise ValueError(f"crossed column {self.name!r}: input {key!r} must be a bytes "
                                 "or int64 input (bucketize floats first)")
        varlen = any(d.varlen or d.shape for d in inputs)
        return Output.ids(self.hash_bucket_size, varlen=varlen)


def crossed(keys: Sequence[str | CategoricalColumn], hash_bucket_size: int,
            name: str | None = None) -> CrossedColumn:
    """Hashed cross of categorical columns and/or raw input names (``crossed_column``).

    >>> cross = crossed([country, age_buckets], hash_bucket_size=1000)  # doctest: +SKIP
    """
    keys = tuple(keys)
    if len(keys) < 2:
        raise ValueError("crossed needs at least two keys")
    for k in keys:
        if not isinstance(k, (str, CategoricalColumn)):
            raise ValueError(f"crossed keys must be input names or categorical columns, got {k!r}")
    check_int(hash_bucket_size, "crossed hash_bucket_size")
    names = sorted(k if isinstance(k, str) else k.name for k in keys)
    return CrossedColumn(keys, int(hash_bucket_size), name or "_X_".join(names))
