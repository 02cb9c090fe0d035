"""The column API: the building block of every feature column, built-in or your own.

A column is a frozen dataclass subclassing :class:`Column` that declares

- ``inputs()``: what it reads, a tuple of raw :class:`Input` declarations, names of inputs
  declared by other columns (``str``), or other columns (it then reads their output);
- ``analyzers()``: the statistics it learns in the analyze pass, from the public analyzer set
  (:class:`~shardforge.features.analyzers.NumericStats`, ``Vocabulary``, ``Quantiles``,
  ``FixedVocabulary``), by name; and ``analyze(values)``: what each of them sees;
- ``transform(values, state)``: a pure, vectorized function of its input values (aligned with
  ``inputs()``, missing values already filled, see below) and its learned ``state`` (analyzer
  name -> typed result: ``Stats``, ``Vocab``, ``Boundaries``) to its output column;
- ``output(state, inputs)``: the declared :class:`Output` (dtype, shape or varlen, kind, bucket
  count), from which the schema is written and the ``FeatureLayer`` learns how to consume it;
  ``inputs`` describes what it reads (an :class:`Output` per entry of ``inputs()``).

The same four methods run in the Beam job, in-process (``FeatureSet.fit`` / ``transform``) and at
serving time. Values are numpy arrays (``[B, *shape]``; ``bytes`` as object arrays) or
:class:`~shardforge.records.spec.Ragged` for varlen columns.

**Missing values** follow one rule for every dtype (tf.Transform's fill-then-analyze): an input's
declared ``default`` fills a missing value before anything, analysis included, sees it. A column
whose ``present_only`` is true learns over the rows where all of its raw inputs are present
instead (tf.Transform: analyze the sparse tensor, fill afterwards); its transform still sees
filled values. (A missing float is NaN until then; int64/bytes values are filled when parsed, so
for those ``present_only`` needs a multivalued input, where missing means no value.)

A custom column, a learned z-score of the ratio of two inputs::

    from dataclasses import dataclass
    import shardforge.features as sf

    @dataclass(frozen=True)
    class ZScoredRatio(sf.Column):
        numerator: str
        denominator: str
        name: str

        def inputs(self):
            return (sf.Input(self.numerator, "float32", default=0.0),
                    sf.Input(self.denominator, "float32", default=1.0))

        def analyzers(self):
            return {"stats": sf.NumericStats()}

        def analyze(self, values):
            num, den = values
            return {"stats": num / den}

        def transform(self, values, state):
            num, den = values
            st = state["stats"]
            return ((num / den - st.mean) / (st.std or 1.0)).astype("float32")

        def output(self, state, inputs):
            return sf.Output.numeric()

    FEATURES = sf.FeatureSet([ZScoredRatio("clicks", "views", name="ctr_z")])

Two hooks say what a column listed in a ``FeatureSet`` contributes beyond its own output:

- ``written()``: the columns whose outputs the records hold (default: the column itself). A
  column that only says how the ``FeatureLayer`` uses another column's ids (an embedding) returns
  that column; one written with a companion (weights beside their ids) returns both.
- ``dense_part(outputs)``: the part it adds to the ``FeatureLayer``'s dense ``[B, D]`` output, a
  ``schema_pb2.DenseColumn`` (``None``: no part); ``outputs`` holds every column's
  :class:`Output` by name. The default follows ``Output.layer``.

Weights for another column's ids are an :class:`Output` of kind ``weights`` whose
``weights_for`` names that column; the schema links the two and the layer weighs the ids.

A column's fields must not reuse the names of these methods (``inputs``, ``analyzers``,
``analyze``, ``transform``, ``output``, ``undeclared_input``, ``schema_source``, ``written``,
``dense_part``); ``name`` is
its output's name, distinct from the names of the inputs it reads and from its state's keys
(``"<name>/<analyzer>"``).

A column that rejects some rows returns :class:`WithErrors` (the output for every row, the rows
that failed and why); the feature set drops those rows, or raises, and names them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shardforge.features.analyzers import Analyzer
from shardforge.protos import schema_pb2
from shardforge.records.spec import Ragged, _normalize_dtype

Kind = Literal["numeric", "categorical", "weights", "strings"]
LayerUse = Literal["numeric", "indicator", "none"]


@dataclass(frozen=True)
class Input:
    """A raw input column: what ``FeatureSet.coerce`` parses and the transform reads.

    ``default=None`` on a single-valued input makes it required (a missing value is a row error);
    a multivalued input is missing as an empty list.

    >>> Input("price", "float32", default=0.0).required
    False
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    multivalued: bool = False
    default: Any = None

    def __post_init__(self) -> None:
        check_name(self.name, "input name")

    @property
    def required(self) -> bool:
        return self.default is None and not self.multivalued


@dataclass(frozen=True)
class Output:
    """What a column produces, and how the ``FeatureLayer`` uses it when listed directly.

    ``kind``: ``numeric`` (float or int values) | ``categorical`` (int64 ids in
    ``[0, num_buckets)``, negative = no id) | ``weights`` (floats aligned with ids) | ``strings``
    (bytes, written to the records, not consumed by the layer). ``layer``: ``numeric`` (values
    flattened), ``indicator`` (one-hot of the ids) or ``none``. ``weights_for``: the column whose
    ids a ``weights`` output weighs.
    """

    kind: Kind
    dtype: str
    shape: tuple[int, ...] = ()
    varlen: bool = False
    num_buckets: int = 0
    sequence: bool = False
    max_length: int = 0
    layer: LayerUse = "none"
    weights_for: str = ""

    @staticmethod
    def numeric(shape: Sequence[int] = (), dtype: str = "float32") -> Output:
        """Dense numeric values of ``shape`` per row; the layer passes them through."""
        return Output("numeric", _normalize_dtype(dtype), tuple(shape), layer="numeric")

    @staticmethod
    def ids(
        num_buckets: int,
        shape: Sequence[int] = (),
        varlen: bool = False,
        sequence: bool = False,
        max_length: int = 0,
        one_hot: bool = False,
    ) -> Output:
        """int64 ids in ``[0, num_buckets)``; ``one_hot``: one-hot in the layer when listed
        directly (as TensorFlow does with a bucketized column)."""
        return Output("categorical", "int64", tuple(shape), varlen, int(num_buckets), sequence,
                      int(max_length), "indicator" if one_hot else "none")

    @staticmethod
    def strings(varlen: bool = False) -> Output:
        """Byte strings (one per row, or a varlen list)."""
        return Output("strings", "bytes", (), varlen)

    @staticmethod
    def of_input(inp: Input) -> Output:
        """How a raw input looks to the column reading it."""
        kind = "strings" if inp.dtype == "bytes" else "numeric"
        return Output(kind, inp.dtype, inp.shape, inp.multivalued)


@dataclass(frozen=True)
class WithErrors:
    """A column's output with the rows it rejects: ``rows`` (int indices), the offending
    ``values`` (aligned with ``rows``) and the ``reason`` (one for all, or one per row).
    ``output`` holds every row (any value at a rejected one); the feature set drops or reports
    the rejected rows."""

    output: Any
    rows: np.ndarray
    values: Sequence[Any]
    reason: str | Sequence[str]
    feature: str = ""  # the input to blame; empty = the column


@dataclass(frozen=True)
class RowError:
    """A row that could not be coerced or transformed: route it to the errors output."""

    row: Any
    feature: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: feature {self.feature!r}: {self.reason} (value {self.value!r})"


class Column:
    """Base of every feature column (see the module docstring). Subclasses are frozen
    dataclasses with a ``name`` field: the name of their output feature."""

    name: str
    present_only: bool = False
    column_type: str = "custom"  # recorded in the schema
    # Built-in string ops read bytes as a zero-copy StrBuf; other columns get object arrays.
    reads_strbuf: bool = False

    def inputs(self) -> tuple[Input | str | Column, ...]:
        return ()

    def analyzers(self) -> dict[str, Analyzer]:
        return {}

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        """The values each analyzer sees for one batch (default: the first input's values)."""
        value = values[0]
        flat = value.values if isinstance(value, Ragged) else value
        return {name: flat for name in self.analyzers()}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.transform")

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        raise NotImplementedError(f"{type(self).__name__}.output")

    def undeclared_input(self, name: str) -> Input | None:
        """The input an input name in ``inputs()`` stands for when no column declares it
        (``None``: an error)."""
        return None

    def schema_source(self) -> str:
        """The raw input (or column) it is built from, for the schema."""
        first = self.inputs()[0] if self.inputs() else ""
        return first if isinstance(first, str) else first.name

    def written(self) -> tuple[Column, ...]:
        """The columns whose outputs the records hold when this column is listed in a
        ``FeatureSet`` (default: itself)."""
        return (self,)

    def dense_part(self, outputs: Mapping[str, Output]) -> schema_pb2.DenseColumn | None:
        """This column's part of the ``FeatureLayer``'s dense output when listed in a
        ``FeatureSet`` (``None``: none); ``outputs``: every column's :class:`Output` by name.
        By default its own output, as ``Output.layer`` says: values, or a one-hot of the ids."""
        d = outputs[self.name]
        if d.layer == "numeric":
            return schema_pb2.DenseColumn(name=self.name, type=schema_pb2.DenseColumn.NUMERIC,
                                          feature=self.name, width=math.prod(d.shape))
        if d.layer == "indicator":
            return schema_pb2.DenseColumn(name=self.name, type=schema_pb2.DenseColumn.INDICATOR,
                                          feature=self.name,
                                          width=math.prod(d.shape) * d.num_buckets)
        return None


# --------------------------------------------------------------------------- validation helpers


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    return name


def check_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def flat(value: Any) -> tuple[Any, np.ndarray | None]:
    """``(flat values, row_splits)`` of a column value; splits ``None`` for one value per row."""
    if isinstance(value, Ragged):
        return value.values, value.row_splits
    return value, None


def wrap(values: Any, splits: np.ndarray | None) -> Any:
    return values if splits is None else Ragged(values, splits)


def rows_of(positions: np.ndarray, splits: np.ndarray | None) -> np.ndarray:
    """The row of each flat value position."""
    if splits is None:
        return positions
    return np.searchsorted(splits, positions, side="right") - 1
