"""Declarative feature columns, mergeable analyzers and pure vectorized transforms.

>>> import shardforge.features as sf
>>> fs = sf.FeatureSet([sf.numeric("price", default=0.0, normalize="zscore"),
...                     sf.embedding(sf.categorical_vocab("country", top_k=100), dim=8)],
...                    label=sf.numeric("label", dtype="int64"))

``fs.fit(batches)`` learns a :class:`TransformState` in one pass, ``fs.transform(batch, state)``
applies it, ``state.save("out/")`` writes ``schema.pbtxt``. Importing this package never imports
torch or TensorFlow; ``FeatureLayer`` (torch) is loaded on first access.
"""

from shardforge.features.analyzers import NumericStats, Quantiles, Vocabulary
from shardforge.features.columns import (
    Column,
    Input,
    bucketized,
    categorical_hash,
    categorical_identity,
    categorical_vocab,
    categorical_vocab_file,
    categorical_vocab_list,
    crossed,
    embedding,
    indicator,
    numeric,
    sequence,
    shared_embeddings,
    text,
    weighted_categorical,
)
from shardforge.features.feature_set import (
    FeatureSet,
    FeatureSetAnalyzer,
    RowError,
    TransformError,
    load_feature_set,
)
from shardforge.features.hashing import fingerprint64, hash_bucket
from shardforge.features.state import Schema, TransformState, load_schema

__all__ = [
    "Column",
    "FeatureLayer",
    "FeatureSet",
    "FeatureSetAnalyzer",
    "Input",
    "NumericStats",
    "Quantiles",
    "RowError",
    "Schema",
    "TransformError",
    "TransformState",
    "Vocabulary",
    "bucketized",
    "categorical_hash",
    "categorical_identity",
    "categorical_vocab",
    "categorical_vocab_file",
    "categorical_vocab_list",
    "crossed",
    "embedding",
    "fingerprint64",
    "hash_bucket",
    "indicator",
    "load_feature_set",
    "load_schema",
    "numeric",
    "sequence",
    "shared_embeddings",
    "text",
    "weighted_categorical",
]


def __getattr__(name: str):
    if name == "FeatureLayer":  # torch is imported only when the layer is used
        from shardforge.features.layer import FeatureLayer

        return FeatureLayer
    raise AttributeError(f"module 'shardforge.features' has no attribute {name!r}")
