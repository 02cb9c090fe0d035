"""The geo columns in a FeatureSet: outputs against direct formulas, sf's own columns and shapely;
the bad-input rule (row errors, never a poisoned statistic); state round trips."""

import json
import math
import os

import numpy as np
import pytest

import shardforge.examples
import shardforge.features as sf
from shardforge import geometry

shapely = pytest.importorskip("shapely")

REGIONS = os.path.join(os.path.dirname(shardforge.examples.__file__), "regions.geojson")


def _batch(n=2000, seed=0, **extra):
    rng = np.random.default_rng(seed)
    b = {"lat": rng.uniform(-60, 70, n).astype(np.float32),
         "lon": rng.uniform(-180, 180, n).astype(np.float32)}
    b.update(extra)
    return b


def _poisoned(b):
    """Bad rows 0..4: lat out of range, lon out of range, NaN (missing), inf, lon = -180.5."""
    b = {k: v.copy() for k, v in b.items()}
    b["lat"][:5] = [91.0, 10.0, np.nan, np.inf, 10.0]
    b["lon"][:5] = [0.0, 1e4, 0.0, 0.0, -180.5]
    return b


def _fit_transform(columns, batch, **kw):
    fs = sf.FeatureSet(columns)
    state = fs.fit([batch])
    return fs, state, fs.transform(batch, state, **kw)


# --------------------------------------------------------------------------- bad input


def test_bad_coordinates_are_row_errors_and_never_reach_a_statistic():
    p = sf.geo_point("lat", "lon")
    cols = [sf.geo_distance(p, to=(40.7128, -74.0060), normalize="zscore", name="d"),
            sf.geo_grid(p, lat_buckets=5, lon_buckets=5, name="cell"),
            sf.geohash_cells(p, precision=3, top_k=20, name="gh")]
    clean = _batch()
    bad = _poisoned(clean)
    fs, state, (out, errors) = _fit_transform(cols, bad, errors="collect")
    assert sorted(e.row for e in errors) == [0, 1, 2, 3, 4]
    assert {e.feature for e in errors} <= {"lat", "lat_lon"}
    assert len(out["d"]) == len(bad["lat"]) - 5
    # the state equals the one learned from the good rows alone
    good = {k: v[5:] for k, v in clean.items()}
    assert state == sf.FeatureSet(cols).fit([good])
    with pytest.raises(sf.TransformError, match="invalid coordinates"):
        fs.transform(bad, state)
    np.testing.assert_array_equal(out["d"], fs.transform(good, state)["d"])


def test_wrap_longitude():
    p = sf.geo_point("lat", "lon", wrap_longitude=True)
    b = {"lat": np.array([0.0, 0.0, 0.0, 0.0, 0.0]),
         "lon": np.array([190.0, -190.0, 540.0, 180.0, np.inf])}
    fs = sf.FeatureSet([sf.geo_distance(p, to=(0.0, 0.0), name="d")])
    state = fs.fit([{k: v[:4] for k, v in b.items()}])
    out, errors = fs.transform(b, state, errors="collect")
    assert [e.row for e in errors] == [4]
    km_per_deg = math.pi * geometry.EARTH_RADIUS_KM / 180
    np.testing.assert_allclose(out["d"], np.array([170, 170, 180, 180]) * km_per_deg, rtol=1e-6)


def test_coordinates_must_be_declared_without_a_default():
    with pytest.raises(ValueError, match="declared twice differently"):
        sf.FeatureSet([sf.numeric("lat", default=0.0), sf.geo_distance(("lat", "lon"), to=(0, 0))])


# --------------------------------------------------------------------------- distance / bearing


def test_distance_to_reference_points_and_between_point_columns():
    b = _batch(n=500)
    rng = np.random.default_rng(1)
    b["drop_lat"] = rng.uniform(-60, 70, 500).astype(np.float32)
    b["drop_lon"] = rng.uniform(-180, 180, 500).astype(np.float32)
    pick, drop = sf.geo_point("lat", "lon"), sf.geo_point("drop_lat", "drop_lon")
    refs = [(51.5074, -0.1278), (-33.8688, 151.2093), (35.6762, 139.6503)]
    cols = [sf.geo_distance(pick, to=refs, name="to_cities"),
            sf.geo_distance(pick, other=drop, name="trip_km"),
            sf.geo_distance(pick, to=refs[0], normalize="log1p", name="log_to_london"),
            sf.geo_bearing(pick, other=drop, name="heading"),
            sf.geo_bearing(pick, to=refs, sincos=True, name="heading_sc")]
    fs, state, out = _fit_transform(cols, b)
    lat, lon = b["lat"].astype(np.float64), b["lon"].astype(np.float64)
    dlat, dlon = b["drop_lat"].astype(np.float64), b["drop_lon"].astype(np.float64)

    def hav(a1, o1, a2, o2):
        return [_hav_row(*r) for r in zip(a1, o1, a2, o2)]

    assert out["to_cities"].shape == (500, 3) and out["to_cities"].dtype == np.float32
    for k, (rl, ro) in enumerate(refs):
        np.testing.assert_allclose(out["to_cities"][:, k], hav(lat, lon, [rl] * 500, [ro] * 500),
                                   rtol=1e-6)
    np.testing.assert_allclose(out["trip_km"], hav(lat, lon, dlat, dlon), rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(out["log_to_london"], np.log1p(out["to_cities"][:, 0]), rtol=1e-6)
    heading = np.degrees(np.arctan2(
        np.sin(np.radians(dlon - lon)) * np.cos(np.radians(dlat)),
        np.cos(np.radians(lat)) * np.sin(np.radians(dlat))
        - np.sin(np.radians(lat)) * np.cos(np.radians(dlat)) * np.cos(np.radians(dlon - lon))))
    np.testing.assert_allclose(out["heading"], heading % 360, atol=1e-3)
    sc = out["heading_sc"]
    assert sc.shape == (500, 3, 2)
    np.testing.assert_allclose(sc[..., 0] ** 2 + sc[..., 1] ** 2, 1.0, rtol=1e-6)
    schema = fs.schema(state)
    assert list(schema.feature("to_cities").shape) == [3]
    assert list(schema.feature("heading_sc").shape) == [3, 2]


def _hav_row(lat1, lon1, lat2, lon2, r=geometry.EARTH_RADIUS_KM):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * r * math.asin(math.sqrt(a))


def test_learned_normalization_matches_numeric_zscore_of_the_distances():
    b = _batch()
    p = sf.geo_point("lat", "lon")
    fs, state, out = _fit_transform([sf.geo_distance(p, to=(0.0, 0.0), normalize="zscore",
                                                     name="z"),
                                     sf.geo_distance(p, to=(0.0, 0.0), name="km")], b)
    km = out["km"].astype(np.float64)
    np.testing.assert_allclose(out["z"], (km - km.mean()) / km.std(), rtol=1e-5, atol=1e-5)
    reloaded = sf.TransformState(state.proto)
    np.testing.assert_array_equal(fs.transform(b, reloaded)["z"], out["z"])


def test_declaration_errors():
    p = sf.geo_point("lat", "lon")
    with pytest.raises(ValueError, match="exactly one of to="):
        sf.geo_distance(p)
    with pytest.raises(ValueError, match="reference points must have lat"):
        sf.geo_distance(p, to=(95.0, 0.0))
    with pytest.raises(ValueError, match="normalize="):
        sf.geo_distance(p, to=(0, 0), normalize="clip")
    with pytest.raises(ValueError, match="exactly one of boundaries"):
        sf.geo_grid(p, lat_buckets=4)
    with pytest.raises(ValueError, match="strictly increasing"):
        sf.geo_grid(p, lat_boundaries=[1, 0], lon_buckets=3)
    with pytest.raises(ValueError, match="precision"):
        sf.geohash(p, precision=13)
    with pytest.raises(ValueError, match="default_value"):
        sf.geo_region(p, REGIONS, default_value=99)
    with pytest.raises(ValueError, match="geo_point"):
        sf.geo_grid("lat", lat_buckets=2, lon_buckets=2)
    with pytest.raises(geometry.GeoJSONError, match="cannot read .*Beam workers included"):
        sf.geo_region(p, "/nonexistent/regions.geojson")


# --------------------------------------------------------------------------- grid cells


def test_grid_cells_equal_bucketized_lat_times_lon():
    b = _batch()
    p = sf.geo_point("lat", "lon")
    lat_b = list(range(-60, 71, 10))
    fs, state, out = _fit_transform([sf.geo_grid(p, lat_boundaries=lat_b, lon_buckets=6,
                                                 name="cell")], b)
    # the same buckets through sf.bucketized (explicit and learned, TensorFlow's rule)
    ref_fs = sf.FeatureSet([sf.bucketized(sf.numeric("lat"), boundaries=lat_b, name="i"),
                            sf.bucketized(sf.numeric("lon"), num_buckets=6, name="j")])
    ref = ref_fs.transform(b, ref_fs.fit([b]))
    np.testing.assert_array_equal(out["cell"], ref["i"] * 6 + ref["j"])
    assert fs.schema(state).feature("cell").num_buckets == (len(lat_b) + 1) * 6


def test_cell_cross_with_a_vocabulary_column():
    rng = np.random.default_rng(2)
    b = _batch(country=rng.choice(np.array([b"us", b"fr", b"jp"], dtype=object), 2000))
    cell = sf.geo_grid(("lat", "lon"), lat_buckets=4, lon_buckets=4, name="cell")
    country = sf.categorical_vocab("country")
    cross = sf.crossed([cell, country], hash_bucket_size=97, name="cell_x_country")
    fs, state, out = _fit_transform([cross, cell, country], b)
    ids = out["cell_x_country"]
    assert ids.min() >= 0 and ids.max() < 97
    # the cross is a function of (cell, country) alone
    pairs = {}
    for c, k, i in zip(out["cell"], out["country"], ids):
        assert pairs.setdefault((c, k), i) == i
    assert len(pairs) > 20


# --------------------------------------------------------------------------- geohash


def test_geohash_cells_are_a_vocabulary_of_geohash_strings():
    b = _batch(n=5000)
    fs, state, out = _fit_transform(
        [sf.geohash(("lat", "lon"), precision=2, name="gh"),
         sf.geohash_cells(("lat", "lon"), precision=2, top_k=30, num_oov_buckets=3, name="ids")],
        b)
    strings = out["gh"]
    want = [geometry.geohash_encode(np.array([a], np.float64), np.array([o], np.float64), 2)
            for a, o in zip(b["lat"], b["lon"])]
    assert strings.tolist() == [bytes(w[0]) for w in want]
    # the same ids as sf.categorical_vocab over the strings as a raw input
    raw = {"g": strings}
    ref_fs = sf.FeatureSet([sf.categorical_vocab("g", top_k=30, num_oov_buckets=3)])
    np.testing.assert_array_equal(out["ids"], ref_fs.transform(raw, ref_fs.fit([raw]))["g"])
    assert fs.schema(state).feature("ids").num_buckets == 33
    assert (out["ids"] >= 30).any()  # some cells are out of the vocabulary


# --------------------------------------------------------------------------- regions


def _shapely_covers(points_latlon, predicate=shapely.covers):
    with open(REGIONS) as f:
        fc = json.load(f)
    shapes = [shapely.from_geojson(json.dumps(ft["geometry"])) for ft in fc["features"]]
    pts = shapely.points(points_latlon[:, 1], points_latlon[:, 0])
    return np.stack([predicate(s, pts) for s in shapes], axis=1)


def _region_probe():
    """Random points, plus the vertices and edge midpoints of the shipped regions (float32-exact
    there: the coordinates are integers or have few digits)."""
    b = _batch(n=3000)
    with open(REGIONS) as f:
        fc = json.load(f)
    extra = []
    for ft in fc["features"]:
        polys = ft["geometry"]["coordinates"]
        polys = polys if ft["geometry"]["type"] == "MultiPolygon" else [polys]
        for rings in polys:
            for ring in rings:
                c = np.asarray(ring, np.float64)
                extra += [c, (c[:-1] + c[1:]) / 2]
    e = np.vstack(extra)
    e = e[(e.astype(np.float32).astype(np.float64) == e).all(axis=1)]  # exact in float32
    lat = np.concatenate([b["lat"], e[:, 1].astype(np.float32)])
    lon = np.concatenate([b["lon"], e[:, 0].astype(np.float32)])
    return {"lat": lat, "lon": lon}, len(e)


def test_region_ids_match_shapely_covers_on_the_shipped_regions():
    b, n_edge_points = _region_probe()
    assert n_edge_points > 100
    p = sf.geo_point("lat", "lon")
    cols = [sf.geo_region(p, REGIONS, name="region"),
            sf.geo_region(p, REGIONS, multiple=True, default_value=-1, name="regions"),
            sf.geo_region(p, REGIONS, multiple=True, name="regions_or_outside"),
            sf.geo_region(p, REGIONS, default_value=-1, name="region_or_none"),
            sf.geo_region(p, REGIONS, multiple=True, default_value=-1, boundary_inside=False,
                          name="regions_strict")]
    fs, state, out = _fit_transform(cols, b)
    covers = _shapely_covers(np.c_[b["lat"], b["lon"]].astype(np.float64))
    contains = _shapely_covers(np.c_[b["lat"], b["lon"]].astype(np.float64), shapely.contains)
    np.testing.assert_array_equal(out["regions_strict"].values, np.nonzero(contains)[1])
    np.testing.assert_array_equal(np.diff(out["regions_strict"].row_splits), contains.sum(axis=1))
    assert (covers.sum(axis=1) > contains.sum(axis=1)).sum() > 100  # boundary points probed
    n_regions = covers.shape[1]
    first = np.where(covers.any(axis=1), covers.argmax(axis=1), n_regions)
    np.testing.assert_array_equal(out["region"], first)
    np.testing.assert_array_equal(out["region_or_none"], np.where(first == n_regions, -1, first))
    rows = out["regions"]
    np.testing.assert_array_equal(rows.values, np.nonzero(covers)[1])
    np.testing.assert_array_equal(np.diff(rows.row_splits), covers.sum(axis=1))
    filled = out["regions_or_outside"]
    lengths = np.diff(filled.row_splits)
    assert (lengths == np.maximum(covers.sum(axis=1), 1)).all()
    assert (filled.values[filled.row_splits[:-1][~covers.any(axis=1)]] == n_regions).all()
    assert (covers.sum(axis=1) >= 2).sum() > 100  # overlapping regions (tropics) exercised
    schema = fs.schema(state)
    assert schema.feature("region").num_buckets == n_regions + 1
    assert schema.feature("region_or_none").num_buckets == n_regions
    assert schema.feature("regions").varlen
    assert state.columns["region"]["regions"].values[:2] == [b"north_america", b"south_america"]


def test_region_state_pins_the_geojson_file(tmp_path):
    path = tmp_path / "r.geojson"
    square = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    path.write_text(json.dumps(square))
    b = {"lat": np.array([5.0, 20.0, 10.0]), "lon": np.array([5.0, 5.0, 0.0])}
    fs = sf.FeatureSet([sf.geo_region(("lat", "lon"), path, name="r")])
    state = fs.fit([b])
    np.testing.assert_array_equal(fs.transform(b, state)["r"], [0, 1, 0])  # on a vertex: inside
    state.save(str(tmp_path / "out"))
    reloaded = sf.TransformState.load(str(tmp_path / "out"))
    np.testing.assert_array_equal(fs.transform(b, reloaded)["r"], [0, 1, 0])
    square["coordinates"][0][1] = [20, 0]
    path.write_text(json.dumps(square))
    changed = sf.FeatureSet([sf.geo_region(("lat", "lon"), path, name="r")])
    with pytest.raises(ValueError, match="not the file the state was fit with"):
        changed.transform(b, state)


def test_invalid_geojson_fails_at_declaration_naming_the_feature(tmp_path):
    path = tmp_path / "bad.geojson"
    bowtie = [[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "bow"},
         "geometry": {"type": "Polygon", "coordinates": [bowtie]}}]}))
    with pytest.raises(geometry.GeoJSONError, match=r"feature 0 \('bow'\): ring 0 self-inter"):
        sf.geo_region(("lat", "lon"), path)


def test_geo_feature_set_pickles_like_beam_ships_it():
    import pickle

    b, _ = _region_probe()
    p = sf.geo_point("lat", "lon")
    fs = sf.FeatureSet([sf.geo_region(p, REGIONS, multiple=True, name="r"),
                        sf.geo_grid(p, lat_buckets=3, lon_buckets=3, name="cell")])
    state = fs.fit([b])
    out = fs.transform(b, state)
    again = pickle.loads(pickle.dumps(fs)).transform(b, state)
    np.testing.assert_array_equal(again["r"].values, out["r"].values)
    np.testing.assert_array_equal(again["cell"], out["cell"])


def test_click_example_has_a_distance_a_cell_cross_and_a_region():
    from shardforge.examples.click_features import FEATURES
    from shardforge.examples.clicklog import generate_clicklog

    batch, errors = FEATURES.coerce(generate_clicklog(3000, seed=5))
    assert errors == []
    state = FEATURES.fit([batch])
    out = FEATURES.transform(batch, state)
    lat, lon = batch["lat"].astype(np.float64), batch["lon"].astype(np.float64)
    index = geometry.RegionIndex(geometry.load_regions(REGIONS))
    np.testing.assert_array_equal(out["region"], index.first(lon, lat, default=8))
    km = geometry.haversine_km(lat[:, None], lon[:, None], np.array([[40.7128, 51.5074, 35.6762]]),
                               np.array([[-74.0060, -0.1278, 139.6503]]))
    km32 = km.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(out["km_to_hubs"], (km32 - km32.mean()) / km32.std(), atol=1e-5)
    ids = out["cell_x_country"]
    assert ids.min() >= 0 and ids.max() < 2000 and len(np.unique(ids)) > 100
    schema = FEATURES.schema(state)
    assert schema.feature("region").num_buckets == 9
    assert [p.name for p in schema.dense][-3:] == ["km_to_hubs", "cell_x_country_embedding",
                                                    "region_embedding"]
