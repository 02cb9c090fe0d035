"""Feature column declarations, FeatureColumn style (``tf.feature_column`` names where they exist).

A column declares the raw inputs it reads, the analyzers it needs, how it turns a columnar batch
plus its learned state into output features (vectorized), and how the PyTorch ``FeatureLayer``
consumes those outputs. Invalid options raise ``ValueError`` here, at declaration time.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import NumericStats, Quantiles, Vocabulary, bucket_boundaries
from shardforge.features.hashing import (
    StrBuf,
    StringTable,
    cross_hash,
    fingerprint64,
    int_to_strbuf,
)
from shardforge.features.text import TOKENIZERS, tokenize, truncate_index
from shardforge.protos import schema_pb2
from shardforge.records.spec import Ragged, _normalize_dtype

NORMALIZERS = ("none", "zscore", "minmax", "log1p", "clip")
COMBINERS = {"mean": schema_pb2.MEAN, "sum": schema_pb2.SUM, "sqrtn": schema_pb2.SQRTN}
_PROTO_DTYPE = {"int64": schema_pb2.INT64, "float32": schema_pb2.FLOAT32, "bytes": schema_pb2.BYTES}


@dataclass(frozen=True)
class Input:
    """A raw input column: what ``fs.coerce`` parses and ``fs.transform`` reads.

    ``default=None`` on a single-valued input makes it required (a missing value is a RowError);
    a multivalued input is missing as an empty list.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    multivalued: bool = False
    default: Any = None

    @property
    def required(self) -> bool:
        return self.default is None and not self.multivalued


class Ctx:
    """Per-batch transform context: the batch, the state, memoized ids, and per-row failures."""

    def __init__(self, batch: dict, state: dict, n: int) -> None:
        self.batch, self.state, self.n = batch, state, n
        self.memo: dict[str, Any] = {}
        self.failures: list[tuple[str, np.ndarray, Any, str]] = []

    def get(self, inp: Input, column: str) -> Any:
        try:
            return self.batch[inp.name]
        except KeyError:
            raise KeyError(
                f"column {column!r} reads input {inp.name!r}, which the batch lacks "
                f"(batch has {sorted(self.batch)})"
            ) from None

    def fail(self, feature: str, rows: np.ndarray, values: Any, reason: str) -> None:
        """Mark ``rows`` (int indices) as failed; ``values`` aligned with rows."""
        self.failures.append((feature, np.asarray(rows, dtype=np.int64), values, reason))


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    return name


def _check_positive(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class Column:
    """Base of every column. Subclasses set ``column_type`` and implement the hooks below."""

    column_type = "column"
    name: str

    @property
    def key(self) -> str:
        """Unique name of the column's learned state inside a feature set."""
        return self.name

    def inputs(self) -> list[Input]:
        return []

    def children(self) -> list[Column]:
        return []

    def analyzers(self) -> dict[str, Any]:
        return {}

    def analyze_values(self, batch: dict, key: str) -> Any:
        raise NotImplementedError

    def finalize(self, results: dict[str, dict]) -> dict:
        """Column state (a plain dict, saved in the schema) from the analyzers' results."""
        return {}

    def outputs(self, ctx: Ctx) -> dict[str, Any]:
        """Output features of this column for the batch in ``ctx``."""
        return {}

    def features(self, state: dict) -> list[schema_pb2.Feature]:
        return []

    def dense(self, state: dict) -> list[schema_pb2.DenseColumn]:
        """Parts of the FeatureLayer's dense output when the column is used directly."""
        return []


# --------------------------------------------------------------------------- numeric


@dataclass(frozen=True, eq=True)
class NumericColumn(Column):
    key_: str
    dtype: str = "float32"
    shape: tuple[int, ...] = ()
    default: Any = None
    normalize: str = "none"
    clip: tuple[float, float] | None = None
    name: str = ""

    column_type = "numeric"

    @property
    def source(self) -> Input:
        default = self.default
        if default is not None and self.dtype == "float32":
            default = float(default)
        return Input(self.key_, self.dtype, self.shape, False, default)

    def inputs(self) -> list[Input]:
        return [self.source]

    def analyzers(self) -> dict[str, Any]:
        return {"stats": NumericStats()}

    def analyze_values(self, batch: dict, key: str) -> np.ndarray:
        return np.asarray(batch[self.key_], dtype=np.float64)

    def finalize(self, results: dict[str, dict]) -> dict:
        return dict(results["stats"])

    def raw(self, ctx: Ctx) -> np.ndarray:
        """Input values as float64 with missing (NaN) filled by the default; rows failing marked."""
        memo_key = "raw:" + self.key
        if memo_key in ctx.memo:
            return ctx.memo[memo_key]
        x = np.asarray(ctx.get(self.source, self.name), dtype=np.float64)
        if x.shape[1:] != self.shape:
            raise ValueError(
                f"input {self.key_!r} has shape {x.shape[1:]} per row, column {self.name!r} "
                f"declares {self.shape}"
            )
        nan = np.isnan(x)
        if nan.any():
            if self.default is None:
                rows = np.nonzero(nan.reshape(len(x), -1).any(axis=1))[0]
                ctx.fail(self.key_, rows, [None] * len(rows), "missing value and no default")
                x = np.where(nan, 0.0, x)
            else:
                x = np.where(nan, np.broadcast_to(np.asarray(self.default, np.float64), x.shape), x)
        ctx.memo[memo_key] = x
        return x

    def outputs(self, ctx: Ctx) -> dict[str, Any]:
        st = ctx.state[self.key]
        x = self.raw(ctx)
        if self.normalize == "none":
            if self.dtype == "int64":
                return {self.name: np.asarray(ctx.get(self.source, self.name), dtype=np.int64)}
            return {self.name: x.astype(np.float32)}
        if self.normalize == "zscore":
            y = (x - st["mean"]) / (st["std"] if st["std"] > 0 else 1.0)
        elif self.normalize == "minmax":
            span = st["max"] - st["min"]
            y = (x - st["min"]) / (span if span > 0 else 1.0)
        elif self.normalize == "log1p":
            bad = x <= -1
            if bad.any():
                rows = np.nonzero(bad.reshape(len(x), -1).any(axis=1))[0]
                ctx.fail(
                    self.key_,
                    rows,
                    x.reshape(len(x), -1)[rows, 0].tolist(),
                    "log1p needs values > -1",
                )
                x = np.where(bad, 0.0, x)
            y = np.log1p(x)
        else:
            y = np.clip(x, self.clip[0], self.clip[1])
        return {self.name: y.astype(np.float32)}

    def out_dtype(self) -> str:
        return "int64" if self.dtype == "int64" and self.normalize == "none" else "float32"

    def features(self, state: dict) -> list[schema_pb2.Feature]:
        return [
            schema_pb2.Feature(
                name=self.name,
                dtype=_PROTO_DTYPE[self.out_dtype()],
                shape=self.shape,
                kind=schema_pb2.Feature.NUMERIC,
                column_type=self.column_type,
                source=self.key_,
            )
        ]

    def dense(self, state: dict) -> list[schema_pb2.DenseColumn]:
        return [
            schema_pb2.DenseColumn(
                name=self.name,
                type=schema_pb2.DenseColumn.NUMERIC,
                feature=self.name,
                width=math.prod(self.shape),
            )
        ]


def numeric(
    key: str,
    dtype: str = "float32",
    shape: Sequence[int] = (),
    default: Any = None,
    normalize: str = "none",
    clip: tuple[float, float] | None = None,
    name: str | None = None,
) -> NumericColumn:
    """Dense numeric input (``tf.feature_column.numeric_column``) with optional normalization.

    ``normalize``: ``none`` | ``zscore`` ((x-mean)/std) | ``minmax`` ((x-min)/(max-min)) |
    ``log1p`` | ``clip`` (to the explicit ``clip=(lo, hi)``). Statistics are learned over present
    values; a missing value becomes ``default`` (``None``: required) before normalizing.

    >>> price = numeric("price", default=0.0, normalize="zscore")
    """
    _check_name(key, "numeric key")
    dtype = _normalize_dtype(dtype)
    if dtype == "bytes":
        raise ValueError(f"numeric column {key!r}: dtype must be float32 or int64, not bytes")
    if normalize not in NORMALIZERS:
        raise ValueError(
            f"numeric column {key!r}: normalize={normalize!r}; expected one of {NORMALIZERS}"
        )
    if normalize == "clip":
        if clip is None or len(clip) != 2 or not clip[0] <= clip[1]:
            raise ValueError(
                f"numeric column {key!r}: normalize='clip' needs clip=(lo, hi) with lo <= hi"
            )
        clip = (float(clip[0]), float(clip[1]))
    elif clip is not None:
        raise ValueError(f"numeric column {key!r}: clip=... is only used with normalize='clip'")
    shape = tuple(_check_positive(d, f"numeric column {key!r} shape entry") for d in shape)
    if default is not None:
        arr = np.asarray(default, dtype=np.float64)
        if arr.shape not in ((), shape):
            raise ValueError(f"numeric column {key!r}: default of shape {arr.shape} != {shape}")
        if np.isnan(arr).any():
            raise ValueError(f"numeric column {key!r}: default must not be NaN")
        default = default if arr.shape == () else tuple(arr.ravel().tolist())
    return NumericColumn(key, dtype, shape, default, normalize, clip, name or key)


# --------------------------------------------------------------------------- categorical


class CategoricalColumn(Column):
    """A column producing int64 ids in ``[0, num_buckets)`` (negative = no id)."""

    multivalued: bool = False
    sequence: bool = False

    def num_buckets(self, state: dict) -> int:
        raise NotImplementedError

    def ids(self, ctx: Ctx) -> np.ndarray | Ragged:
        memo_key = "ids:" + self.key
        if memo_key not in ctx.memo:
            ctx.memo[memo_key] = self.compute_ids(ctx)
        return ctx.memo[memo_key]

    def compute_ids(self, ctx: Ctx) -> np.ndarray | Ragged:
        raise NotImplementedError

    @property
    def varlen(self) -> bool:
        return self.multivalued

    def id_shape(self) -> tuple[int, ...]:
        return ()

    def outputs(self, ctx: Ctx) -> dict[str, Any]:
        return {self.name: self.ids(ctx)}

    def features(self, state: dict) -> list[schema_pb2.Feature]:
        return [
            schema_pb2.Feature(
                name=self.name,
                dtype=schema_pb2.INT64,
                shape=self.id_shape(),
                varlen=self.varlen,
                kind=schema_pb2.Feature.CATEGORICAL,
                num_buckets=self.num_buckets(state),
                column_type=self.column_type,
                source=getattr(self, "key_", ""),
                sequence=self.sequence,
                max_length=getattr(self, "max_length", None) or 0,
            )
        ]


def _categorical_input(key: str, dtype: str, multivalued: bool, default: Any) -> Input:
    if multivalued:
        return Input(key, dtype, (), True, None)
    return Input(key, dtype, (), False, default)


def _flat_values(ctx: Ctx, inp: Input, column: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat input values and row splits (``None`` for single-valued inputs)."""
    col = ctx.get(inp, column)
    if isinstance(col, Ragged):
        return col.values, col.row_splits
    if inp.multivalued:
        raise TypeError(f"input {inp.name!r} is multivalued: expected a Ragged column")
    return np.asarray(col) if inp.dtype != "bytes" else col, None


def _wrap(ids: np.ndarray, splits: np.ndarray | None) -> np.ndarray | Ragged:
    return ids if splits is None else Ragged(ids, splits)


def _string_keys(values: Any, dtype: str) -> StrBuf:
    """Values as strings for hashing: bytes as-is, int64 as decimal (TensorFlow's as_string)."""
    return int_to_strbuf(values) if dtype == "int64" else StrBuf.from_values(values)


@dataclass(frozen=True, eq=True)
class VocabColumn(CategoricalColumn):
    """Vocabulary lookup: a fixed list, a file, or learned (``top_k`` / ``frequency_threshold``)."""

    key_: str
    dtype: str = "bytes"
    vocabulary: tuple | None = None  # fixed list; None = learned or from file
    vocabulary_file: str | None = None
    vocabulary_size: int | None = None
    top_k: int | None = None
    frequency_threshold: int | None = None
    num_oov_buckets: int = 0
    default_value: int = -1
    multivalued: bool = False
    default: Any = None
    approximate_capacity: int | None = None
    name: str = ""
    column_type: str = "categorical_vocab"

    @property
    def source(self) -> Input:
        return _categorical_input(self.key_, self.dtype, self.multivalued, self.default)

    def inputs(self) -> list[Input]:
        return [self.source]

    @property
    def learned(self) -> bool:
        return self.vocabulary is None and self.vocabulary_file is None

    def analyzers(self) -> dict[str, Any]:
        return {"vocab": Vocabulary(self.approximate_capacity)} if self.learned else {}

    def analyze_values(self, batch: dict, key: str) -> np.ndarray:
        col = batch[self.key_]
        return col.values if isinstance(col, Ragged) else col

    def finalize(self, results: dict[str, dict]) -> dict:
        if self.vocabulary is not None:
            return {"vocab": list(self.vocabulary)}
        if self.vocabulary_file is not None:
            return {
                "vocab": _read_vocab_file(self.vocabulary_file, self.vocabulary_size, self.dtype)
            }
        return select_vocab(results["vocab"], self.top_k, self.frequency_threshold)

    def num_buckets(self, state: dict) -> int:
        return len(state[self.key]["vocab"]) + self.num_oov_buckets

    def compute_ids(self, ctx: Ctx) -> np.ndarray | Ragged:
        values, splits = _flat_values(ctx, self.source, self.name)
        return _wrap(
            vocab_lookup(
                ctx.state[self.key], values, self.dtype, self.num_oov_buckets, self.default_value
            ),
            splits,
        )


def select_vocab(result: dict, top_k: int | None, frequency_threshold: int | None) -> dict:
    """Apply ``frequency_threshold`` then ``top_k`` to a Vocabulary analyzer result."""
    values, counts = result["values"], result["counts"]
    keep = len(values)
    if frequency_threshold:
        keep = int(np.searchsorted(-counts, -frequency_threshold, side="right"))
    if top_k is not None:
        keep = min(keep, top_k)
    return {
        "vocab": values[:keep],
        "vocab_counts": counts[:keep],
        "vocab_total_distinct": result["distinct"],
        "vocab_approximate": result["approximate"],
    }


def _read_vocab_file(path: str, size: int | None, dtype: str) -> list:
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [line.rstrip(b"\r") for line in lines]
    if size is not None:
        if size > len(lines):
            raise ValueError(
                f"vocabulary file {path!r} has {len(lines)} lines < vocabulary_size={size}"
            )
        lines = lines[:size]
    return [int(v) for v in lines] if dtype == "int64" else lines


def _bytes_array(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [_as_bytes(v) for v in values]
    return out


def _table(state: dict, dtype: str) -> Any:
    # Built once per state and cached beside it (never saved).
    table = state.get("_table")
    if table is None:
        vocab = state["vocab"]
        if dtype == "int64":
            keys = np.asarray(vocab, dtype=np.int64)
            order = np.argsort(keys, kind="stable")
            table = (keys[order], order.astype(np.int64))
        else:
            table = StringTable(StrBuf.from_values(_bytes_array(vocab)))
        state["_table"] = table
    return table


def vocab_lookup(
    state: dict,
    values: Any,
    dtype: str,
    num_oov_buckets: int,
    default_value: int,
    values_sb: StrBuf | None = None,
) -> np.ndarray:
    """Ids of ``values`` in the state's vocabulary with TensorFlow's OOV rule.

    Out-of-vocabulary values get ``vocab_size + Fingerprint64(value) % num_oov_buckets`` (ints
    hashed as their decimal string), like ``categorical_column_with_vocabulary_list``; with no
    OOV buckets they get ``default_value``.
    """
    table = _table(state, dtype)
    if dtype == "int64":
        v = np.asarray(values, dtype=np.int64)
        keys, order = table
        pos = np.minimum(np.searchsorted(keys, v), max(len(keys) - 1, 0))
        ids = np.where(
            (len(keys) > 0) & (keys[pos] == v) if len(keys) else np.zeros(len(v), bool),
            order[pos] if len(keys) else 0,
            -1,
        ).astype(np.int64)
        oov = ids < 0
        if num_oov_buckets and oov.any():
            ids[oov] = len(keys) + (
                fingerprint64(int_to_strbuf(v[oov])) % np.uint64(num_oov_buckets)
            ).astype(np.int64)
        elif oov.any():
            ids[oov] = default_value
        return ids
    sb = values_sb if values_sb is not None else StrBuf.from_values(values)
    fp = fingerprint64(sb)
    ids = table.lookup(sb, fp)
    oov = ids < 0
    if oov.any():
        if num_oov_buckets:
            ids[oov] = len(table) + (fp[oov] % np.uint64(num_oov_buckets)).astype(np.int64)
        else:
            ids[oov] = default_value
    return ids


def _validate_vocab_options(key: str, top_k, frequency_threshold, num_oov_buckets, default_value):
    if top_k is not None:
        _check_positive(top_k, f"column {key!r}: top_k")
    if frequency_threshold is not None:
        _check_positive(frequency_threshold, f"column {key!r}: frequency_threshold")
    _check_positive(num_oov_buckets, f"column {key!r}: num_oov_buckets", minimum=0)
    if num_oov_buckets and default_value != -1:
        raise ValueError(
            f"column {key!r}: can't set both num_oov_buckets={num_oov_buckets} and "
            f"default_value={default_value} (like TensorFlow)"
        )


def _categorical_default(key: str, dtype: str, default: Any, multivalued: bool) -> Any:
    if multivalued:
        if default not in (None, "", b""):
            raise ValueError(
                f"column {key!r}: a multivalued input has no default (missing = no values)"
            )
        return None
    if default == "" or default == b"":
        return b"" if dtype == "bytes" else _bad_default(key, default)
    if default is None:
        return None
    if dtype == "bytes":
        return _as_bytes(default)
    if isinstance(default, bool) or not isinstance(default, (int, np.integer)):
        return _bad_default(key, default)
    return int(default)


def _bad_default(key: str, default: Any):
    raise ValueError(f"column {key!r}: default {default!r} does not match the column's dtype")


def categorical_vocab(
    key: str,
    top_k: int | None = None,
    frequency_threshold: int | None = None,
    num_oov_buckets: int = 0,
    default_value: int = -1,
    dtype: str = "bytes",
    multivalued: bool = False,
    default: Any = "",
    approximate_capacity: int | None = None,
    name: str | None = None,
) -> VocabColumn:
    """Vocabulary learned from the data (most frequent first; ties by value).

    Keeps values with count >= ``frequency_threshold``, then the ``top_k`` most frequent. OOV
    values go to ``num_oov_buckets`` hash buckets after the vocabulary, else to ``default_value``.
    ``approximate_capacity=m`` bounds the analyzer's memory (Misra-Gries, counts within N/(m+1)).

    >>> country = categorical_vocab("country", top_k=100, num_oov_buckets=1)
    """
    _check_name(key, "categorical_vocab key")
    dtype = _normalize_dtype(dtype)
    if dtype == "float32":
        raise ValueError(f"column {key!r}: vocabulary columns take bytes or int64 values")
    _validate_vocab_options(key, top_k, frequency_threshold, num_oov_buckets, default_value)
    if approximate_capacity is not None:
        _check_positive(approximate_capacity, f"column {key!r}: approximate_capacity")
        if top_k is not None and approximate_capacity < top_k:
            raise ValueError(f"column {key!r}: approximate_capacity must be >= top_k")
    default = _categorical_default(key, dtype, default, multivalued)
    return VocabColumn(
        key,
        dtype,
        None,
        None,
        None,
        top_k,
        frequency_threshold,
        num_oov_buckets,
        default_value,
        multivalued,
        default,
        approximate_capacity,
        name or key,
    )


def categorical_vocab_list(
    key: str,
    vocabulary_list: Sequence,
    num_oov_buckets: int = 0,
    default_value: int = -1,
    dtype: str | None = None,
    multivalued: bool = False,
    default: Any = "",
    name: str | None = None,
) -> VocabColumn:
    """Fixed vocabulary (``categorical_column_with_vocabulary_list``); id = position in the list."""
    _check_name(key, "categorical_vocab_list key")
    vocab = list(vocabulary_list)
    if not vocab:
        raise ValueError(f"column {key!r}: vocabulary_list is empty")
    if dtype is None:
        dtype = "int64" if isinstance(vocab[0], (int, np.integer)) else "bytes"
    dtype = _normalize_dtype(dtype)
    vocab = [int(v) for v in vocab] if dtype == "int64" else [_as_bytes(v) for v in vocab]
    if len(set(vocab)) != len(vocab):
        dup = next(v for v in vocab if vocab.count(v) > 1)
        raise ValueError(f"column {key!r}: duplicate key {dup!r} in vocabulary_list")
    _validate_vocab_options(key, None, None, num_oov_buckets, default_value)
    default = _categorical_default(
        key, dtype, default if dtype == "bytes" or default != "" else None, multivalued
    )
    return VocabColumn(
        key,
        dtype,
        tuple(vocab),
        None,
        None,
        None,
        None,
        num_oov_buckets,
        default_value,
        multivalued,
        default,
        None,
        name or key,
        "categorical_vocab_list",
    )


def categorical_vocab_file(
    key: str,
    vocabulary_file: str,
    vocabulary_size: int | None = None,
    num_oov_buckets: int = 0,
    default_value: int = -1,
    dtype: str = "bytes",
    multivalued: bool = False,
    default: Any = "",
    name: str | None = None,
) -> VocabColumn:
    """Vocabulary from a file, one value per line (``..._with_vocabulary_file``).

    The file is read when the state is built and its contents saved in the schema.
    """
    _check_name(key, "categorical_vocab_file key")
    if not os.path.isfile(vocabulary_file):
        raise ValueError(f"column {key!r}: vocabulary_file {vocabulary_file!r} does not exist")
    if vocabulary_size is not None:
        _check_positive(vocabulary_size, f"column {key!r}: vocabulary_size")
    dtype = _normalize_dtype(dtype)
    _validate_vocab_options(key, None, None, num_oov_buckets, default_value)
    default = _categorical_default(
        key, dtype, default if dtype == "bytes" or default != "" else None, multivalued
    )
    return VocabColumn(
        key,
        dtype,
        None,
        os.path.abspath(vocabulary_file),
        vocabulary_size,
        None,
        None,
        num_oov_buckets,
        default_value,
        multivalued,
        default,
        None,
        name or key,
        "categorical_vocab_file",
    )


@dataclass(frozen=True, eq=True)
class HashColumn(CategoricalColumn):
    key_: str
    hash_bucket_size: int
    dtype: str = "bytes"
    multivalued: bool = False
    default: Any = None
    name: str = ""

    column_type = "categorical_hash"

    @property
    def source(self) -> Input:
        return _categorical_input(self.key_, self.dtype, self.multivalued, self.default)

    def inputs(self) -> list[Input]:
        return [self.source]

    def num_buckets(self, state: dict) -> int:
        return self.hash_bucket_size

    def compute_ids(self, ctx: Ctx) -> np.ndarray | Ragged:
        values, splits = _flat_values(ctx, self.source, self.name)
        fp = fingerprint64(_string_keys(values, self.dtype))
        return _wrap((fp % np.uint64(self.hash_bucket_size)).astype(np.int64), splits)


def categorical_hash(
    key: str,
    hash_bucket_size: int,
    dtype: str = "bytes",
    multivalued: bool = False,
    default: Any = "",
    name: str | None = None,
) -> HashColumn:
    """``Fingerprint64(value) % hash_bucket_size``: ``tf.strings.to_hash_bucket_fast``'s bucket.

    int64 values are hashed as their decimal string, like ``categorical_column_with_hash_bucket``.
    """
    _check_name(key, "categorical_hash key")
    _check_positive(hash_bucket_size, f"column {key!r}: hash_bucket_size", minimum=1)
    dtype = _normalize_dtype(dtype)
    if dtype == "float32":
        raise ValueError(f"column {key!r}: hash columns take bytes or int64 values")
    default = _categorical_default(
        key, dtype, default if dtype == "bytes" or default != "" else None, multivalued
    )
    return HashColumn(key, int(hash_bucket_size), dtype, multivalued, default, name or key)


@dataclass(frozen=True, eq=True)
class IdentityColumn(CategoricalColumn):
    key_: str
    num_buckets_: int
    default_value: int | None = None
    multivalued: bool = False
    default: Any = None
    name: str = ""

    column_type = "categorical_identity"

    @property
    def source(self) -> Input:
        return _categorical_input(self.key_, "int64", self.multivalued, self.default)

    def inputs(self) -> list[Input]:
        return [self.source]

    def num_buckets(self, state: dict) -> int:
        return self.num_buckets_

    def compute_ids(self, ctx: Ctx) -> np.ndarray | Ragged:
        values, splits = _flat_values(ctx, self.source, self.name)
        ids = np.asarray(values, dtype=np.int64).copy()
        bad = (ids < 0) | (ids >= self.num_buckets_)
        if bad.any():
            if self.default_value is None:
                pos = np.nonzero(bad)[0]
                rows = pos if splits is None else np.searchsorted(splits, pos, side="right") - 1
                ctx.fail(
                    self.key_,
                    rows,
                    ids[pos].tolist(),
                    f"id out of range [0, {self.num_buckets_}) and no default_value",
                )
                ids[bad] = 0
            else:
                ids[bad] = self.default_value
        return _wrap(ids, splits)


def categorical_identity(
    key: str,
    num_buckets: int,
    default_value: int | None = None,
    multivalued: bool = False,
    default: int | None = None,
    name: str | None = None,
) -> IdentityColumn:
    """Integer inputs used as ids directly (``categorical_column_with_identity``).

    Values outside ``[0, num_buckets)`` become ``default_value``; with none they are row errors.
    """
    _check_name(key, "categorical_identity key")
    _check_positive(num_buckets, f"column {key!r}: num_buckets")
    if default_value is not None and not 0 <= default_value < num_buckets:
        raise ValueError(f"column {key!r}: default_value {default_value} not in [0, {num_buckets})")
    default = _categorical_default(key, "int64", default, multivalued)
    return IdentityColumn(key, int(num_buckets), default_value, multivalued, default, name or key)


@dataclass(frozen=True, eq=True)
class BucketizedColumn(CategoricalColumn):
    source_column: NumericColumn
    boundaries: tuple[float, ...] | None = None
    num_buckets_: int | None = None
    name: str = ""
    quantile_k: int = 4096

    column_type = "bucketized"

    def children(self) -> list[Column]:
        return [self.source_column]

    def inputs(self) -> list[Input]:
        return self.source_column.inputs()

    def analyzers(self) -> dict[str, Any]:
        return {} if self.boundaries is not None else {"quantiles": Quantiles(self.quantile_k)}

    def analyze_values(self, batch: dict, key: str) -> np.ndarray:
        return self.source_column.analyze_values(batch, key)

    def finalize(self, results: dict[str, dict]) -> dict:
        if self.boundaries is not None:
            return {"boundaries": list(self.boundaries)}
        summary = results["quantiles"]
        return {
            "boundaries": bucket_boundaries(summary, self.num_buckets_).tolist(),
            "quantile_rank_error": summary["eps"],
        }

    def num_buckets(self, state: dict) -> int:
        return len(state[self.key]["boundaries"]) + 1

    def id_shape(self) -> tuple[int, ...]:
        return self.source_column.shape

    def compute_ids(self, ctx: Ctx) -> np.ndarray:
        # Float32 comparisons against float32 boundaries, like TensorFlow's Bucketize op:
        # bucket i holds boundaries[i-1] <= x < boundaries[i].
        # TensorFlow's CPU kernels flush subnormals to zero, so a subnormal counts as 0 too.
        x = _flush_subnormals(self.source_column.raw(ctx).astype(np.float32))
        b = _flush_subnormals(np.asarray(ctx.state[self.key]["boundaries"], dtype=np.float32))
        return np.searchsorted(b, x, side="right").astype(np.int64)

    def dense(self, state: dict) -> list[schema_pb2.DenseColumn]:
        nb = self.num_buckets(state)
        return [
            schema_pb2.DenseColumn(
                name=self.name,
                type=schema_pb2.DenseColumn.INDICATOR,
                feature=self.name,
                width=nb * math.prod(self.id_shape()),
            )
        ]


def _flush_subnormals(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < np.finfo(np.float32).tiny, np.float32(0), x)


def bucketized(
    source_column: NumericColumn,
    boundaries: Sequence[float] | None = None,
    num_buckets: int | None = None,
    name: str | None = None,
    quantile_k: int = 4096,
) -> BucketizedColumn:
    """Bucket ids of a numeric column (``bucketized_column``), boundaries explicit or learned.

    With ``num_buckets`` the boundaries are the 1/n..(n-1)/n quantiles of the raw input
    (deduplicated, so a skewed column can get fewer buckets); ``quantile_k`` sizes the sketch.
    Used directly in a FeatureSet, it is one-hot in the FeatureLayer (like TensorFlow).
    """
    if not isinstance(source_column, NumericColumn):
        raise ValueError(f"bucketized needs a numeric column, got {type(source_column).__name__}")
    if (boundaries is None) == (num_buckets is None):
        raise ValueError(
            f"bucketized({source_column.name!r}): give exactly one of boundaries or num_buckets"
        )
    if boundaries is not None:
        b = [float(x) for x in boundaries]
        if not b or any(b2 <= b1 for b1, b2 in zip(b, b[1:])):
            raise ValueError(
                f"bucketized({source_column.name!r}): boundaries must be non-empty and "
                "strictly increasing"
            )
        boundaries = tuple(b)
    else:
        _check_positive(num_buckets, f"bucketized({source_column.name!r}): num_buckets", minimum=2)
    _check_positive(quantile_k, "quantile_k", minimum=8)
    return BucketizedColumn(
        source_column,
        boundaries,
        num_buckets,
        name or f"{source_column.name}_bucketized",
        quantile_k,
    )


@dataclass(frozen=True, eq=True)
class CrossedColumn(CategoricalColumn):
    keys: tuple  # str (raw input name) or CategoricalColumn
    hash_bucket_size: int
    name: str = ""

    column_type = "crossed"

    def children(self) -> list[Column]:
        return [k for k in self.keys if isinstance(k, Column)]

    def inputs(self) -> list[Input]:
        return [i for k in self.children() for i in k.inputs()] + list(self.raw_inputs().values())

    def raw_keys(self) -> list[str]:
        return [k for k in self.keys if isinstance(k, str)]

    def raw_inputs(self) -> dict[str, Input]:
        # String keys name inputs declared by other columns; the FeatureSet resolves them.
        return getattr(self, "_resolved", {})

    def resolve(self, inputs: dict[str, Input]) -> None:
        object.__setattr__(self, "_resolved", {k: inputs[k] for k in self.raw_keys()})

    @property
    def varlen(self) -> bool:
        return any(i.multivalued for i in self.raw_inputs().values()) or any(
            isinstance(k, CategoricalColumn) and (k.varlen or k.id_shape()) for k in self.keys
        )

    def num_buckets(self, state: dict) -> int:
        return self.hash_bucket_size

    def _key_values(self, ctx: Ctx, k: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(k, CategoricalColumn):
            ids = k.ids(ctx)
            if isinstance(ids, Ragged):
                return ids.values.view(np.uint64), ids.row_splits
            flat = ids.reshape(len(ids), math.prod(k.id_shape()))
            if flat.shape[1] > 1:  # like TF: position i of a [k]-shaped column adds i * buckets
                flat = flat + np.arange(flat.shape[1]) * k.num_buckets(ctx.state)
            return flat.ravel().view(np.uint64), np.arange(
                len(ids) + 1, dtype=np.int64
            ) * flat.shape[1]
        inp = self.raw_inputs()[k]
        values, splits = _flat_values(ctx, inp, self.name)
        if splits is None:
            splits = np.arange(len(values) + 1, dtype=np.int64)
        if inp.dtype == "bytes":
            return fingerprint64(values), splits
        return np.asarray(values, dtype=np.int64).view(np.uint64), splits

    def compute_ids(self, ctx: Ctx) -> np.ndarray | Ragged:
        cols = [self._key_values(ctx, k) for k in self.keys]
        ids, splits = cross_hash(cols, self.hash_bucket_size)
        if not self.varlen:
            return ids
        return Ragged(ids, splits)


def crossed(keys: Sequence, hash_bucket_size: int, name: str | None = None) -> CrossedColumn:
    """Hashed cross of categorical columns and/or raw input names (``crossed_column``).

    Ids equal ``tf.sparse.cross_hashed`` (FingerprintCat64 chain, TF's default hash key); string
    keys must name an input some other column of the FeatureSet declares.
    """
    keys = tuple(keys)
    if len(keys) < 2:
        raise ValueError("crossed needs at least two keys")
    for k in keys:
        if not isinstance(k, (str, CategoricalColumn)):
            raise ValueError(f"crossed keys must be input names or categorical columns, got {k!r}")
    _check_positive(hash_bucket_size, "crossed hash_bucket_size")
    names = sorted(k if isinstance(k, str) else k.name for k in keys)
    return CrossedColumn(keys, int(hash_bucket_size), name or "_X_".join(names))


# --------------------------------------------------------------------------- text / sequences


@dataclass(frozen=True, eq=True)
class TextColumn(CategoricalColumn):
    key_: str
    tokenizer: str = "whitespace"
    pattern: str | None = None
    lowercase: bool = False
    top_k: int | None = None
    frequency_threshold: int | None = None
    num_oov_buckets: int = 1
    default_value: int = -1
    vocabulary: tuple | None = None
    max_length: int | None = None
    default: Any = b""
    name: str = ""
    approximate_capacity: int | None = None

    column_type = "text"
    multivalued = False
    sequence = True

    @property
    def varlen(self) -> bool:
        return True

    @property
    def source(self) -> Input:
        return Input(self.key_, "bytes", (), False, self.default)

    def inputs(self) -> list[Input]:
        return [self.source]

    def analyzers(self) -> dict[str, Any]:
        if self.tokenizer == "bytes" or self.vocabulary is not None:
            return {}
        return {"vocab": Vocabulary(self.approximate_capacity)}

    def _tokens(self, batch: dict) -> tuple[StrBuf, np.ndarray]:
        return tokenize(batch[self.key_], self.tokenizer, self.pattern, self.lowercase)

    def analyze_values(self, batch: dict, key: str) -> StrBuf:
        return self._tokens(batch)[0]

    def finalize(self, results: dict[str, dict]) -> dict:
        if self.tokenizer == "bytes":
            return {}
        if self.vocabulary is not None:
            return {"vocab": list(self.vocabulary)}
        return select_vocab(results["vocab"], self.top_k, self.frequency_threshold)

    def num_buckets(self, state: dict) -> int:
        if self.tokenizer == "bytes":
            return 256
        return len(state[self.key]["vocab"]) + self.num_oov_buckets

    def compute_ids(self, ctx: Ctx) -> Ragged:
        tokens, splits = self._tokens({self.key_: ctx.get(self.source, self.name)})
        if self.tokenizer == "bytes":
            ids = tokens.buf.astype(np.int64)
        else:
            st = ctx.state[self.key]
            ids = vocab_lookup(st, None, "bytes", self.num_oov_buckets, self.default_value, tokens)
        if self.max_length is not None:
            index, splits = truncate_index(splits, self.max_length)
            ids = ids[index]
        return Ragged(ids, splits)


def text(
    key: str,
    tokenizer: str = "whitespace",
    pattern: str | None = None,
    lowercase: bool = False,
    top_k: int | None = None,
    frequency_threshold: int | None = None,
    num_oov_buckets: int = 1,
    default_value: int = -1,
    vocabulary_list: Sequence | None = None,
    max_length: int | None = None,
    default: Any = "",
    name: str | None = None,
    approximate_capacity: int | None = None,
) -> TextColumn:
    """Text to varlen int64 token ids (a sequence column).

    ``tokenizer``: ``whitespace`` | ``regex`` (split on matches of ``pattern``) | ``bytes``
    (UTF-8 bytes as ids 0..255, no vocabulary). The vocabulary is learned (``top_k``,
    ``frequency_threshold``) unless ``vocabulary_list`` is given; OOV tokens hash into
    ``num_oov_buckets``. ``max_length`` keeps the first tokens of each row.
    ``approximate_capacity`` bounds the vocabulary analyzer's memory (see ``categorical_vocab``).

    >>> query = text("query", tokenizer="whitespace", top_k=2000)
    """
    _check_name(key, "text key")
    if tokenizer not in TOKENIZERS:
        raise ValueError(
            f"text column {key!r}: tokenizer={tokenizer!r}; expected one of {TOKENIZERS}"
        )
    if tokenizer == "regex":
        if not pattern:
            raise ValueError(f"text column {key!r}: tokenizer='regex' needs pattern=")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"text column {key!r}: invalid regex {pattern!r}: {err}") from None
    elif pattern is not None:
        raise ValueError(f"text column {key!r}: pattern= is only used with tokenizer='regex'")
    if tokenizer == "bytes" and (top_k or frequency_threshold or vocabulary_list):
        raise ValueError(
            f"text column {key!r}: the bytes tokenizer has a fixed vocabulary of 256 ids"
        )
    _validate_vocab_options(key, top_k, frequency_threshold, num_oov_buckets, default_value)
    if max_length is not None:
        _check_positive(max_length, f"text column {key!r}: max_length")
    if approximate_capacity is not None:
        _check_positive(approximate_capacity, f"text column {key!r}: approximate_capacity")
    vocab = None
    if vocabulary_list is not None:
        vocab = tuple(_as_bytes(v) for v in vocabulary_list)
        if len(set(vocab)) != len(vocab):
            raise ValueError(f"text column {key!r}: duplicate tokens in vocabulary_list")
    default = _categorical_default(key, "bytes", default, False)
    return TextColumn(
        key,
        tokenizer,
        pattern,
        lowercase,
        top_k,
        frequency_threshold,
        num_oov_buckets,
        default_value,
        vocab,
        max_length,
        default,
        name or key,
        approximate_capacity,
    )


@dataclass(frozen=True, eq=True)
class SequenceColumn(CategoricalColumn):
    """A multivalued categorical column whose values are ordered (padded [B, T, D] downstream)."""

    categorical: CategoricalColumn
    max_length: int | None = None
    name: str = ""

    column_type = "sequence"
    sequence = True

    @property
    def key(self) -> str:
        return self.name + "/sequence"  # the output keeps the categorical's name

    @property
    def varlen(self) -> bool:
        return True

    def children(self) -> list[Column]:
        return [self.categorical]

    def inputs(self) -> list[Input]:
        return self.categorical.inputs()

    def num_buckets(self, state: dict) -> int:
        return self.categorical.num_buckets(state)

    def compute_ids(self, ctx: Ctx) -> Ragged:
        ids = self.categorical.ids(ctx)
        if self.max_length is None:
            return ids
        index, splits = truncate_index(ids.row_splits, self.max_length)
        return Ragged(ids.values[index], splits)


def sequence(
    categorical: CategoricalColumn, max_length: int | None = None, name: str | None = None
) -> SequenceColumn:
    """Mark a multivalued categorical column as an ordered sequence, optionally truncated."""
    if not isinstance(categorical, CategoricalColumn) or not categorical.varlen:
        raise ValueError(
            "sequence needs a multivalued categorical column (multivalued=True or text)"
        )
    if max_length is not None:
        _check_positive(max_length, "sequence max_length")
    return SequenceColumn(categorical, max_length, name or categorical.name)


# --------------------------------------------------------------------------- wrappers


@dataclass(frozen=True, eq=True)
class WeightedCategoricalColumn(CategoricalColumn):
    categorical: CategoricalColumn
    weight_key: str
    name: str = ""

    column_type = "weighted_categorical"

    @property
    def varlen(self) -> bool:
        return self.categorical.varlen

    @property
    def weight_input(self) -> Input:
        if self.categorical.varlen:
            return Input(self.weight_key, "float32", (), True, None)
        return Input(self.weight_key, "float32", (), False, None)

    @property
    def weights_name(self) -> str:
        return f"{self.name}_weights"

    def children(self) -> list[Column]:
        return [self.categorical]

    def inputs(self) -> list[Input]:
        return self.categorical.inputs() + [self.weight_input]

    def num_buckets(self, state: dict) -> int:
        return self.categorical.num_buckets(state)

    def compute_ids(self, ctx: Ctx) -> np.ndarray | Ragged:
        return self.categorical.ids(ctx)

    def outputs(self, ctx: Ctx) -> dict[str, Any]:
        ids = self.ids(ctx)
        w = ctx.get(self.weight_input, self.name)
        if isinstance(ids, Ragged):
            if not isinstance(w, Ragged):
                raise TypeError(
                    f"weights {self.weight_key!r} of {self.name!r} must be Ragged like the ids"
                )
            bad = ids.row_lengths() != w.row_lengths()
            if bad.any():
                rows = np.nonzero(bad)[0]
                ctx.fail(
                    self.weight_key,
                    rows,
                    w.row_lengths()[rows].tolist(),
                    "number of weights differs from the number of ids",
                )
                return {
                    self.name: ids,
                    self.weights_name: Ragged(
                        np.zeros(len(ids.values), np.float32), ids.row_splits
                    ),
                }
            return {
                self.name: ids,
                self.weights_name: Ragged(np.asarray(w.values, np.float32), w.row_splits),
            }
        return {self.name: ids, self.weights_name: np.asarray(w, dtype=np.float32)}

    def features(self, state: dict) -> list[schema_pb2.Feature]:
        ids = CategoricalColumn.features(self, state)[0]
        ids.weight_feature = self.weights_name
        weights = schema_pb2.Feature(
            name=self.weights_name,
            dtype=schema_pb2.FLOAT32,
            varlen=self.varlen,
            kind=schema_pb2.Feature.WEIGHTS,
            column_type=self.column_type,
            source=self.weight_key,
        )
        return [ids, weights]


def weighted_categorical(
    categorical: CategoricalColumn, weight_feature_key: str, name: str | None = None
) -> WeightedCategoricalColumn:
    """Ids with a float weight each (``weighted_categorical_column``); the weight input must have
    as many values per row as the ids."""
    if not isinstance(categorical, CategoricalColumn):
        raise ValueError("weighted_categorical needs a categorical column")
    _check_name(weight_feature_key, "weight_feature_key")
    return WeightedCategoricalColumn(
        categorical,
        weight_feature_key,
        name or f"{categorical.name}_weighted_by_{weight_feature_key}",
    )


class _DenseWrapper(Column):
    categorical: CategoricalColumn

    def children(self) -> list[Column]:
        return [self.categorical]

    def inputs(self) -> list[Input]:
        return self.categorical.inputs()

    def outputs(self, ctx: Ctx) -> dict[str, Any]:
        return self.categorical.outputs(ctx)

    def features(self, state: dict) -> list[schema_pb2.Feature]:
        return self.categorical.features(state)

    def _weight_feature(self) -> str:
        c = self.categorical
        return c.weights_name if isinstance(c, WeightedCategoricalColumn) else ""


@dataclass(frozen=True, eq=True)
class EmbeddingColumn(_DenseWrapper):
    categorical: CategoricalColumn
    dimension: int
    combiner: str = "mean"
    max_norm: float | None = None
    shared_group: str = ""
    name: str = ""

    column_type = "embedding"

    def dense(self, state: dict) -> list[schema_pb2.DenseColumn]:
        return [
            schema_pb2.DenseColumn(
                name=self.name,
                type=schema_pb2.DenseColumn.EMBEDDING,
                feature=self.categorical.name,
                dim=self.dimension,
                combiner=COMBINERS[self.combiner],
                shared_group=self.shared_group,
                weight_feature=self._weight_feature(),
                max_norm=self.max_norm or 0.0,
                width=self.dimension,
            )
        ]


def _check_embedding(categorical: Any, dim: Any, combiner: str, what: str) -> None:
    if not isinstance(categorical, CategoricalColumn):
        raise ValueError(f"{what} needs a categorical column, got {type(categorical).__name__}")
    _check_positive(dim, f"{what}({categorical.name!r}) dim")
    if combiner not in COMBINERS:
        raise ValueError(
            f"{what}({categorical.name!r}): combiner={combiner!r}; "
            f"expected one of {tuple(COMBINERS)}"
        )


def embedding(
    categorical: CategoricalColumn,
    dim: int,
    combiner: str = "mean",
    max_norm: float | None = None,
    name: str | None = None,
) -> EmbeddingColumn:
    """Dense embedding of a categorical column (``embedding_column``); ``combiner`` reduces
    several ids per row: ``mean`` | ``sum`` | ``sqrtn``. Dims and combiner are hints saved in the
    schema for the FeatureLayer; the records keep the ids."""
    _check_embedding(categorical, dim, combiner, "embedding")
    return EmbeddingColumn(
        categorical, int(dim), combiner, max_norm, "", name or f"{categorical.name}_embedding"
    )


def shared_embeddings(
    categoricals: Sequence[CategoricalColumn],
    dim: int,
    combiner: str = "mean",
    max_norm: float | None = None,
    shared_name: str | None = None,
) -> list[EmbeddingColumn]:
    """Embeddings of several categorical columns that share one table (``shared_embeddings``).

    The table has as many rows as the largest ``num_buckets`` of the columns.
    """
    cats = list(categoricals)
    if len(cats) < 2:
        raise ValueError("shared_embeddings needs at least two categorical columns")
    for c in cats:
        _check_embedding(c, dim, combiner, "shared_embeddings")
    group = shared_name or "_".join(sorted(c.name for c in cats)) + "_shared_embedding"
    return [
        EmbeddingColumn(c, int(dim), combiner, max_norm, group, f"{c.name}_shared_embedding")
        for c in cats
    ]


@dataclass(frozen=True, eq=True)
class IndicatorColumn(_DenseWrapper):
    categorical: CategoricalColumn
    name: str = ""

    column_type = "indicator"

    def dense(self, state: dict) -> list[schema_pb2.DenseColumn]:
        c = self.categorical
        nb = c.num_buckets(state)
        return [
            schema_pb2.DenseColumn(
                name=self.name,
                type=schema_pb2.DenseColumn.INDICATOR,
                feature=c.name,
                weight_feature=self._weight_feature(),
                width=nb * math.prod(c.id_shape()),
            )
        ]


def indicator(categorical: CategoricalColumn, name: str | None = None) -> IndicatorColumn:
    """One-hot (single id) or multi-hot (counts of several ids) of a categorical column
    (``indicator_column``); weighted columns sum their weights."""
    if not isinstance(categorical, CategoricalColumn):
        raise ValueError(f"indicator needs a categorical column, got {type(categorical).__name__}")
    return IndicatorColumn(categorical, name or f"{categorical.name}_indicator")
