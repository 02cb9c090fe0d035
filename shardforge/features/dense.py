"""How the ``FeatureLayer`` consumes categorical columns: embeddings and indicators.

These columns compute nothing new: the records keep the categorical column's ids (and
weights); an :class:`EmbeddingColumn` or :class:`IndicatorColumn` adds a part to the layer's
dense ``[B, D]`` output, described in the schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shardforge.features.categorical import CategoricalColumn, WeightedColumn
from shardforge.features.column import Column, Output, check_int
from shardforge.protos import schema_pb2

COMBINERS = {"mean": schema_pb2.MEAN, "sum": schema_pb2.SUM, "sqrtn": schema_pb2.SQRTN}


@dataclass(frozen=True)
class LayerColumn(Column):
    """Base of the layer parts over a categorical (or weighted categorical) column."""

    categorical: CategoricalColumn | WeightedColumn
    name: str = ""

    @property
    def ids_column(self) -> CategoricalColumn:
        c = self.categorical
        return c.categorical if isinstance(c, WeightedColumn) else c

    @property
    def weights_column(self) -> WeightedColumn | None:
        c = self.categorical
        return c if isinstance(c, WeightedColumn) else None

    def inputs(self) -> tuple[Column, ...]:
        return (self.categorical,)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        return values[0]  # the records keep the categorical column's own output

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return inputs[0]

    def written(self) -> tuple[Column, ...]:
        return self.categorical.written()


@dataclass(frozen=True)
class EmbeddingColumn(LayerColumn):
    """A dense embedding of the ids (``embedding_column``), ``combiner`` over several ids:
    ``mean`` | ``sum`` | ``sqrtn``; embeddings in one ``shared_group`` share a table."""

    dimension: int = 1
    combiner: str = "mean"
    max_norm: float | None = None
    shared_group: str = ""
    column_type = "embedding"

    def dense_part(self, outputs: Mapping[str, Output]) -> schema_pb2.DenseColumn:
        w = self.weights_column
        return schema_pb2.DenseColumn(
            name=self.name, type=schema_pb2.DenseColumn.EMBEDDING, feature=self.ids_column.name,
            dim=self.dimension, combiner=COMBINERS[self.combiner], shared_group=self.shared_group,
            weight_feature=w.name if w else "", max_norm=self.max_norm or 0.0,
            width=self.dimension)


@dataclass(frozen=True)
class IndicatorColumn(LayerColumn):
    """One-hot (one id) or multi-hot (counts, or summed weights) of the ids
    (``indicator_column``)."""

    column_type = "indicator"

    def dense_part(self, outputs: Mapping[str, Output]) -> schema_pb2.DenseColumn:
        w = self.weights_column
        ids = outputs[self.ids_column.name]
        return schema_pb2.DenseColumn(
            name=self.name, type=schema_pb2.DenseColumn.INDICATOR, feature=self.ids_column.name,
            weight_feature=w.name if w else "", width=ids.num_buckets * math.prod(ids.shape))


def _check(categorical: Any, what: str) -> CategoricalColumn | WeightedColumn:
    if not isinstance(categorical, (CategoricalColumn, WeightedColumn)):
        raise ValueError(f"{what} needs a categorical column, got {type(categorical).__name__}")
    return categorical


def _check_embedding(categorical: Any, dim: Any, combiner: str, what: str) -> None:
    _check(categorical, what)
    check_int(dim, f"{what}({categorical.name!r}) dim")
    if combiner not in COMBINERS:
        raise ValueError(f"{what}({categorical.name!r}): combiner={combiner!r}; "
                         f"expected one of {tuple(COMBINERS)}")


def embedding(categorical: CategoricalColumn | WeightedColumn, dim: int, combiner: str = "mean",
              max_norm: float | None = None, name: str | None = None) -> EmbeddingColumn:
    """Dense embedding of a categorical column (``embedding_column``).

    >>> emb = embedding(categorical_vocab("country"), dim=8)  # doctest: +SKIP
    """
    _check_embedding(categorical, dim, combiner, "embedding")
    return EmbeddingColumn(categorical, name or f"{categorical.name}_embedding", int(dim),
                           combiner, max_norm)


def shared_embeddings(categoricals: Sequence[CategoricalColumn], dim: int, combiner: str = "mean",
                      max_norm: float | None = None,
                      shared_name: str | None = None) -> list[EmbeddingColumn]:
    """Embeddings of several categorical columns sharing one table (``shared_embeddings``),
    with as many rows as the largest ``num_buckets`` among them."""
    cats = list(categoricals)
    if len(cats) < 2:
        raise ValueError("shared_embeddings needs at least two categorical columns")
    for c in cats:
        _check_embedding(c, dim, combiner, "shared_embeddings")
    group = shared_name or "_".join(sorted(c.name for c in cats)) + "_shared_embedding"
    return [EmbeddingColumn(c, f"{c.name}_shared_embedding", int(dim), combiner, max_norm, group)
            for c in cats]


def indicator(categorical: CategoricalColumn | WeightedColumn,
              name: str | None = None) -> IndicatorColumn:
    """One-hot / multi-hot of a categorical column (``indicator_column``)."""
    _check(categorical, "indicator")
    return IndicatorColumn(categorical, name or f"{categorical.name}_indicator")
