"""The features README's example feature set over the click log (examples/clicklog.py).

shardforge run --features shardforge/examples/click_features.py --input clicks.csv --output out/
"""

import shardforge.features as sf

price = sf.numeric("price", default=0.0, normalize="zscore")  # mean/std learned
age = sf.bucketized(sf.numeric("age", default=0), num_buckets=10)  # boundaries learned as quantiles
country = sf.categorical_vocab("country", top_k=100, num_oov_buckets=1)  # vocabulary learned
item = sf.categorical_hash("item_id", hash_bucket_size=100_000)
cross = sf.crossed([country, age], hash_bucket_size=1000)
query = sf.text("query", tokenizer="whitespace", top_k=2000)  # varlen token ids

FEATURES = sf.FeatureSet(
    [
        price,
        age,
        sf.embedding(country, dim=8),
        sf.embedding(item, dim=16),
        sf.indicator(cross),
        sf.embedding(query, dim=32, combiner="mean"),
    ],
    label=sf.numeric("label", dtype="int64"),
)
