"""A tf.Transform ``preprocessing_fn`` migrated to shardforge (README, "Migrating from
tf.Transform"): the click log of ``examples/clicklog.py``, column by column::

    def preprocessing_fn(inputs):                      # inputs parsed with FixedLenFeature
        age_bucket = tft.bucketize(inputs["age"], 10)  # defaults: missing values filled
        words = tf.strings.split(inputs["query"], sep=" ")
        return {
            "price_z": tft.scale_to_z_score(inputs["price"]),
            "age_bucket": age_bucket,
            "country": tft.compute_and_apply_vocabulary(inputs["country"], top_k=100,
                                                        num_oov_buckets=1),
            "item_frequent": tft.compute_and_apply_vocabulary(inputs["item_id"],
                                                              frequency_threshold=10),
            "item_top": tft.compute_and_apply_vocabulary(inputs["item_id"], top_k=5000,
                                                         num_oov_buckets=100),
            "query": tft.compute_and_apply_vocabulary(words, top_k=2000, num_oov_buckets=1),
            "country_age": tf.strings.to_hash_bucket_fast(
                inputs["country"] + "_" + tf.strings.as_string(age_bucket), 1000),
            "lat_bucket": tft.bucketize(inputs["lat"], 20),
            "lon_bucket": tft.bucketize(inputs["lon"], 20),
            "label": inputs["label"],
        }

``benchmarks/tft_parity.py`` runs both on the same CSV and counts the rows that differ::

    shardforge run --features shardforge/examples/tft_features.py --input clicks.csv --output out/
"""

import shardforge.features as sf

age_bucket = sf.bucketized(sf.numeric("age", dtype="int64", default=0), num_buckets=10,
                           name="age_bucket")

FEATURES = sf.FeatureSet(
    [
        sf.numeric("price", default=0.0, normalize="zscore", name="price_z"),
        age_bucket,
        sf.categorical_vocab("country", top_k=100, num_oov_buckets=1),
        sf.categorical_vocab("item_id", frequency_threshold=10, name="item_frequent"),
        sf.categorical_vocab("item_id", top_k=5000, num_oov_buckets=100, name="item_top"),
        sf.sequence(sf.categorical_vocab(sf.split("query", sep=" "), top_k=2000,
                                         num_oov_buckets=1, name="query")),
        sf.categorical_hash(sf.join(["country", age_bucket], "_"), 1000, name="country_age"),
        sf.bucketized(sf.numeric("lat", default=0.0), num_buckets=20, name="lat_bucket"),
        sf.bucketized(sf.numeric("lon", default=0.0), num_buckets=20, name="lon_bucket"),
    ],
    label=sf.numeric("label", dtype="int64"),
)
