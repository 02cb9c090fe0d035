"""Categorical columns: int64 ids from a vocabulary, a hash, the values themselves; weights.

Each reads a raw input (built from ``key``, ``dtype``, ``multivalued``, ``default``) or another
column's output (a string op, e.g. ``split`` or ``join``), and outputs int64 ids in
``[0, num_buckets)`` (negative = no id), one per row or a varlen list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from shardforge.features.analyzers import FixedVocabulary, Vocabulary
from shardforge.features.column import (
    Column,
    Input,
    Output,
    WithErrors,
    as_bytes,
    check_int,
    check_name,
    flat,
    rows_of,
    wrap,
)
from shardforge.features.hashing import fingerprint64
from shardforge.features.strings import to_strbuf, truncate_index
from shardforge.records.spec import Ragged, _normalize_dtype


class CategoricalColumn(Column):
    """Base of every column whose output is int64 ids (what ``embedding``, ``indicator``,
    ``crossed`` and ``weighted_categorical`` take)."""

    @property
    def varlen(self) -> bool:
        """Whether the ids are a varlen list per row (known when declared)."""
        raise NotImplementedError

    def num_buckets(self, state: dict[str, Any]) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class LookupColumn(CategoricalColumn):
    """Base of the id columns mapping each value of one source to an id.

    ``sequence=True`` marks varlen ids whose order matters (the FeatureLayer can pad them);
    ``max_length`` keeps the first ids of each row.
    """

    source_input: Input | Column
    name: str
    sequence: bool = False
    max_length: int | None = None

    @property
    def varlen(self) -> bool:
        src = self.source_input
        if isinstance(src, Input):
            return src.multivalued
        return isinstance(src, CategoricalColumn) and src.varlen or _varlen_strings(src)

    def inputs(self) -> tuple[Input | Column, ...]:
        return (self.source_input,)

    def ids(self, values: Any, state: dict[str, Any]) -> Any:
        """Ids of the flat input values."""
        raise NotImplementedError

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        values_flat, splits = flat(values[0])
        ids = self.ids(values_flat, state)
        if isinstance(ids, WithErrors):
            rows = rows_of(ids.rows, splits)
            return WithErrors(self._truncate(wrap(ids.output, splits)), rows, ids.values,
                              ids.reason, ids.feature)
        return self._truncate(wrap(ids, splits))

    def _truncate(self, ids: Any) -> Any:
        if self.max_length is None or not isinstance(ids, Ragged):
            return ids
        index, splits = truncate_index(ids.row_splits, self.max_length)
        return Ragged(ids.values[index], splits)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.ids(self.num_buckets(state), varlen=inputs[0].varlen,
                          sequence=self.sequence, max_length=self.max_length or 0)


def _varlen_strings(col: Column) -> bool:
    from shardforge.features.strings import NGrams, Split, _StringOp

    if isinstance(col, (Split, NGrams)):
        return True
    if isinstance(col, _StringOp):
        src = col.source_input
        return isinstance(src, Column) and _varlen_strings(src) or (
            isinstance(src, Input) and src.multivalued)
    return False


@dataclass(frozen=True)
class VocabColumn(LookupColumn):
    """Ids from a vocabulary: learned (``tft.compute_and_apply_vocabulary``), listed
    (``categorical_column_with_vocabulary_list``) or read from a file.

    Out-of-vocabulary values get ``vocab_size + Fingerprint64(value) % num_oov_buckets``, or
    ``default_value`` without OOV buckets (TensorFlow's rule).
    """

    dtype: str = "bytes"
    fixed: tuple | None = None  # the vocabulary of a list or file; None = learned
    top_k: int | None = None
    frequency_threshold: int | None = None
    num_oov_buckets: int = 0
    default_value: int = -1
    approximate_capacity: int | None = None
    present_only: bool = False
    column_type: str = "categorical_vocab"
    reads_strbuf = True

    def analyzers(self) -> dict[str, Any]:
        if self.fixed is not None:
            return {"vocab": FixedVocabulary(self.fixed, self.dtype)}
        return {"vocab": Vocabulary(self.top_k, self.frequency_threshold,
                                    self.approximate_capacity, self.dtype)}

    def num_buckets(self, state: dict[str, Any]) -> int:
        return len(state["vocab"]) + self.num_oov_buckets

    def ids(self, values: Any, state: dict[str, Any]) -> np.ndarray:
        return state["vocab"].lookup(values, self.num_oov_buckets, self.default_value)


@dataclass(frozen=True)
class HashColumn(LookupColumn):
    """``Fingerprint64(value) % hash_bucket_size``: ``tf.strings.to_hash_bucket_fast``'s bucket
    (int64 values hashed as their decimal string, like ``categorical_column_with_hash_bucket``).
    """

    hash_bucket_size: int = 1
    column_type = "categorical_hash"
    reads_strbuf = True

    def num_buckets(self, state: dict[str, Any]) -> int:
        return self.hash_bucket_size

    def ids(self, values: Any, state: dict[str, Any]) -> np.ndarray:
        fp = fingerprint64(to_strbuf(values))
        return (fp % np.uint64(self.hash_bucket_size)).astype(np.int64)


@dataclass(frozen=True)
class IdentityColumn(LookupColumn):
    """Integer values used as ids (``categorical_column_with_identity``); values outside
    ``[0, num_buckets)`` become ``default_value``, or are row errors without one."""

    bucket_count: int = 1
    default_value: int | None = None
    column_type = "categorical_identity"

    def num_buckets(self, state: dict[str, Any]) -> int:
        return self.bucket_count

    def ids(self, values: Any, state: dict[str, Any]) -> Any:
        ids = np.asarray(values, dtype=np.int64).copy()
        bad = (ids < 0) | (ids >= self.bucket_count)
        if not bad.any():
            return ids
        if self.default_value is not None:
            ids[bad] = self.default_value
            return ids
        pos = np.flatnonzero(bad)
        bad_values = ids[pos].tolist()
        ids[bad] = 0
        return WithErrors(ids, pos, bad_values,
                          f"id out of range [0, {self.bucket_count}) and no default_value",
                          self.schema_source())


@dataclass(frozen=True)
class WeightedColumn(Column):
    """Float weights aligned with a categorical column's ids
    (``weighted_categorical_column``): the weights feature beside the ids."""

    categorical: CategoricalColumn
    weight_input: Input
    name: str = ""
    column_type = "weighted_categorical"

    def inputs(self) -> tuple[Column | Input, ...]:
        return (self.categorical, self.weight_input)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        ids, w = values
        if not isinstance(ids, Ragged):
            return np.asarray(w, dtype=np.float32)
        if not isinstance(w, Ragged):
            raise TypeError(f"weights {self.weight_input.name!r} of {self.name!r} must be "
                            "Ragged like the ids")
        bad = ids.row_lengths() != w.row_lengths()
        if bad.any():
            rows = np.flatnonzero(bad)
            zeros = Ragged(np.zeros(len(ids.values), np.float32), ids.row_splits)
            return WithErrors(zeros, rows, w.row_lengths()[rows].tolist(),
                              "number of weights differs from the number of ids",
                              self.weight_input.name)
        return Ragged(np.asarray(w.values, np.float32), w.row_splits)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output("weights", "float32", (), inputs[0].varlen,
                      weights_for=self.categorical.name)

    def schema_source(self) -> str:
        return self.weight_input.name

    def written(self) -> tuple[Column, ...]:
        return (self.categorical, self)


# --------------------------------------------------------------------------- factories


def _source(key: str | Column, dtype: str, multivalued: bool, default: Any, what: str
            ) -> Input | Column:
    if isinstance(key, Column):
        return key
    check_name(key, f"{what} key")
    if multivalued:
        if default not in (None, "", b""):
            raise ValueError(f"column {key!r}: a multivalued input has no default "
                             "(missing = no values)")
        return Input(key, dtype, (), True, None)
    return Input(key, dtype, (), False, _default(key, dtype, default))


def _default(key: str, dtype: str, default: Any) -> Any:
    if default is None:
        return None
    if dtype == "bytes":
        return as_bytes(default)
    if default in ("", b""):
        return None  # no declared default for an int input: required
    if isinstance(default, bool) or not isinstance(default, (int, np.integer)):
        raise ValueError(f"column {key!r}: default {default!r} does not match dtype {dtype}")
    return int(default)


def _name(key: str | Column, name: str | None) -> str:
    return name or (key if isinstance(key, str) else key.name)


def _check_oov(key: Any, num_oov_buckets: int, default_value: int) -> None:
    check_int(num_oov_buckets, f"column {key!r}: num_oov_buckets", minimum=0)
    if num_oov_buckets and default_value != -1:
        raise ValueError(f"column {key!r}: can't set both num_oov_buckets={num_oov_buckets} "
                         f"and default_value={default_value} (like TensorFlow)")


def _key_dtype(dtype: str, key: Any) -> str:
    dtype = _normalize_dtype(dtype)
    if dtype == "float32":
        raise ValueError(f"column {key!r}: vocabulary and hash columns take bytes or int64")
    return dtype


def categorical_vocab(
    key: str | Column,
    top_k: int | None = None,
    frequency_threshold: int | None = None,
    num_oov_buckets: int = 0,
    default_value: int = -1,
    dtype: str = "bytes",
    multivalued: bool = False,
    default: Any = "",
    approximate_capacity: int | None = None,
    name: str | None = None,
    present_only: bool = False,
) -> VocabColumn:
    """``tft.compute_and_apply_vocabulary``: a vocabulary learned from the data.

    Order: count descending, ties by the value's bytes descending. Keeps the values with count
    >= ``frequency_threshold``, then the ``top_k`` first (tf.Transform's cut). OOV values get
    ``vocab_size + Fingerprint64(value) % num_oov_buckets``, else ``default_value`` (ignored
    when ``num_oov_buckets > 0``, as tf.Transform ignores it). Empty strings
    and strings with a newline never become entries. ``approximate_capacity=m`` bounds the
    analyzer's memory (Misra-Gries, counts within N/(m+1)). ``key`` may be a column, e.g.
    ``split("query")``.

    >>> country = categorical_vocab("country", top_k=100, num_oov_buckets=1)
    """
    dtype = _key_dtype(dtype, key)
    if top_k is not None:
        check_int(top_k, f"column {key!r}: top_k")
    if frequency_threshold is not None:
        check_int(frequency_threshold, f"column {key!r}: frequency_threshold", minimum=0)
    # tft.compute_and_apply_vocabulary takes both and ignores default_value when there are OOV
    # buckets (the vocabulary_list / _file columns refuse both, like tf.feature_column)
    check_int(num_oov_buckets, f"column {key!r}: num_oov_buckets", minimum=0)
    if approximate_capacity is not None:
        check_int(approximate_capacity, f"column {key!r}: approximate_capacity")
        if top_k is not None and approximate_capacity < top_k:
            raise ValueError(f"column {key!r}: approximate_capacity must be >= top_k")
    src = _source(key, dtype, multivalued, default, "categorical_vocab")
    return VocabColumn(src, _name(key, name), False, None, dtype, None, top_k,
                       frequency_threshold, num_oov_buckets, default_value,
                       approximate_capacity, present_only)


def categorical_vocab_list(
    key: str | Column,
    vocabulary_list: Sequence,
    num_oov_buckets: int = 0,
    default_value: int = -1,
    dtype: str | None = None,
    multivalued: bool = False,
    default: Any = "",
    name: str | None = None,
) -> VocabColumn:
    """A fixed vocabulary (``categorical_column_with_vocabulary_list``); id = list position."""
    vocab = list(vocabulary_list)
    if not vocab:
        raise ValueError(f"column {key!r}: vocabulary_list is empty")
    if dtype is None:
        dtype = "int64" if isinstance(vocab[0], (int, np.integer)) else "bytes"
    dtype = _key_dtype(dtype, key)
    vocab = [int(v) for v in vocab] if dtype == "int64" else [as_bytes(v) for v in vocab]
    if len(set(vocab)) != len(vocab):
        dup = next(v for v in vocab if vocab.count(v) > 1)
        raise ValueError(f"column {key!r}: duplicate key {dup!r} in vocabulary_list")
    _check_oov(key, num_oov_buckets, default_value)
    src = _source(key, dtype, multivalued, default, "categorical_vocab_list")
    return VocabColumn(src, _name(key, name), False, None, dtype, tuple(vocab), None, None,
                       num_oov_buckets, default_value, None, False, "categorical_vocab_list")


def categorical_vocab_file(
    key: str | Column,
    vocabulary_file: str,
    vocabulary_size: int | None = None,
    num_oov_buckets: int = 0,
    default_value: int = -1,
    dtype: str = "bytes",
    multivalued: bool = False,
    default: Any = "",
    name: str | None = None,
) -> VocabColumn:
    """A vocabulary file, one value per line (``..._with_vocabulary_file``), read here: the
    feature set and its saved state carry the values."""
    if not os.path.isfile(vocabulary_file):
        raise ValueError(f"column {key!r}: vocabulary_file {vocabulary_file!r} does not exist")
    if vocabulary_size is not None:
        check_int(vocabulary_size, f"column {key!r}: vocabulary_size")
    dtype = _key_dtype(dtype, key)
    with open(vocabulary_file, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [line.rstrip(b"\r") for line in lines]
    if vocabulary_size is not None:
        if vocabulary_size > len(lines):
            raise ValueError(f"vocabulary file {vocabulary_file!r} has {len(lines)} lines "
                             f"< vocabulary_size={vocabulary_size}")
        lines = lines[:vocabulary_size]
    vocab = tuple(int(v) for v in lines) if dtype == "int64" else tuple(lines)
    _check_oov(key, num_oov_buckets, default_value)
    src = _source(key, dtype, multivalued, default, "categorical_vocab_file")
    return VocabColumn(src, _name(key, name), False, None, dtype, vocab, None, None,
                       num_oov_buckets, default_value, None, False, "categorical_vocab_file")


def categorical_hash(
    key: str | Column,
    hash_bucket_size: int,
    dtype: str = "bytes",
    multivalued: bool = False,
    default: Any = "",
    name: str | None = None,
) -> HashColumn:
    """``tf.strings.to_hash_bucket_fast(x, hash_bucket_size)`` of an input or of any string
    column (``categorical_column_with_hash_bucket``).

    >>> cross = categorical_hash(join(["country", as_string(age)], "_"), 1000)  # doctest: +SKIP
    """
    check_int(hash_bucket_size, f"column {key!r}: hash_bucket_size")
    dtype = _key_dtype(dtype, key)
    src = _source(key, dtype, multivalued, default, "categorical_hash")
    return HashColumn(src, _name(key, name), False, None, int(hash_bucket_size))


def categorical_identity(
    key: str | Column,
    num_buckets: int,
    default_value: int | None = None,
    multivalued: bool = False,
    default: int | None = None,
    name: str | None = None,
) -> IdentityColumn:
    """Integer inputs as ids (``categorical_column_with_identity``)."""
    check_int(num_buckets, f"column {key!r}: num_buckets")
    if default_value is not None and not 0 <= default_value < num_buckets:
        raise ValueError(f"column {key!r}: default_value {default_value} not in "
                         f"[0, {num_buckets})")
    src = _source(key, "int64", multivalued, default, "categorical_identity")
    return IdentityColumn(src, _name(key, name), False, None, int(num_buckets), default_value)


def sequence(categorical: LookupColumn, max_length: int | None = None,
             name: str | None = None) -> LookupColumn:
    """The same varlen categorical column, its ids marked as an ordered sequence (padded
    ``[B, T, D]`` by ``FeatureLayer.sequence``), optionally truncated to ``max_length``."""
    if not isinstance(categorical, LookupColumn) or not categorical.varlen:
        raise ValueError("sequence needs a multivalued categorical column "
                         "(multivalued=True or text)")
    if max_length is not None:
        check_int(max_length, "sequence max_length")
    return replace(categorical, sequence=True, max_length=max_length,
                   name=name or categorical.name)


def weighted_categorical(categorical: CategoricalColumn, weight_feature_key: str,
                         name: str | None = None) -> WeightedColumn:
    """Ids with a float weight each (``weighted_categorical_column``); the weight input must
    have as many values per row as the ids."""
    if not isinstance(categorical, CategoricalColumn):
        raise ValueError("weighted_categorical needs a categorical column")
    check_name(weight_feature_key, "weight_feature_key")
    weights = Input(weight_feature_key, "float32", (), categorical.varlen, None)
    return WeightedColumn(categorical, weights,
                          name or f"{categorical.name}_weighted_by_{weight_feature_key}")
