"""Geographic feature columns: validated points, great-circle distance and bearing, grid cells,
geohash cells and GeoJSON regions, written with the public column API.

Every geo column reads a :func:`geo_point` (a latitude and a longitude input, in degrees) and
shares its rule for bad input: a missing coordinate (no default: a made-up place would poison
every distance and region), a latitude outside [-90, 90], a longitude outside [-180, 180] (unless
``wrap_longitude=True``, which wraps it into [-180, 180)) or a non-finite one makes the row a row
error (``errors/`` in a job), and the analyzers never see it. The geometry is in
:mod:`shardforge.geometry`; docs/geo.md has the full reference.

>>> import shardforge.features as sf
>>> pickup = sf.geo_point("lat", "lon")
>>> fs = sf.FeatureSet([
...     sf.geo_distance(pickup, to=(40.7580, -73.9855), normalize="zscore", name="to_times_sq"),
...     sf.geo_grid(pickup, lat_buckets=8, lon_buckets=8, name="cell"),
...     sf.geohash_cells(pickup, precision=5, top_k=1000, num_oov_buckets=8, name="gh5"),
... ])
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardforge.features.analyzers import FixedVocabulary, Quantiles
from shardforge.features.categorical import CategoricalColumn, VocabColumn, categorical_vocab
from shardforge.features.column import Column, Input, Output, WithErrors, check_int, check_name
from shardforge.features.hashing import StrBuf
from shardforge.features.numeric import NORMALIZERS, NumericColumn, numeric
from shardforge.geometry import (
    EARTH_RADIUS_KM,
    MAX_GEOHASH_PRECISION,
    GeoJSONError,
    RegionIndex,
    geohash_encode,
    haversine_km,
    initial_bearing_deg,
    load_regions,
)
from shardforge.records.spec import Ragged

# --------------------------------------------------------------------------- points


@dataclass(frozen=True)
class GeoPointColumn(Column):
    """Validated (lat, lon) degrees of each row as a ``[B, 2]`` float64 array (see the module
    docstring for the bad-input rule); the input of every other geo column."""

    name: str
    lat: Input
    lon: Input
    wrap_longitude: bool = False
    column_type = "geo_point"

    def inputs(self) -> tuple[Input, ...]:
        return (self.lat, self.lon)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        lat = np.asarray(values[0], dtype=np.float64)
        lon = np.asarray(values[1], dtype=np.float64)
        if self.wrap_longitude:
            outside = np.isfinite(lon) & (np.abs(lon) > 180.0)
            if outside.any():
                lon = lon.copy()
                lon[outside] = (lon[outside] + 180.0) % 360.0 - 180.0
        bad = ~(np.abs(lat) <= 90.0) | ~(np.abs(lon) <= 180.0)  # NaN and inf included
        points = np.stack([lat, lon], axis=1)
        if not bad.any():
            return points
        rows = np.flatnonzero(bad)
        raw = [(float(a), float(b)) for a, b in zip(np.asarray(values[0])[rows].tolist(),
                                                    np.asarray(values[1])[rows].tolist())]
        points[rows] = np.nan  # never a value anyone could learn from
        lon_rule = "finite" if self.wrap_longitude else "in [-180, 180]"
        return WithErrors(points, rows, raw,
                          f"invalid coordinates (lat, lon): latitude must be in [-90, 90] and "
                          f"longitude {lon_rule}", self.name)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.numeric((2,))


def geo_point(
    lat: str, lon: str, wrap_longitude: bool = False, name: str | None = None
) -> GeoPointColumn:
    """A point from a latitude and a longitude input (float degrees, WGS 84), both required.

    ``wrap_longitude=True`` wraps longitudes outside [-180, 180] into [-180, 180) (so 190 is
    -170) instead of rejecting the row. Listed directly, it writes ``[lat, lon]`` as float32.

    >>> pickup = geo_point("pickup_lat", "pickup_lon")
    """
    check_name(lat, "geo_point lat")
    check_name(lon, "geo_point lon")
    if lat == lon:
        raise ValueError(f"geo_point: lat and lon are the same input {lat!r}")
    return GeoPointColumn(name or f"{lat}_{lon}", Input(lat, "float32"), Input(lon, "float32"),
                          bool(wrap_longitude))


def _point(point: GeoPointColumn | tuple[str, str], what: str) -> GeoPointColumn:
    if isinstance(point, GeoPointColumn):
        return point
    if isinstance(point, tuple) and len(point) == 2 and all(isinstance(k, str) for k in point):
        return geo_point(*point)
    raise ValueError(f"{what} needs a geo_point(lat, lon) or a (lat, lon) pair of input names, "
                     f"got {point!r}")


# --------------------------------------------------------------------------- distance, bearing


@dataclass(frozen=True)
class _PairColumn(Column):
    """Between a row's point and fixed reference points (``refs``) or a second point column."""

    name: str
    point: GeoPointColumn
    refs: tuple[tuple[float, float], ...] = ()
    other: GeoPointColumn | None = None
    one: bool = True  # one value per row (a single reference or the other point)

    def inputs(self) -> tuple[Column, ...]:
        return (self.point,) if self.other is None else (self.point, self.other)

    def pairs(self, values: Sequence[Any]) -> tuple[np.ndarray, ...]:
        """(lat1, lon1, lat2, lon2): ``[B]`` against the other point, ``[B, K]`` against K refs."""
        p = values[0]
        if self.other is not None:
            q = values[1]
            return p[:, 0], p[:, 1], q[:, 0], q[:, 1]
        refs = np.asarray(self.refs, dtype=np.float64)
        return p[:, :1], p[:, 1:], refs[None, :, 0], refs[None, :, 1]

    def shaped(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x)) if self.one and x.ndim == 2 else x

    def shape(self) -> tuple[int, ...]:
        return () if self.one else (len(self.refs),)


@dataclass(frozen=True)
class GeoDistanceColumn(_PairColumn):
    """Haversine great-circle distance in km (float32) on a sphere of ``radius_km``."""

    radius_km: float = EARTH_RADIUS_KM
    column_type = "geo_distance"

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> np.ndarray:
        return self.shaped(haversine_km(*self.pairs(values), self.radius_km)).astype(np.float32)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.numeric(self.shape())


@dataclass(frozen=True)
class GeoBearingColumn(_PairColumn):
    """Initial great-circle bearing: degrees clockwise from north in [0, 360), or its
    (sin, cos) with ``sincos`` (a last axis of 2), which has no jump at north."""

    sincos: bool = False
    column_type = "geo_bearing"

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> np.ndarray:
        deg = self.shaped(initial_bearing_deg(*self.pairs(values)))
        if not self.sincos:
            return deg.astype(np.float32)
        rad = np.radians(deg)
        return np.stack([np.sin(rad), np.cos(rad)], axis=-1).astype(np.float32)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.numeric(self.shape() + ((2,) if self.sincos else ()))


def _refs(to: Any, what: str) -> tuple[tuple[tuple[float, float], ...], bool]:
    """Reference points as ((lat, lon), ...) and whether a single one was given."""
    arr = np.asarray(to, dtype=np.float64)
    one = arr.shape == (2,)
    arr = arr.reshape(-1, 2) if arr.ndim in (1, 2) and arr.size and arr.shape[-1] == 2 else None
    if arr is None:
        raise ValueError(f"{what}: to= takes a (lat, lon) pair or a list of them, got {to!r}")
    if not ((np.abs(arr[:, 0]) <= 90).all() and (np.abs(arr[:, 1]) <= 180).all()):
        raise ValueError(f"{what}: reference points must have lat in [-90, 90] and lon in "
                         f"[-180, 180], got {arr.tolist()}")
    return tuple((float(a), float(b)) for a, b in arr), one


def _pair_args(point: Any, to: Any, other: Any, what: str) -> dict[str, Any]:
    p = _point(point, what)
    if (to is None) == (other is None):
        raise ValueError(f"{what}: give exactly one of to= (reference points) or other= "
                         "(a second point column)")
    if other is not None:
        return {"point": p, "other": _point(other, what), "one": True}
    refs, one = _refs(to, what)
    return {"point": p, "refs": refs, "one": one}


def geo_distance(
    point: GeoPointColumn | tuple[str, str],
    to: Any = None,
    other: GeoPointColumn | tuple[str, str] | None = None,
    normalize: str = "none",
    radius_km: float = EARTH_RADIUS_KM,
    name: str | None = None,
) -> GeoDistanceColumn | NumericColumn:
    """Great-circle (haversine) distance in km from each row's point to fixed reference points
    (``to=(lat, lon)``: one value a row; ``to=[(lat, lon), ...]``: a ``[K]`` vector) or to a
    second point column of the row (``other=``, e.g. pickup to drop-off).

    The sphere's radius is the mean Earth radius, 6371.0088 km, unless ``radius_km``.
    ``normalize`` (``zscore`` | ``minmax`` learned over the valid rows, ``log1p``) wraps the
    distance in :func:`~shardforge.features.numeric`, whose state it then has.

    >>> d = geo_distance(geo_point("lat", "lon"), to=[(51.5074, -0.1278), (48.8566, 2.3522)])
    """
    what = f"geo_distance({name or ''})"
    if normalize not in NORMALIZERS or normalize == "clip":
        raise ValueError(f"{what}: normalize={normalize!r}; expected none, zscore, minmax or "
                         "log1p")
    if not (np.isfinite(radius_km) and radius_km > 0):
        raise ValueError(f"{what}: radius_km must be a positive number, got {radius_km!r}")
    args = _pair_args(point, to, other, what)
    base = name or (f"{args['point'].name}_to_{args['other'].name}_km" if other is not None
                    else f"{args['point'].name}_distance_km")
    if normalize == "none":
        return GeoDistanceColumn(base, radius_km=float(radius_km), **args)
    dist = GeoDistanceColumn(f"{base}/km", radius_km=float(radius_km), **args)
    return numeric(dist, normalize=normalize, name=base)


def geo_bearing(
    point: GeoPointColumn | tuple[str, str],
    to: Any = None,
    other: GeoPointColumn | tuple[str, str] | None = None,
    sincos: bool = False,
    name: str | None = None,
) -> GeoBearingColumn:
    """Initial great-circle bearing from each row's point to ``to`` / ``other`` (as in
    :func:`geo_distance`), degrees clockwise from north in [0, 360) (0 for the same point), or
    ``sincos=True``: its (sin, cos).

    >>> b = geo_bearing(geo_point("pickup_lat", "pickup_lon"),
    ...                 other=geo_point("dropoff_lat", "dropoff_lon"), sincos=True)
    """
    args = _pair_args(point, to, other, f"geo_bearing({name or ''})")
    base = name or (f"{args['point'].name}_to_{args['other'].name}_bearing" if other is not None
                    else f"{args['point'].name}_bearing")
    return GeoBearingColumn(base, sincos=bool(sincos), **args)


# --------------------------------------------------------------------------- grid cells


@dataclass(frozen=True)
class GeoGridColumn(CategoricalColumn):
    """Cell id ``lat_bucket * lon_buckets + lon_bucket`` of a lat/lon grid.

    Bucket ``i`` of an axis holds ``boundaries[i-1] <= x < boundaries[i]``, compared in float32
    like ``sf.bucketized`` (TensorFlow's ``Bucketize``); learned boundaries are the
    :class:`~shardforge.features.analyzers.Quantiles` of the valid rows' coordinate.
    """

    name: str
    point: GeoPointColumn
    lat_buckets: int
    lon_buckets: int
    lat_boundaries: tuple[float, ...] | None = None
    lon_boundaries: tuple[float, ...] | None = None
    column_type = "geo_grid"

    @property
    def varlen(self) -> bool:
        return False

    def inputs(self) -> tuple[Column, ...]:
        return (self.point,)

    def analyzers(self) -> dict[str, Any]:
        out = {}
        if self.lat_boundaries is None:
            out["lat_quantiles"] = Quantiles(self.lat_buckets)
        if self.lon_boundaries is None:
            out["lon_quantiles"] = Quantiles(self.lon_buckets)
        return out

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        p = values[0]
        return {k: p[:, 0] if k == "lat_quantiles" else p[:, 1] for k in self.analyzers()}

    def num_buckets(self, state: dict[str, Any]) -> int:
        return self.lat_buckets * self.lon_buckets

    def boundaries(self, state: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(lat boundaries, lon boundaries), fixed or learned."""
        lat = self.lat_boundaries
        lon = self.lon_boundaries
        return (state["lat_quantiles"].values if lat is None else lat,
                state["lon_quantiles"].values if lon is None else lon)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> np.ndarray:
        p = values[0].astype(np.float32)
        b_lat, b_lon = (np.asarray(b, dtype=np.float32) for b in self.boundaries(state))
        i = np.searchsorted(b_lat, p[:, 0], side="right")
        j = np.searchsorted(b_lon, p[:, 1], side="right")
        return (i * self.lon_buckets + j).astype(np.int64)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.ids(self.num_buckets(state))


def _axis(boundaries: Sequence[float] | None, buckets: int | None, what: str
          ) -> tuple[tuple[float, ...] | None, int]:
    if (boundaries is None) == (buckets is None):
        raise ValueError(f"{what}: give exactly one of boundaries or a bucket count")
    if boundaries is None:
        return None, check_int(buckets, f"{what} bucket count", minimum=2)
    b = tuple(float(x) for x in boundaries)
    if not b or any(b2 <= b1 for b1, b2 in zip(b, b[1:])) or not np.isfinite(b).all():
        raise ValueError(f"{what}: boundaries must be finite, non-empty and strictly increasing")
    return b, len(b) + 1


def geo_grid(
    point: GeoPointColumn | tuple[str, str],
    lat_boundaries: Sequence[float] | None = None,
    lon_boundaries: Sequence[float] | None = None,
    lat_buckets: int | None = None,
    lon_buckets: int | None = None,
    name: str | None = None,
) -> GeoGridColumn:
    """Latitude and longitude bucketized (explicit boundaries, or ``*_buckets`` learned as
    quantiles) and crossed into one dense cell id in ``[0, lat_buckets * lon_buckets)``: no
    hashing, so no two cells share an id. Cross it further with ``sf.crossed``.

    >>> cell = geo_grid(geo_point("lat", "lon"), lat_boundaries=range(-80, 81, 10),
    ...                 lon_buckets=36)
    """
    p = _point(point, "geo_grid")
    name = name or f"{p.name}_grid"
    lat_b, n_lat = _axis(lat_boundaries, lat_buckets, f"geo_grid({name!r}) latitude")
    lon_b, n_lon = _axis(lon_boundaries, lon_buckets, f"geo_grid({name!r}) longitude")
    return GeoGridColumn(name, p, n_lat, n_lon, lat_b, lon_b)


# --------------------------------------------------------------------------- geohash


@dataclass(frozen=True)
class GeohashColumn(Column):
    """The standard base32 geohash of each point at ``precision`` characters (bytes)."""

    name: str
    point: GeoPointColumn
    precision: int
    column_type = "geohash"

    def inputs(self) -> tuple[Column, ...]:
        return (self.point,)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> StrBuf:
        p = values[0]
        chars = geohash_encode(p[:, 0], p[:, 1], self.precision)
        return StrBuf(chars.ravel(), np.arange(len(p) + 1, dtype=np.int64) * self.precision)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.strings()


def geohash(
    point: GeoPointColumn | tuple[str, str], precision: int = 6, name: str | None = None
) -> GeohashColumn:
    """Geohash strings (``precision`` 1..12 characters; 5 is ~5 km, 6 ~1.2 km, 7 ~150 m).

    A cell holds its south and west edges: a value equal to a midpoint goes north/east, as in
    the common implementations (so ``(0, 0)`` is ``s0000...``).

    >>> gh = geohash(geo_point("lat", "lon"), precision=5)
    """
    p = _point(point, "geohash")
    precision = check_int(precision, "geohash precision")
    if precision > MAX_GEOHASH_PRECISION:
        raise ValueError(f"geohash precision must be <= {MAX_GEOHASH_PRECISION}, got {precision}")
    return GeohashColumn(name or f"{p.name}_geohash{precision}", p, precision)


def geohash_cells(
    point: GeoPointColumn | tuple[str, str],
    precision: int = 6,
    top_k: int | None = None,
    frequency_threshold: int | None = None,
    num_oov_buckets: int = 1,
    default_value: int = -1,
    name: str | None = None,
) -> VocabColumn:
    """Ids of geohash cells: a vocabulary of the ``top_k`` most frequent cells (with count >=
    ``frequency_threshold``) learned over the valid rows, other cells hashed into
    ``num_oov_buckets`` (``sf.categorical_vocab`` of :func:`geohash`, with its rules).

    >>> cells = geohash_cells(geo_point("lat", "lon"), precision=5, top_k=500, num_oov_buckets=4)
    """
    gh = geohash(point, precision)
    return categorical_vocab(gh, top_k=top_k, frequency_threshold=frequency_threshold,
                             num_oov_buckets=num_oov_buckets, default_value=default_value,
                             name=name or f"{gh.name}_id")


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class GeoRegionColumn(CategoricalColumn):
    """Region ids of each point from GeoJSON polygons (see :func:`geo_region`)."""

    name: str
    point: GeoPointColumn
    path: str
    sha256: str
    region_names: tuple[bytes, ...]
    multiple: bool
    default_value: int
    boundary_inside: bool
    index: RegionIndex = field(compare=False, repr=False)
    column_type = "geo_region"

    @property
    def varlen(self) -> bool:
        return self.multiple

    def inputs(self) -> tuple[Column, ...]:
        return (self.point,)

    def analyzers(self) -> dict[str, Any]:
        # The schema records which id is which region, and which file: a transform with a
        # changed file would silently renumber the regions.
        return {"regions": FixedVocabulary(self.region_names, "bytes"),
                "geojson_sha256": FixedVocabulary((self.sha256.encode(),), "bytes")}

    def num_buckets(self, state: dict[str, Any]) -> int:
        n = len(self.region_names)
        return n + 1 if self.default_value == n else n

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        fitted = state["geojson_sha256"].values[0].decode()
        if fitted != self.sha256:
            raise ValueError(
                f"geo_region {self.name!r}: {self.path} (sha256 {self.sha256[:12]}...) is not "
                f"the file the state was fit with (sha256 {fitted[:12]}...): region ids would "
                "change; fit again or restore the file")
        p = values[0]
        lat, lon = p[:, 0], p[:, 1]
        if not self.multiple:
            return self.index.first(lon, lat, self.default_value, self.boundary_inside)
        ids, splits = self.index.all(lon, lat, self.boundary_inside)
        if self.default_value < 0:
            return Ragged(ids, splits)
        return _fill_empty_rows(ids, splits, self.default_value)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.ids(self.num_buckets(state), varlen=self.multiple)


def _fill_empty_rows(ids: np.ndarray, splits: np.ndarray, default: int) -> Ragged:
    """Rows without an id get ``[default]``."""
    counts = np.diff(splits)
    out_splits = np.zeros_like(splits)
    np.cumsum(np.maximum(counts, 1), out=out_splits[1:])
    out = np.full(int(out_splits[-1]), default, dtype=np.int64)
    row = np.repeat(np.arange(len(counts)), counts)
    out[out_splits[row] + np.arange(len(ids)) - splits[row]] = ids
    return Ragged(out, out_splits)


def geo_region(
    point: GeoPointColumn | tuple[str, str],
    geojson: str | os.PathLike,
    name_property: str | None = "name",
    multiple: bool = False,
    default_value: int | None = None,
    boundary_inside: bool = True,
    name: str | None = None,
) -> GeoRegionColumn:
    """Which GeoJSON region each point is in: feature ``i`` of the file (a Polygon or a
    MultiPolygon, holes allowed) is region id ``i``.

    A point on a region's boundary (an edge or a vertex of its shell or of a hole) is in the
    region: shapely's ``covers``, decided exactly (see
    :mod:`~shardforge.geometry`); ``boundary_inside=False`` makes it outside
    (shapely's ``contains``). ``multiple=False``: the lowest id of the regions
    containing the point; ``multiple=True``: all of them, ascending (a varlen list, for
    overlapping regions). A point in no region gets ``default_value``: ``None`` (default) is an
    extra "outside" id ``n_regions`` (so ``num_buckets = n_regions + 1``), an id in
    ``[0, n_regions)`` reuses that region, ``-1`` is "no id" (``multiple=True``: an empty list).
    The file is read and checked now (see :func:`~shardforge.geometry.load_regions`);
    the schema records the region names (``name_property``) and the file's SHA-256, and a
    transform refuses a different file.

    >>> from importlib import resources
    >>> path = resources.files("shardforge.examples") / "regions.geojson"
    >>> region = geo_region(geo_point("lat", "lon"), path)
    """
    p = _point(point, "geo_region")
    path = os.path.abspath(os.fspath(geojson))
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        # A Beam worker loads the feature file's source, not the files it names: the GeoJSON
        # must be readable there too.
        raise GeoJSONError(
            f"geo_region: cannot read {path}: {err.strerror}. The file is read wherever the "
            "feature set is loaded, Beam workers included: ship it as package data (see "
            "shardforge/examples/click_features.py) or use a path every worker can read"
        ) from None
    regions = load_regions(path, name_property)
    n = len(regions)
    if default_value is None:
        default_value = n
    elif isinstance(default_value, bool) or not isinstance(default_value, (int, np.integer)) \
            or not -1 <= default_value < n:
        raise ValueError(f"geo_region: default_value must be None, -1 or a region id in "
                         f"[0, {n}), got {default_value!r}")
    return GeoRegionColumn(
        name or f"{p.name}_region", p, path, hashlib.sha256(raw).hexdigest(),
        tuple(r.name.encode() for r in regions), bool(multiple), int(default_value),
        bool(boundary_inside), RegionIndex(regions),
    )
