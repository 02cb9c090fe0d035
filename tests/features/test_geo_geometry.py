"""Geometry core of the geo columns against independent oracles: a per-row haversine written out
with ``math``, published distances, a string-building geohash, exact rational orientation, and
shapely 2 (GEOS) for point-in-polygon and polygon validity."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardforge import geometry as g
from shardforge.geometry import regions, sphere

shapely = pytest.importorskip("shapely")


# --------------------------------------------------------------------------- distance / bearing


def _haversine_row(lat1, lon1, lat2, lon2, r):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(
        math.radians(lon2 - lon1) / 2
    ) ** 2
    return 2 * r * math.asin(math.sqrt(min(1.0, a)))


def test_haversine_matches_direct_formula_row_by_row():
    rng = np.random.default_rng(1)
    lat1, lat2 = rng.uniform(-90, 90, (2, 2000))
    lon1, lon2 = rng.uniform(-180, 180, (2, 2000))
    got = g.haversine_km(lat1, lon1, lat2, lon2)
    want = [_haversine_row(*row, g.EARTH_RADIUS_KM) for row in zip(lat1, lon1, lat2, lon2)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


# Rosetta Code's haversine task: Nashville BNA (N 36°7.2', W 86°40.2') to Los Angeles LAX
# (N 33°56.4', W 118°24.0'), published for two radii.
_BNA = (36 + 7.2 / 60, -(86 + 40.2 / 60))
_LAX = (33 + 56.4 / 60, -(118 + 24.0 / 60))


@pytest.mark.parametrize(
    ("radius", "km"), [(6372.8, 2887.2599506071106), (6371.0, 2886.444442837983)]
)
def test_haversine_published_distance(radius, km):
    assert g.haversine_km(*_BNA, *_LAX, radius_km=radius) == pytest.approx(km, rel=1e-13)


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((0.0, 0.0), (0.0, 90.0), math.pi / 2 * g.EARTH_RADIUS_KM),  # quarter of the equator
        ((90.0, 0.0), (-90.0, 0.0), math.pi * g.EARTH_RADIUS_KM),  # pole to pole
        ((10.0, 20.0), (-10.0, -160.0), math.pi * g.EARTH_RADIUS_KM),  # antipodes: no NaN
        # same latitude φ: hav = cos²φ sin²(Δλ/2), here across ±180 (Δλ = 1°)
        ((45.0, 179.5), (45.0, -179.5),
         2 * g.EARTH_RADIUS_KM * math.asin(math.cos(math.pi / 4) * math.sin(math.radians(0.5)))),
    ],
)
def test_haversine_known_distances(a, b, km):
    assert float(g.haversine_km(*a, *b)) == pytest.approx(km, rel=1e-12)


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((51.5074, -0.1278), (48.8566, 2.3522), 344),  # London - Paris, as commonly cited
        ((40.7128, -74.0060), (51.5074, -0.1278), 5570),  # New York - London
        ((-33.8688, 151.2093), (51.5074, -0.1278), 16990),  # Sydney - London
    ],
)
def test_haversine_commonly_cited_city_distances(a, b, km):
    assert float(g.haversine_km(*a, *b)) == pytest.approx(km, rel=0.003)


def test_sincos_kernel_matches_libm():
    x = np.concatenate([np.random.default_rng(9).uniform(-np.pi / 2, np.pi / 2, 100_000),
                        np.linspace(-np.pi / 2, np.pi / 2, 1001), [0.0, -0.0, 1e-300, 5e-324]])
    s, c = np.empty_like(x), np.empty_like(x)
    for i, v in enumerate(x):
        s[i], c[i] = sphere._sincos(v)
    # within 2 ulps of libm (itself within 1 ulp) on the range the kernels call it with, or
    # 2**-53 absolute where cos vanishes (at ±π/2 the reduction's last bits decide)
    assert (np.abs(s - np.sin(x)) <= 2 * np.spacing(np.abs(np.sin(x)))).all()
    tol = np.maximum(2 * np.spacing(np.abs(np.cos(x))), 2.0**-53)
    assert (np.abs(c - np.cos(x)) <= tol).all()


def test_haversine_across_the_antimeridian_and_near_poles():
    # 0.0002° of longitude apart across ±180, and the same step taken away from the seam
    across = g.haversine_km(0.0, 179.9999, 0.0, -179.9999)
    away = g.haversine_km(0.0, 10.0, 0.0, 10.0002)
    assert across == pytest.approx(away, rel=1e-9)
    assert float(g.haversine_km(89.9999, 0.0, 89.9999, 180.0)) == pytest.approx(
        _haversine_row(89.9999, 0.0, 89.9999, 180.0, g.EARTH_RADIUS_KM), rel=1e-12)
    assert float(g.haversine_km(10.0, 20.0, 10.0, 20.0)) == 0.0


def test_initial_bearing():
    lat1, lon1, lat2, lon2 = np.array(
        [
            (0.0, 0.0, 0.0, 10.0),  # east
            (0.0, 0.0, 10.0, 0.0),  # north
            (0.0, 0.0, -10.0, 0.0),  # south
            (0.0, 10.0, 0.0, 0.0),  # west
            (35.0, 45.0, 35.0, 135.0),  # Baghdad - Osaka starts at a heading of about 60°
            (12.0, 34.0, 12.0, 34.0),  # same point
        ]
    ).T
    got = g.initial_bearing_deg(lat1, lon1, lat2, lon2)
    np.testing.assert_allclose(got, [90, 0, 180, 270, 60.16, 0], atol=0.01)
    rng = np.random.default_rng(2)
    b = g.initial_bearing_deg(*rng.uniform(-80, 80, (4, 5000)))
    assert ((b >= 0) & (b < 360)).all()


# --------------------------------------------------------------------------- geohash


def _geohash_reference(lat, lon, precision):
    """Textbook geohash: alternate lon/lat bisection, bit 1 when the value is >= the midpoint."""
    la, lo, bits, even = [-90.0, 90.0], [-180.0, 180.0], [], True
    while len(bits) < 5 * precision:
        iv, v = (lo, lon) if even else (la, lat)
        mid = (iv[0] + iv[1]) / 2
        if v >= mid:
            bits.append(1)
            iv[0] = mid
        else:
            bits.append(0)
            iv[1] = mid
        even = not even
    alphabet = "0123456789bcdefghjkmnpqrstuvwxyz"
    return "".join(
        alphabet[int("".join(map(str, bits[i : i + 5])), 2)] for i in range(0, len(bits), 5)
    )


@pytest.mark.parametrize(
    ("lat", "lon", "precision", "want"),
    [
        (57.64911, 10.40744, 11, "u4pruydqqvj"),  # Wikipedia's example
        (42.6, -5.6, 5, "ezs42"),  # Wikipedia's example
        (48.8583, 2.2945, 7, "u09tunq"),  # Eiffel tower
        (0.0, 0.0, 6, "s00000"),
        (90.0, 180.0, 4, "zzzz"),
        (-90.0, -180.0, 4, "0000"),
    ],
)
def test_geohash_known_values(lat, lon, precision, want):
    got = g.geohash_encode(np.array([lat]), np.array([lon]), precision)
    assert bytes(got[0]).decode() == want


def test_geohash_matches_reference_on_random_and_cell_edge_points():
    rng = np.random.default_rng(3)
    lat = np.concatenate([rng.uniform(-90, 90, 500), rng.integers(-8, 9, 200) * 11.25])
    lon = np.concatenate([rng.uniform(-180, 180, 500), rng.integers(-16, 17, 200) * 11.25])
    for precision in (1, 5, 12):
        got = g.geohash_encode(lat, lon, precision)
        for i in range(len(lat)):
            assert bytes(got[i]).decode() == _geohash_reference(lat[i], lon[i], precision)


# --------------------------------------------------------------------------- orientation


def _orient_fraction(a, b, c):
    ax, ay, bx, by, cx, cy = (Fraction(v) for v in (*a, *b, *c))
    det = (ax - cx) * (by - cy) - (ay - cy) * (bx - cx)
    return (det > 0) - (det < 0)


def test_orientation_is_exact_on_nearly_collinear_points():
    rng = np.random.default_rng(4)
    checked_hard = 0
    for _ in range(3000):
        a = rng.uniform(-180, 180, 2)
        b = rng.uniform(-180, 180, 2)
        t = rng.uniform(-1, 2)
        c = a + t * (b - a)  # on the line up to rounding: the float determinant is unreliable
        c = c + rng.integers(-2, 3, 2) * np.spacing(c)
        want = _orient_fraction(a, b, c)
        assert g.orient(*a, *b, *c) == want
        left, right = (a[0] - c[0]) * (b[1] - c[1]), (a[1] - c[1]) * (b[0] - c[0])
        checked_hard += np.sign(left - right) != want
    assert checked_hard > 100  # the naive determinant gets many of these wrong


# --------------------------------------------------------------------------- regions vs shapely


def _star(rng, cx, cy, r0, r1, n, grid=None):
    ang = np.sort((np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n)
    rad = rng.uniform(r0, r1, n)
    pts = np.c_[cx + rad * np.cos(ang), cy + rad * np.sin(ang)]
    if grid:  # vertices on a grid: edge midpoints and quarter points are exactly on the edges
        pts = np.round(pts / grid) * grid
    return np.vstack([pts, pts[:1]])


def _random_regions(rng, n, grid=0.25, extent=(170, 80), radius=(3, 6), multi_every=5):
    """GeoJSON features (some MultiPolygons, holes, flipped windings) and their shapely twins."""
    feats, shapes = [], []
    while len(feats) < n:
        k = len(feats)
        parts, geoms = [], []
        for _ in range(2 if k % multi_every == 4 else 1):
            cx, cy = rng.uniform(-extent[0], extent[0]), rng.uniform(-extent[1], extent[1])
            shell = _star(rng, cx, cy, *radius, int(rng.integers(4, 40)), grid)
            holes = (
                [_star(rng, cx, cy, radius[0] * 0.1, radius[0] * 0.5, int(rng.integers(3, 12)),
                       grid)]
                if k % 2
                else []
            )
            sp = shapely.Polygon(shell, holes)
            rings = [shell.tolist()] + [h.tolist() for h in holes]
            if k % 3 == 0:
                rings = [r[::-1] for r in rings]
            parts.append(rings)
            geoms.append(sp)
        shape = shapely.MultiPolygon(geoms) if len(geoms) > 1 else geoms[0]
        if not shape.is_valid:
            continue
        geometry = (
            {"type": "MultiPolygon", "coordinates": parts}
            if len(parts) > 1
            else {"type": "Polygon", "coordinates": parts[0]}
        )
        feats.append({"type": "Feature", "properties": {"name": f"r{k}"}, "geometry": geometry})
        shapes.append(shape)
    return {"type": "FeatureCollection", "features": feats}, shapes


def _probe_points(rng, shapes, n_random=5000):
    """Random points plus every vertex, edge midpoints, quarter points and random points on
    every edge (exactly on it or one rounding off), and points around each polygon."""
    pts = [np.c_[rng.uniform(-180, 180, n_random), rng.uniform(-90, 90, n_random)]]
    for shape in shapes:
        for poly in getattr(shape, "geoms", [shape]):
            for ring in [poly.exterior, *poly.interiors]:
                c = np.asarray(ring.coords)
                a, b = c[:-1], c[1:]
                pts += [c, (a + b) / 2, 0.75 * a + 0.25 * b]
                pts.append(a + (b - a) * rng.uniform(0, 1, (len(a), 1)))
            lo, hi = np.asarray(poly.bounds[:2]), np.asarray(poly.bounds[2:])
            pts.append(rng.uniform(lo - 0.5, hi + 0.5, (100, 2)))
    return np.vstack(pts)


@pytest.mark.parametrize("grid", [0.25, None])
def test_region_lookup_matches_shapely_covers(grid):
    rng = np.random.default_rng(5 if grid else 6)
    fc, shapes = _random_regions(rng, 120, grid=grid)
    index = g.RegionIndex(g.load_regions(fc))
    pts = _probe_points(rng, shapes)
    # covers = boundary inside; for a point it is the same predicate as intersects
    tree, points = shapely.STRtree(shapes), shapely.points(pts)
    covers = np.zeros((len(pts), len(shapes)), dtype=bool)
    covers[tuple(tree.query(points, predicate="intersects"))] = True
    pairs = tree.query(points, predicate="covered_by")  # point covered by polygon
    assert (covers[tuple(pairs)]).all() and len(pairs[0]) == covers.sum()
    first = index.first(pts[:, 0], pts[:, 1], default=-1)
    want_first = np.where(covers.any(axis=1), covers.argmax(axis=1), -1)
    bad = np.nonzero(first != want_first)[0]
    assert len(bad) == 0, (pts[bad[:5]].tolist(), first[bad[:5]], want_first[bad[:5]])
    contains = np.zeros_like(covers)  # boundary outside: point within polygon
    contains[tuple(tree.query(points, predicate="within"))] = True
    strict = index.first(pts[:, 0], pts[:, 1], default=-1, boundary_inside=False)
    np.testing.assert_array_equal(
        strict, np.where(contains.any(axis=1), contains.argmax(axis=1), -1))
    values, splits = index.all(pts[:, 0], pts[:, 1])
    rows, cols = np.nonzero(covers)  # row-major: per point, regions ascending
    np.testing.assert_array_equal(values, cols)
    np.testing.assert_array_equal(np.diff(splits), covers.sum(axis=1))
    boundaries = shapely.STRtree(shapely.boundary(shapes))
    on_boundary = np.unique(boundaries.query(shapely.points(pts), predicate="intersects")[0])
    assert covers.any(axis=1).sum() > 1000 and len(on_boundary) > 1000  # the test has teeth


def test_region_lookup_on_exact_edges_and_vertices_of_a_square_with_a_hole():
    fc = {"type": "Polygon", "coordinates": [
        [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]], [[1, 1], [1, 3], [3, 3], [3, 1], [1, 1]]]}
    index = g.RegionIndex(g.load_regions(fc))
    pts = np.array([
        (0, 0), (4, 4), (2, 0), (0, 2), (4, 2), (2, 4),  # shell vertices and edges: inside
        (1, 1), (2, 1), (3, 2), (1, 2.5),  # hole vertices and edges: boundary, inside
        (2, 2), (1.5, 1.5),  # inside the hole: outside
        (0.5, 0.5), (3.5, 2),  # interior
        (-1e-300, 2), (4 + 1e-13, 2), (2, -5e-324),  # just outside
        (5, 5), (-1, 2),
    ], dtype=np.float64)
    got = index.first(pts[:, 0], pts[:, 1], default=-1)
    poly = shapely.from_geojson(__import__("json").dumps(fc))
    want = np.where(shapely.covers(poly, shapely.points(pts)), 0, -1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, [0] * 10 + [-1] * 2 + [0] * 2 + [-1] * 5)


def test_region_lookup_with_thousands_of_polygons_matches_shapely():
    rng = np.random.default_rng(7)
    fc, shapes = _random_regions(
        rng, 2000, grid=None, extent=(179, 89), radius=(0.3, 1.0), multi_every=50
    )
    index = g.RegionIndex(g.load_regions(fc))
    pts = np.c_[rng.uniform(-180, 180, 50_000), rng.uniform(-90, 90, 50_000)]
    pts = np.vstack([pts, _probe_points(rng, shapes[:200], n_random=0)])
    qi, gi = shapely.STRtree(shapes).query(shapely.points(pts), predicate="intersects")
    lowest = np.full(len(pts), len(shapes))
    np.minimum.at(lowest, qi, gi)
    want = np.where(lowest < len(shapes), lowest, -1)
    np.testing.assert_array_equal(index.first(pts[:, 0], pts[:, 1], default=-1), want)


# --------------------------------------------------------------------------- validity at load


def _poly(*rings):
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "ok"}, "geometry": {
            "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}},
        {"type": "Feature", "properties": {"name": "Bad Place"},
         "geometry": {"type": "Polygon", "coordinates": list(rings)}},
    ]}


@pytest.mark.parametrize(
    ("rings", "message"),
    [
        ([[[0, 0], [2, 0], [2, 2], [0, 2]]], r"ring 0 \(shell\) is not closed"),
        ([[[0, 0], [2, 0], [0, 0]]], r"ring 0 \(shell\) is not closed"),
        ([[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]], r"ring 0 self-intersects: edge 0"),
        ([[[0, 0], [2, 0], [2, 2], [1, 0], [0, 2], [0, 0]]], r"ring 0 self-intersects"),
        ([[[0, 0], [2, 0], [3, 0], [2, 0], [2, 2], [0, 0]]], r"ring 0 self-intersects"),
        ([[[0, 0], [1, 1], [2, 2], [0, 0]]], r"ring 0 self-intersects: .* overlaps"),
        ([[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]], [[5, 5], [6, 5], [6, 6], [5, 5]]],
         r"ring 1 \(hole 1\) is not inside the shell"),
        ([[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]], [[3, 1], [5, 1], [5, 2], [3, 1]]],
         r"ring 0 and ring 1 intersect"),
        ([[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]], [[1, 1], [1, 3], [3, 3], [1, 1]],
          [[1.2, 2], [1.3, 2.2], [1.2, 2.2], [1.2, 2]]], r"ring 2 \(hole 2\) lies inside ring 1"),
        ([[[0, 0], [4, 0], [4, "x"], [0, 0]]], r"ring 0 \(shell\): positions must be"),
        ([[[0, 0], [4, 0], [4, float("nan")], [0, 0]]], r"ring 0 \(shell\): non-finite"),
    ],
)
def test_invalid_polygons_are_rejected_naming_feature_and_ring(rings, message):
    with pytest.raises(g.GeoJSONError, match=r"feature 1 \('Bad Place'\): " + message):
        g.load_regions(_poly(*rings))


def test_non_polygon_geometry_and_overlapping_multipolygon_parts_are_rejected():
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "p7", "properties": {}, "geometry": {
            "type": "Point", "coordinates": [0, 0]}}]}
    with pytest.raises(g.GeoJSONError, match=r"feature 0 \('p7'\): geometry type 'Point'"):
        g.load_regions(fc)
    sq = [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]
    inner = [[[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 0.5]]]
    shifted = [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]]
    for other, what in [(inner, "lies inside polygon 0"), (shifted, "intersect")]:
        with pytest.raises(g.GeoJSONError, match=what):
            g.load_regions({"type": "MultiPolygon", "coordinates": [sq, other]})
    touching = [[[2, 2], [3, 2], [3, 3], [2, 2]]]  # touches at a vertex: valid
    assert len(g.load_regions({"type": "MultiPolygon", "coordinates": [sq, touching]})) == 1


def test_validity_agrees_with_shapely_on_random_rings():
    rng = np.random.default_rng(8)
    agree = invalid = 0
    for _ in range(400):
        n = int(rng.integers(4, 9))
        pts = np.round(rng.uniform(0, 4, (n, 2)))  # small grid: many touching/collinear cases
        ring = np.vstack([pts, pts[:1]])
        want = shapely.Polygon(ring).is_valid
        try:
            g.load_regions({"type": "Polygon", "coordinates": [ring.tolist()]})
            got = True
        except g.GeoJSONError:
            got = False
        assert got == want, ring.tolist()
        agree += 1
        invalid += not want
    assert invalid > 100 and agree - invalid > 50


def test_validity_with_holes_agrees_with_shapely_on_random_grid_polygons():
    rng = np.random.default_rng(10)
    valid = 0
    for _ in range(800):
        n = int(rng.integers(4, 10))
        ang, rad = np.sort(rng.uniform(0, 2 * np.pi, n)), rng.uniform(3, 7, n)
        shell = np.round(np.c_[rad * np.cos(ang), rad * np.sin(ang)])
        holes = [np.round(rng.uniform(-4, 4, (3, 2))) for _ in range(int(rng.integers(1, 4)))]
        rings = [np.vstack([r, r[:1]]) for r in [shell, *holes]]
        want = shapely.Polygon(rings[0], rings[1:]).is_valid
        try:
            g.load_regions({"type": "Polygon", "coordinates": [r.tolist() for r in rings]})
            got = True
        except g.GeoJSONError:
            got = False
        assert got == want, [r.tolist() for r in rings]
        valid += want
    assert valid > 30


_SQ = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]


@pytest.mark.parametrize("holes", [
    [[[0, 0], [5, 2], [2, 5], [0, 0]]],  # touches the shell at a vertex: valid
    [[[5, 0], [7, 3], [3, 3], [5, 0]]],  # touches a shell edge: valid
    [[[2, 2], [4, 2], [4, 4], [2, 2]], [[4, 4], [6, 4], [6, 6], [4, 4]]],  # holes touch: valid
    [[[0, 5], [5, 0], [5, 5], [0, 5]]],  # touches the shell twice: interior cut in two
    [[[0, 5], [3, 4], [3, 6], [0, 5]], [[3, 6], [5, 9], [10, 5], [3, 6]]],  # shell-h1-h2-shell
    [[[2, 2], [6, 2], [6, 6], [2, 2]], [[2, 2], [6, 6], [2, 6], [2, 2]]],  # holes share an edge
    [[[2, 0], [4, 0], [3, 2], [2, 0]]],  # a hole edge on the shell
])
def test_touching_rings_validity_agrees_with_shapely(holes):
    want = shapely.Polygon(_SQ, holes).is_valid
    try:
        g.load_regions({"type": "Polygon", "coordinates": [_SQ, *holes]})
        got = True
    except g.GeoJSONError as err:
        got = False
        assert "disconnected" in str(err) or "intersect" in str(err)
    assert got == want


def test_wrong_winding_is_normalized():
    cw_shell = [[0, 0], [0, 4], [4, 4], [4, 0], [0, 0]]
    ccw_hole = [[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]
    poly = g.load_regions({"type": "Polygon", "coordinates": [cw_shell, ccw_hole]})[0].polygons[0]
    assert regions._signed_area(poly.rings[0]) > 0 > regions._signed_area(poly.rings[1])
    assert poly.area == 12.0
    # a tiny triangle far from the origin: the absolute shoelace sum has no correct sign left
    tiny = [[100, 100], [100, 100 + 1e-13], [100 + 1e-13, 100], [100, 100]]  # clockwise
    shell = g.load_regions({"type": "Polygon", "coordinates": [tiny]})[0].polygons[0].rings[0]
    assert regions._is_ccw(shell) and shell[1].tolist() == [100 + 1e-13, 100]


# --------------------------------------------------------------------------- property test


@st.composite
def _polygon_and_points(draw):
    """A star polygon on a coarse grid (maybe with a hole) and points snapped to a finer grid:
    many land exactly on edges and vertices."""
    n = draw(st.integers(3, 12))
    gaps = draw(st.lists(st.floats(0.2, 1.0), min_size=n, max_size=n))
    ang = np.cumsum(gaps) / sum(gaps) * 2 * np.pi
    rad = np.asarray(draw(st.lists(st.integers(4, 10), min_size=n, max_size=n)), float)
    shell = np.round(np.c_[rad * np.cos(ang), rad * np.sin(ang)] * 2) / 2
    shell = np.vstack([shell, shell[:1]])
    rings = [shell]
    if draw(st.booleans()):
        r = draw(st.integers(1, 2))
        rings.append(np.array([[-r, -r], [r, -r], [r, r], [-r, r], [-r, -r]], float))
    k = draw(st.integers(1, 60))
    pts = np.asarray(draw(st.lists(st.tuples(st.integers(-44, 44), st.integers(-44, 44)),
                                   min_size=k, max_size=k)), float) / 4
    return rings, pts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_polygon_and_points())
def test_property_lookup_equals_shapely_covers(case):
    rings, pts = case
    poly = shapely.Polygon(rings[0], rings[1:])
    if not poly.is_valid:
        with pytest.raises(g.GeoJSONError):
            g.load_regions({"type": "Polygon", "coordinates": [r.tolist() for r in rings]})
        return
    index = g.RegionIndex(g.load_regions(
        {"type": "Polygon", "coordinates": [r.tolist() for r in rings]}))
    got = index.first(pts[:, 0], pts[:, 1], default=-1) == 0
    np.testing.assert_array_equal(got, shapely.covers(poly, shapely.points(pts)))
    strict = index.first(pts[:, 0], pts[:, 1], default=-1, boundary_inside=False) == 0
    np.testing.assert_array_equal(strict, shapely.contains(poly, shapely.points(pts)))
