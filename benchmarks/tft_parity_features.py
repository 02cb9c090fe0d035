"""``benchmarks/pipeline_bench.py``'s tf.Transform ``preprocessing_fn``, column for column, as a
shardforge feature set: the like-for-like comparison (the example feature set,
``shardforge/examples/click_features.py``, adds three geo columns tf.Transform has no peer for)::

    "price": tft.scale_to_z_score(price, missing → 0.0)      → numeric, zscore, default 0.0
    "age_bucketized": tft.bucketize(age, 10)                  → bucketized, 10 quantile buckets
    "country": compute_and_apply_vocabulary(top_k=100, oov 1) → categorical_vocab
    "item_id": tf.strings.to_hash_bucket_fast(item_id, 1e5)   → categorical_hash
    "age_bucketized_X_country": sparse.cross_hashed(…, 1000)  → crossed, 1000 buckets
    "query": compute_and_apply_vocabulary(split, top_k=2000)  → text, whitespace, top 2000
    "label": label                                            → the label

    shardforge run --features benchmarks/tft_parity_features.py --input clicks.csv --output out/
"""

import shardforge.features as sf

age = sf.bucketized(sf.numeric("age", default=0.0), num_buckets=10)
country = sf.categorical_vocab("country", top_k=100, num_oov_buckets=1)

FEATURES = sf.FeatureSet(
    [
        sf.numeric("price", default=0.0, normalize="zscore"),
        age,
        country,
        sf.categorical_hash("item_id", hash_bucket_size=100_000),
        sf.crossed([age, country], hash_bucket_size=1000),
        sf.text("query", tokenizer="whitespace", top_k=2000),
    ],
    label=sf.numeric("label", dtype="int64"),
)
