"""The features README's example feature set over the click log (examples/clicklog.py).

shardforge run --features shardforge/examples/click_features.py --input clicks.csv --output out/
"""

from importlib import resources

import shardforge.features as sf

price = sf.numeric("price", default=0.0, normalize="zscore")  # mean/std learned
age = sf.bucketized(sf.numeric("age", default=0), num_buckets=10)  # boundaries learned as quantiles
country = sf.categorical_vocab("country", top_k=100, num_oov_buckets=1)  # vocabulary learned
item = sf.categorical_hash("item_id", hash_bucket_size=100_000)
cross = sf.crossed([country, age], hash_bucket_size=1000)
query = sf.text("query", tokenizer="whitespace", top_k=2000)  # varlen token ids

# Geo columns (docs/geo.md) over the click's location: km to three hubs (z-scored), a learned 8x16
# lat/lon grid cell crossed with the country, and the coarse example regions shipped with the
# package (named through it: Beam workers load this file's source, not the files beside it).
# Bad coordinates would be row errors; the click log has none.
where = sf.geo_point("lat", "lon")
hubs = [(40.7128, -74.0060), (51.5074, -0.1278), (35.6762, 139.6503)]  # New York, London, Tokyo
to_hubs = sf.geo_distance(where, to=hubs, normalize="zscore", name="km_to_hubs")
cell = sf.geo_grid(where, lat_buckets=8, lon_buckets=16, name="cell")  # quantile boundaries
cell_x_country = sf.crossed([cell, country], hash_bucket_size=2000, name="cell_x_country")
regions = resources.files("shardforge.examples") / "regions.geojson"
region = sf.geo_region(where, regions, name="region")  # 8 regions + an "outside" id

FEATURES = sf.FeatureSet(
    [
        price,
        age,
        sf.embedding(country, dim=8),
        sf.embedding(item, dim=16),
        sf.indicator(cross),
        sf.embedding(query, dim=32, combiner="mean"),
        to_hubs,
        sf.embedding(cell_x_country, dim=8),
        sf.embedding(region, dim=4),
    ],
    label=sf.numeric("label", dtype="int64"),
)
