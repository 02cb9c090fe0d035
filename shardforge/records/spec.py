"""Parse specs and the columnar batch contract shared by every component.

A columnar batch is ``dict[str, np.ndarray | Ragged]``: one entry per feature, dense arrays with
the batch on axis 0, and :class:`Ragged` for variable-length values (like ``tf.RaggedTensor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DTYPES = {"int64": np.int64, "float32": np.float32, "bytes": object}


def _normalize_dtype(dtype: Any) -> str:
    aliases = {
        "int64": "int64", "int": "int64", np.int64: "int64", int: "int64",
        "float32": "float32", "float": "float32", np.float32: "float32", float: "float32",
        "bytes": "bytes", "string": "bytes", "str": "bytes", bytes: "bytes", str: "bytes",
        np.bytes_: "bytes", object: "bytes",
    }
    try:
        return aliases[dtype]
    except (KeyError, TypeError):
        raise ValueError(
            f"unsupported dtype {dtype!r}: tf.Example stores int64, float32 or bytes"
        ) from None


@dataclass(frozen=True)
class FixedLen:
    """A feature with a fixed number of values per example, like ``tf.io.FixedLenFeature``.

    ``shape=()`` is a scalar; ``default`` (scalar or array of ``shape``) fills missing features,
    and with ``default=None`` a missing feature is an error.

    >>> FixedLen("float32", shape=(3,), default=0.0)
    FixedLen(dtype='float32', shape=(3,), default=0.0)
    """

    dtype: str
    shape: tuple[int, ...] = ()
    default: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", _normalize_dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # called per batch by the decoder: no numpy call

    @property
    def np_dtype(self) -> Any:
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class VarLen:
    """A feature with any number of values per example, like ``tf.io.VarLenFeature``.

    Decodes to :class:`Ragged`; a missing feature is an empty row.
    """

    dtype: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", _normalize_dtype(self.dtype))

    @property
    def np_dtype(self) -> Any:
        return DTYPES[self.dtype]


Spec = dict[str, FixedLen | VarLen]


class Ragged:
    """Variable-length rows as flat ``values`` plus ``row_splits`` (length ``n_rows + 1``).

    Row ``i`` is ``values[row_splits[i]:row_splits[i + 1]]``, exactly like ``tf.RaggedTensor``.

    >>> r = Ragged.from_rows([[1, 2], [], [3]])
    >>> r.row_lengths().tolist(), r[2].tolist()
    ([2, 0, 1], [3])
    """

    __slots__ = ("values", "row_splits")

    def __init__(self, values: np.ndarray, row_splits: np.ndarray) -> None:
        row_splits = np.asarray(row_splits, dtype=np.int64)
        if row_splits.ndim != 1 or len(row_splits) == 0 or row_splits[0] != 0:
            raise ValueError("row_splits must be 1-D and start at 0")
        if row_splits[-1] != len(values):
            raise ValueError(
                f"row_splits end at {row_splits[-1]} but there are {len(values)} values"
            )
        # compiled writers follow the splits: a decreasing one would index past the values
        down = np.flatnonzero(row_splits[1:] < row_splits[:-1])
        if len(down):
            i = int(down[0])
            raise ValueError(f"row_splits must not decrease: row {i} ends at "
                             f"{row_splits[i + 1]} before it starts at {row_splits[i]}")
        self.values = values
        self.row_splits = row_splits

    @classmethod
    def from_rows(cls, rows: list, dtype: Any = None) -> Ragged:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        splits = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=splits[1:])
        flat = [v for r in rows for v in r]
        if dtype is object or (dtype is None and flat and isinstance(flat[0], (bytes, str))):
            values = np.empty(len(flat), dtype=object)
            values[:] = flat
        else:
            values = np.asarray(flat, dtype=dtype)
        return cls(values, splits)

    def __len__(self) -> int:
        return len(self.row_splits) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.row_splits[i] : self.row_splits[i + 1]]

    def row_lengths(self) -> np.ndarray:
        return np.diff(self.row_splits)

    def value_rowids(self) -> np.ndarray:
        """The row index of each value (``tf.RaggedTensor.value_rowids``)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.row_lengths())

    def take(self, rows: np.ndarray) -> Ragged:
        """The sub-batch of ``rows`` (any order, repeats allowed), vectorized."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.row_splits[rows], self.row_lengths()[rows]
        splits = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=splits[1:])
        index = np.repeat(starts - splits[:-1], lengths) + np.arange(splits[-1])
        return Ragged(self.values[index], splits)

    def to_list(self) -> list[list]:
        return [self[i].tolist() for i in range(len(self))]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Ragged)
            and np.array_equal(self.row_splits, other.row_splits)
            and np.array_equal(self.values, other.values)
        )

    def __repr__(self) -> str:
        return f"Ragged({self.to_list()!r})"


Batch = dict[str, np.ndarray | Ragged]


def batch_size(batch: Batch) -> int:
    """Number of rows of a columnar batch (all columns must agree)."""
    sizes = {len(col) for col in batch.values()}
    if len(sizes) > 1:
        raise ValueError(f"columns of a batch disagree on the number of rows: {sorted(sizes)}")
    return sizes.pop() if sizes else 0


def take_rows(batch: Batch, rows: np.ndarray) -> Batch:
    """Select ``rows`` of every column of a columnar batch."""
    return {
        name: col.take(rows) if isinstance(col, Ragged) else col[rows]
        for name, col in batch.items()
    }
