"""Declarative feature columns, mergeable analyzers and pure vectorized transforms.

>>> import shardforge.features as sf
>>> fs = sf.FeatureSet([sf.numeric("price", default=0.0, normalize="zscore"),
...                     sf.embedding(sf.categorical_vocab("country", top_k=100), dim=8)],
...                    label=sf.numeric("label", dtype="int64"))

``fs.fit(batches)`` learns a :class:`TransformState` in one pass, ``fs.transform(batch, state)``
applies it, ``state.save("out/")`` writes ``schema.pbtxt``. Every built-in column is written
with the public column API (:class:`Column`, :class:`Input`, :class:`Output`, the analyzers);
see :mod:`shardforge.features.column` to write your own. Importing this package never imports
torch or TensorFlow; ``FeatureLayer`` (torch) is loaded on first access.
"""

from shardforge.features.analyzers import (
    Boundaries,
    FixedVocabulary,
    NumericStats,
    Quantiles,
    Stats,
    Vocab,
    Vocabulary,
)
from shardforge.features.categorical import (
    CategoricalColumn,
    HashColumn,
    IdentityColumn,
    LookupColumn,
    VocabColumn,
    WeightedColumn,
    categorical_hash,
    categorical_identity,
    categorical_vocab,
    categorical_vocab_file,
    categorical_vocab_list,
    sequence,
    weighted_categorical,
)
from shardforge.features.codebook import ImageTokensColumn, KMeansCodebook, image_tokens
from shardforge.features.column import Column, Input, Output, RowError, WithErrors
from shardforge.features.crossed import CrossedColumn, crossed
from shardforge.features.dense import (
    EmbeddingColumn,
    IndicatorColumn,
    embedding,
    indicator,
    shared_embeddings,
)
from shardforge.features.feature_set import (
    FeatureSet,
    FeatureSetAnalyzer,
    TransformError,
    load_feature_set,
)
from shardforge.features.geo import (
    geo_bearing,
    geo_distance,
    geo_grid,
    geo_point,
    geo_region,
    geohash,
    geohash_cells,
)
from shardforge.features.hashing import StrBuf, fingerprint64, hash_bucket
from shardforge.features.image import ImageColumn, image
from shardforge.features.numeric import BucketizedColumn, NumericColumn, bucketized, numeric
from shardforge.features.state import Schema, TransformState, load_schema
from shardforge.features.strings import (
    as_string,
    join,
    lower,
    ngrams,
    regex_replace,
    regex_split,
    split,
    strip,
)
from shardforge.features.text import ByteIds, text

__all__ = [
    "Boundaries",
    "BucketizedColumn",
    "ByteIds",
    "CategoricalColumn",
    "Column",
    "CrossedColumn",
    "EmbeddingColumn",
    "FeatureLayer",
    "FeatureSet",
    "FeatureSetAnalyzer",
    "FixedVocabulary",
    "HashColumn",
    "IdentityColumn",
    "ImageColumn",
    "ImageTokensColumn",
    "IndicatorColumn",
    "Input",
    "KMeansCodebook",
    "LookupColumn",
    "NumericColumn",
    "NumericStats",
    "Output",
    "Quantiles",
    "RowError",
    "Schema",
    "Stats",
    "StrBuf",
    "TransformError",
    "TransformState",
    "Vocab",
    "VocabColumn",
    "Vocabulary",
    "WeightedColumn",
    "WithErrors",
    "as_string",
    "bucketized",
    "categorical_hash",
    "categorical_identity",
    "categorical_vocab",
    "categorical_vocab_file",
    "categorical_vocab_list",
    "crossed",
    "embedding",
    "fingerprint64",
    "geo_bearing",
    "geo_distance",
    "geo_grid",
    "geo_point",
    "geo_region",
    "geohash",
    "geohash_cells",
    "hash_bucket",
    "image",
    "image_tokens",
    "indicator",
    "join",
    "load_feature_set",
    "load_schema",
    "lower",
    "ngrams",
    "numeric",
    "regex_replace",
    "regex_split",
    "sequence",
    "shared_embeddings",
    "split",
    "strip",
    "text",
    "weighted_categorical",
]


def __getattr__(name: str):
    if name == "FeatureLayer":  # torch is imported only when the layer is used
        from shardforge.features.layer import FeatureLayer

        return FeatureLayer
    raise AttributeError(f"module 'shardforge.features' has no attribute {name!r}")

# tf.Transform mappers beyond the feature-column set (docs/features.md, "Migrating from
# tf.Transform")
from shardforge.features.density import (  # noqa: E402
    Histogram,
    ProbabilityDensity,
    estimated_probability_density,
    histogram_bins,
)
from shardforge.features.gaussian import (  # noqa: E402
    GaussianScaled,
    TukeyParams,
    l_moments,
    scale_to_gaussian,
    tukey_parameters,
)
from shardforge.features.interpolation import (  # noqa: E402
    BucketInterpolated,
    bucket_interpolated,
    interpolate_buckets,
)
from shardforge.features.keyed_hash import KeyedHashColumn, hash_strings, siphash24  # noqa: E402
from shardforge.features.linalg import (  # noqa: E402
    PCA,
    Covariance,
    PCAProjection,
    Sum,
    pca_projection,
)
from shardforge.features.per_key import (  # noqa: E402
    KeyedQuantiles,
    KeyedStats,
    PerKeyBucketized,
    PerKeyScaled,
    bucketize_elementwise,
    bucketize_per_key,
    scale_by_min_max_per_key,
    scale_elementwise,
    scale_to_0_1_per_key,
    scale_to_z_score_per_key,
)
from shardforge.features.textstats import (  # noqa: E402
    BagOfIds,
    Deduplicated,
    DocumentFrequency,
    SegmentIndices,
    TfidfWeights,
    WordCount,
    bag_of_words,
    deduplicate,
    idf,
    segment_indices,
    tfidf,
    word_count,
)
from shardforge.features.vocab_ranked import (  # noqa: E402
    RankedVocabColumn,
    RankedVocabulary,
    categorical_vocab_ranked,
)

__all__ += [
    "PCA",
    "BagOfIds",
    "BucketInterpolated",
    "Covariance",
    "Deduplicated",
    "DocumentFrequency",
    "GaussianScaled",
    "Histogram",
    "KeyedHashColumn",
    "KeyedQuantiles",
    "KeyedStats",
    "PCAProjection",
    "PerKeyBucketized",
    "PerKeyScaled",
    "ProbabilityDensity",
    "RankedVocabColumn",
    "RankedVocabulary",
    "SegmentIndices",
    "Sum",
    "TfidfWeights",
    "TukeyParams",
    "WordCount",
    "bag_of_words",
    "bucket_interpolated",
    "bucketize_elementwise",
    "bucketize_per_key",
    "categorical_vocab_ranked",
    "deduplicate",
    "estimated_probability_density",
    "hash_strings",
    "histogram_bins",
    "idf",
    "interpolate_buckets",
    "l_moments",
    "pca_projection",
    "scale_by_min_max_per_key",
    "scale_elementwise",
    "scale_to_gaussian",
    "scale_to_0_1_per_key",
    "scale_to_z_score_per_key",
    "segment_indices",
    "siphash24",
    "tfidf",
    "tukey_parameters",
    "word_count",
]
