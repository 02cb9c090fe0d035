"""Computational geometry shared by the geo columns and anyone else: great-circle distance,
bearing and geohash (:mod:`~shardforge.geometry.sphere`), exact point-in-polygon and a region
index over GeoJSON polygons (:mod:`~shardforge.geometry.regions`).

Everything works on columnar float64 arrays; the hot loops are numba kernels.

>>> from shardforge import geometry
>>> round(float(geometry.haversine_km(51.5074, -0.1278, 48.8566, 2.3522)), 1)  # London - Paris
343.6
"""

from shardforge.geometry.regions import (
    GeoJSONError,
    Polygon,
    Region,
    RegionIndex,
    load_regions,
    orient,
)
from shardforge.geometry.sphere import (
    EARTH_RADIUS_KM,
    GEOHASH_ALPHABET,
    MAX_GEOHASH_PRECISION,
    geohash_encode,
    haversine_km,
    initial_bearing_deg,
)

__all__ = [
    "EARTH_RADIUS_KM",
    "GEOHASH_ALPHABET",
    "MAX_GEOHASH_PRECISION",
    "GeoJSONError",
    "Polygon",
    "Region",
    "RegionIndex",
    "geohash_encode",
    "haversine_km",
    "initial_bearing_deg",
    "load_regions",
    "orient",
]
