"""Regions: exact planar point-in-polygon on (lon, lat) and a grid index over many polygons.

Planar like GeoJSON and shapely. The boundary counts as inside, exactly shapely's ``covers``
(= ``intersects`` for a point): a point on an edge or a vertex of a shell or a hole is in the
region. The orientation test is exact: it is first evaluated in floating point with Shewchuk's
forward error bound ``|det| > (3 + 16ε)ε · (|l| + |r|)`` (ε = 2⁻⁵³, ``l``, ``r`` the two products
of the 2x2 determinant), and only when the determinant is within that epsilon of zero it is
recomputed exactly with error-free transformations (TwoSum, TwoProduct) into a floating-point
expansion. No tolerance is added: a point is on an edge only if it is exactly collinear with it,
which is what GEOS decides too, so ``RegionIndex`` agrees with shapely point by point, also on
points placed on edges and vertices. The ray-crossing rule is GEOS's ``RayCrossingCounter``.

A :class:`RegionIndex` is a uniform grid over the polygons' bounding box: each cell lists the
polygons that cover it completely (answered without a single edge test) or partially (then only
the polygon's edges in the cell's row are tested), so a lookup costs O(1) cell work plus the few
edges near the point, however many polygons there are.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

# --------------------------------------------------------------------------- exact orientation

_EPS = 2.0**-53
_CCW_ERRBOUND = (3.0 + 16.0 * _EPS) * _EPS  # Shewchuk's ccwerrboundA
_SPLITTER = 134217729.0  # 2**27 + 1, Veltkamp's split of a double into two 26-bit halves


@numba.njit(cache=True, inline="always")
def _two_sum(a, b):
    s = a + b
    bv = s - a
    return s, (a - (s - bv)) + (b - bv)


@numba.njit(cache=True, inline="always")
def _two_prod(a, b):
    p = a * b
    c = _SPLITTER * a
    ah = c - (c - a)
    al = a - ah
    c = _SPLITTER * b
    bh = c - (c - b)
    bl = b - bh
    return p, al * bl - (((p - ah * bh) - al * bh) - ah * bl)


@numba.njit(cache=True)
def _orient_exact(ax, ay, bx, by, cx, cy):
    """Sign of (a - c) x (b - c), exactly: 16 error-free terms summed into an expansion."""
    acx, acx_t = _two_sum(ax, -cx)
    acy, acy_t = _two_sum(ay, -cy)
    bcx, bcx_t = _two_sum(bx, -cx)
    bcy, bcy_t = _two_sum(by, -cy)
    terms = np.empty(16)
    k = 0
    for u in (acx, acx_t):
        for v in (bcy, bcy_t):
            p, e = _two_prod(u, v)
            terms[k] = p
            terms[k + 1] = e
            k += 2
    for u in (acy, acy_t):
        for v in (bcx, bcx_t):
            p, e = _two_prod(u, v)
            terms[k] = -p
            terms[k + 1] = -e
            k += 2
    # Shewchuk's Grow-Expansion: adding each term keeps a nonoverlapping expansion whose
    # components grow in magnitude, so the sign of the sum is the sign of the last nonzero one.
    h = np.zeros(17)
    m = 0
    for t in range(16):
        q = terms[t]
        j = 0
        for i in range(m):
            q, err = _two_sum(q, h[i])
            if err != 0.0:
                h[j] = err
                j += 1
        h[j] = q
        m = j + 1
    for i in range(m - 1, -1, -1):
        if h[i] > 0.0:
            return 1
        if h[i] < 0.0:
            return -1
    return 0


@numba.njit(cache=True, inline="always")
def orient(ax, ay, bx, by, cx, cy):
    """+1 if a, b, c turn counter-clockwise (c left of a->b), -1 clockwise, 0 collinear; exact."""
    left = (ax - cx) * (by - cy)
    right = (ay - cy) * (bx - cx)
    det = left - right
    bound = _CCW_ERRBOUND * (abs(left) + abs(right))
    if det > bound:
        return 1
    if -det > bound:
        return -1
    return _orient_exact(ax, ay, bx, by, cx, cy)


@numba.njit(cache=True, inline="always")
def _count_segment(px, py, x1, y1, x2, y2):
    """GEOS RayCrossingCounter.countSegment: 2 = the point is on the segment, 1 = the segment
    crosses the ray from the point towards +x, 0 = neither."""
    if x1 < px and x2 < px:
        return 0
    if px == x2 and py == y2:
        return 2
    if y1 == py and y2 == py:  # horizontal: only "on it" matters
        lo, hi = min(x1, x2), max(x1, x2)
        return 2 if lo <= px <= hi else 0
    # Upward edges include their start and exclude their end, downward the reverse, so a shared
    # vertex is counted once.
    if (y1 > py and y2 <= py) or (y2 > py and y1 <= py):
        o = orient(x1, y1, x2, y2, px, py)
        if o == 0:
            return 2
        if y2 < y1:
            o = -o
        return 1 if o > 0 else 0
    return 0


@numba.njit(cache=True, inline="always")
def _locate(px, py, ex1, ey1, ex2, ey2, edges, start, stop):
    """(on an edge, inside) of a point against the edges ``edges[start:stop]`` taken as one
    even-odd soup (a polygon's shell and holes, or one ring)."""
    crossings = 0
    for q in range(start, stop):
        e = edges[q]
        c = _count_segment(px, py, ex1[e], ey1[e], ex2[e], ey2[e])
        if c == 2:
            return True, True
        crossings += c
    return False, crossings % 2 == 1


# --------------------------------------------------------------------------- polygons


class GeoJSONError(ValueError):
    """An unreadable or invalid polygon file; the message names the feature and the ring."""


@dataclass(frozen=True)
class Polygon:
    """One polygon: ``rings[0]`` the shell (counter-clockwise), then the holes (clockwise); each
    ring an ``[n, 2]`` (lon, lat) array, closed (last = first), consecutive repeats removed."""

    rings: tuple[np.ndarray, ...]

    @property
    def area(self) -> float:
        """Planar area in square degrees (shell minus holes)."""
        return sum(_signed_area(r) for r in self.rings)


@dataclass(frozen=True)
class Region:
    """One GeoJSON feature: its name and its polygons (a Polygon has one, a MultiPolygon many)."""

    name: str
    polygons: tuple[Polygon, ...]


def _signed_area(ring: np.ndarray) -> float:
    # relative to the first vertex: no cancellation between large absolute products
    x, y = ring[:, 0] - ring[0, 0], ring[:, 1] - ring[0, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _is_ccw(ring: np.ndarray) -> bool:
    """Winding of a simple closed ring from the exact turn at its lowest (then leftmost) vertex,
    which is convex: robust where a float area could round to the wrong sign."""
    pts = ring[:-1]
    i = int(np.lexsort((pts[:, 0], pts[:, 1]))[0])
    a, b, c = pts[i - 1], pts[i], pts[(i + 1) % len(pts)]
    return orient(a[0], a[1], b[0], b[1], c[0], c[1]) > 0


def load_regions(
    path_or_obj: str | os.PathLike | dict, name_property: str | None = "name"
) -> list[Region]:
    """Polygons of a GeoJSON file (FeatureCollection, Feature, Polygon or MultiPolygon), checked.

    Each feature is one region, in file order; its name is ``properties[name_property]`` (else
    the feature's ``id``, else ``"feature <i>"``). Raises :class:`GeoJSONError` naming the
    feature (index and name) and the ring for: a geometry that is not a (Multi)Polygon, a ring
    that is not closed or has fewer than 3 distinct positions, non-finite
    coordinates, a self-intersecting ring, rings of one polygon that cross or overlap or touch
    in a cycle (a disconnected interior), a hole outside its shell or inside another hole, parts
    of a MultiPolygon that cross, overlap or nest. Rings wound the wrong way are accepted and
    normalized (shell counter-clockwise, holes clockwise, RFC 7946's right-hand rule).

    >>> regions = load_regions({"type": "Polygon",
    ...                         "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]})
    >>> regions[0].polygons[0].area
    1.0
    """
    where = "GeoJSON object"
    if isinstance(path_or_obj, dict):
        obj = path_or_obj
    else:
        where = os.fspath(path_or_obj)
        try:
            with open(where, "rb") as f:
                obj = json.load(f)
        except (OSError, ValueError) as err:
            raise GeoJSONError(f"{where}: cannot read GeoJSON: {err}") from None
        except RecursionError:
            raise GeoJSONError(f"{where}: cannot read GeoJSON: arrays or objects nested more "
                               "deeply than the JSON parser allows (a GeoJSON polygon nests "
                               "4 arrays)") from None
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise GeoJSONError(f"{where}: FeatureCollection without a 'features' list")
    elif kind == "Feature":
        features = [obj]
    elif kind in ("Polygon", "MultiPolygon"):
        features = [{"type": "Feature", "geometry": obj, "properties": {}}]
    else:
        raise GeoJSONError(
            f"{where}: top-level type {kind!r}; expected FeatureCollection, Feature, Polygon "
            "or MultiPolygon"
        )
    regions = []
    for i, feat in enumerate(features):
        props = (feat.get("properties") or {}) if isinstance(feat, dict) else {}
        name = props.get(name_property) if name_property else None
        if name is None and isinstance(feat, dict) and feat.get("id") is not None:
            name = feat["id"]
        name = f"feature {i}" if name is None else str(name)
        label = f"{where}: feature {i} ({name!r})"
        geom = feat.get("geometry") if isinstance(feat, dict) else None
        gtype = geom.get("type") if isinstance(geom, dict) else None
        if gtype == "Polygon":
            parts = [geom.get("coordinates")]
        elif gtype == "MultiPolygon":
            parts = geom.get("coordinates")
            if not isinstance(parts, list) or not parts:
                raise GeoJSONError(f"{label}: MultiPolygon needs a non-empty list of polygons")
        else:
            raise GeoJSONError(f"{label}: geometry type {gtype!r} is not Polygon or MultiPolygon")
        polygons = tuple(
            _check_polygon(coords, f"{label}: polygon {k}" if gtype == "MultiPolygon" else label)
            for k, coords in enumerate(parts)
        )
        _check_parts_disjoint(polygons, label)
        regions.append(Region(name, polygons))
    if not regions:
        raise GeoJSONError(f"{where}: no features")
    return regions


def _check_polygon(coords: Any, label: str) -> Polygon:
    if not isinstance(coords, list) or not coords:
        raise GeoJSONError(f"{label}: a polygon needs a non-empty list of rings")
    rings = []
    for r, ring_coords in enumerate(coords):
        what = f"{label}: ring {r} ({'shell' if r == 0 else f'hole {r}'})"
        if not isinstance(ring_coords, (list, tuple)) or not ring_coords or not all(
                _is_position(p) for p in ring_coords):
            raise GeoJSONError(f"{what}: positions must be [lon, lat] number pairs "
                               "(JSON numbers, not strings)")
        ring = np.asarray([p[:2] for p in ring_coords], dtype=np.float64)
        if not np.isfinite(ring).all():
            raise GeoJSONError(f"{what}: non-finite coordinate")
        if len(ring) < 4 or not np.array_equal(ring[0], ring[-1]):
            raise GeoJSONError(
                f"{what} is not closed: a ring needs >= 4 positions and the last equal to the "
                f"first (got {len(ring)} positions, first {ring[0].tolist()}, "
                f"last {ring[-1].tolist()})"
            )
        keep = np.ones(len(ring), dtype=bool)
        keep[1:] = np.any(ring[1:] != ring[:-1], axis=1)
        ring = ring[keep]
        if len(ring) < 4:
            raise GeoJSONError(f"{what}: fewer than 3 distinct positions")
        rings.append(ring)
    xy1, xy2, ring_of, index_in_ring, ring_len = _edges_of(rings)
    i, j, kind, touches = _first_intersection(xy1, xy2, ring_of, index_in_ring, ring_len)
    if i >= 0:
        if (ring_of[i], index_in_ring[i]) > (ring_of[j], index_in_ring[j]):
            i, j = j, i
        e1 = f"edge {index_in_ring[i]} {_fmt_edge(xy1[i], xy2[i])}"
        e2 = f"edge {index_in_ring[j]} {_fmt_edge(xy1[j], xy2[j])}"
        ri, rj = ring_of[i], ring_of[j]
        how = "overlaps" if kind == 2 else "touches" if kind == 3 else "crosses"
        if ri == rj:
            raise GeoJSONError(
                f"{label}: ring {ri} self-intersects: {e1} {how} {e2}"
            )
        raise GeoJSONError(f"{label}: ring {ri} and ring {rj} intersect: {e1} {how} {e2}")
    _check_connected_interior(xy1, xy2, ring_of, touches, label)
    for r, ring in enumerate(rings):
        if _is_ccw(ring) != (r == 0):  # shell counter-clockwise, holes clockwise
            rings[r] = ring[::-1].copy()
    for h in range(1, len(rings)):
        if not _ring_inside(rings[h], rings[0]):
            raise GeoJSONError(f"{label}: ring {h} (hole {h}) is not inside the shell")
        for g in range(1, len(rings)):
            if g != h and _ring_inside(rings[h], rings[g], on_boundary=False):
                raise GeoJSONError(f"{label}: ring {h} (hole {h}) lies inside ring {g} (hole {g})")
    return Polygon(tuple(rings))


def _is_position(p: Any) -> bool:
    """A GeoJSON position: a list of 2 or 3 numbers (RFC 7946; a bool or a string is none)."""
    return (isinstance(p, (list, tuple)) and 2 <= len(p) <= 3
            and all(isinstance(v, (int, float, np.integer, np.floating))
                    and not isinstance(v, bool) for v in p))


def _fmt_edge(a: np.ndarray, b: np.ndarray) -> str:
    return f"({a[0]:.10g}, {a[1]:.10g})-({b[0]:.10g}, {b[1]:.10g})"


def _edges_of(rings: Sequence[np.ndarray]):
    xy1 = np.concatenate([r[:-1] for r in rings])
    xy2 = np.concatenate([r[1:] for r in rings])
    ring_of = np.concatenate([np.full(len(r) - 1, k, np.int64) for k, r in enumerate(rings)])
    index_in_ring = np.concatenate([np.arange(len(r) - 1, dtype=np.int64) for r in rings])
    ring_len = np.asarray([len(r) - 1 for r in rings], dtype=np.int64)
    return xy1, xy2, ring_of, index_in_ring, ring_len


def _ring_inside(ring: np.ndarray, outer: np.ndarray, on_boundary: bool = True) -> bool:
    """A ring that does not cross ``outer`` is inside it if one vertex off ``outer`` is;
    ``on_boundary`` answers a ring whose vertices all lie on ``outer``."""
    return _vertices_inside(ring, *_edges_of([outer])[:2], on_boundary)


def _vertices_inside(ring: np.ndarray, xy1: np.ndarray, xy2: np.ndarray, on_boundary: bool
                     ) -> bool:
    edges = np.arange(len(xy1))
    for x, y in ring[:-1]:
        on, inside = _locate_point(x, y, xy1[:, 0], xy1[:, 1], xy2[:, 0], xy2[:, 1], edges)
        if not on:
            return inside
    return on_boundary


@numba.njit(cache=True)
def _locate_point(px, py, ex1, ey1, ex2, ey2, edges):
    return _locate(px, py, ex1, ey1, ex2, ey2, edges, 0, len(edges))


@numba.njit(cache=True)
def _on_segment(ax, ay, bx, by, px, py):
    """p collinear with a-b lies within its bounding box."""
    return min(ax, bx) <= px <= max(ax, bx) and min(ay, by) <= py <= max(ay, by)


@numba.njit(cache=True)
def _segment_relation(ax, ay, bx, by, cx, cy, dx, dy):
    """0 disjoint, 1 proper crossing, 2 collinear overlap (more than a point), 3 touch."""
    o1 = orient(ax, ay, bx, by, cx, cy)
    o2 = orient(ax, ay, bx, by, dx, dy)
    o3 = orient(cx, cy, dx, dy, ax, ay)
    o4 = orient(cx, cy, dx, dy, bx, by)
    if o1 == 0 and o2 == 0:
        # collinear: overlap of the projections on the longer axis
        if abs(bx - ax) >= abs(by - ay):
            lo = max(min(ax, bx), min(cx, dx))
            hi = min(max(ax, bx), max(cx, dx))
        else:
            lo = max(min(ay, by), min(cy, dy))
            hi = min(max(ay, by), max(cy, dy))
        if lo < hi:
            return 2
        return 3 if lo == hi else 0
    if o1 * o2 < 0 and o3 * o4 < 0:
        return 1
    if (
        (o1 == 0 and _on_segment(ax, ay, bx, by, cx, cy))
        or (o2 == 0 and _on_segment(ax, ay, bx, by, dx, dy))
        or (o3 == 0 and _on_segment(cx, cy, dx, dy, ax, ay))
        or (o4 == 0 and _on_segment(cx, cy, dx, dy, bx, by))
    ):
        return 3
    return 0


@numba.njit(cache=True)
def _first_intersection(xy1, xy2, ring_of, index_in_ring, ring_len):
    """First pair of edges (i, j, relation) that makes the rings invalid, or (-1, -1, 0), and
    the pairs of edges of different rings that touch before it (a ``(k, 2)`` int64 array: a
    growing array, not a numba typed list, so the compiled code is cached on disk).

    A sweep over the edges sorted by min x. Within one ring, neighbouring edges may only share
    their common vertex and other edges nothing; edges of different rings may touch at a point
    (OGC allows a hole to touch its shell) but not cross or overlap.
    """
    n = len(xy1)
    xmin = np.minimum(xy1[:, 0], xy2[:, 0])
    xmax = np.maximum(xy1[:, 0], xy2[:, 0])
    ymin = np.minimum(xy1[:, 1], xy2[:, 1])
    ymax = np.maximum(xy1[:, 1], xy2[:, 1])
    order = np.argsort(xmin, kind="mergesort")
    touches = np.empty((16, 2), dtype=np.int64)
    k = 0
    for a in range(n):
        i = order[a]
        for b in range(a + 1, n):
            j = order[b]
            if xmin[j] > xmax[i]:
                break
            if ymin[j] > ymax[i] or ymin[i] > ymax[j]:
                continue
            rel = _segment_relation(
                xy1[i, 0], xy1[i, 1], xy2[i, 0], xy2[i, 1],
                xy1[j, 0], xy1[j, 1], xy2[j, 0], xy2[j, 1],
            )
            if rel == 0:
                continue
            if ring_of[i] != ring_of[j]:
                if rel == 3:
                    if k == len(touches):
                        grown = np.empty((2 * k, 2), dtype=np.int64)
                        grown[:k] = touches
                        touches = grown
                    touches[k, 0], touches[k, 1] = i, j
                    k += 1
                    continue
                return i, j, rel, touches[:k]
            m = ring_len[ring_of[i]]
            di = (index_in_ring[j] - index_in_ring[i]) % m
            if (di == 1 or di == m - 1) and rel == 3 and m > 2:
                continue  # neighbours sharing their vertex (a triangle's edges all do)
            return i, j, rel, touches[:k]
    return -1, -1, 0, touches[:k]


def _touch_point(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> tuple:
    """The point where two segments known to touch (exactly once) meet: an endpoint of one."""
    for p in (a, b):
        if (p == c).all() or (p == d).all():
            return tuple(p.tolist())
    for p, (u, v) in ((c, (a, b)), (d, (a, b)), (a, (c, d)), (b, (c, d))):
        if orient(u[0], u[1], v[0], v[1], p[0], p[1]) == 0 and _on_segment(
                u[0], u[1], v[0], v[1], p[0], p[1]):
            return tuple(p.tolist())
    raise AssertionError("segments reported touching do not touch")


def _check_connected_interior(xy1, xy2, ring_of, touches, label: str) -> None:
    """Rings may touch, but a cycle of touches (two rings touching twice, or a chain of holes
    from the shell back to it) cuts the interior in pieces (OGC: invalid, as in shapely)."""
    parent: dict[Any, Any] = {}

    def root(node: Any) -> Any:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    seen: set = set()
    for i, j in touches:
        point = _touch_point(xy1[i], xy2[i], xy1[j], xy2[j])
        for ring in (int(ring_of[i]), int(ring_of[j])):
            if (ring, point) in seen:
                continue
            seen.add((ring, point))
            a, b = root(("ring", ring)), root(("point", point))
            if a == b:
                raise GeoJSONError(
                    f"{label}: the interior is disconnected: rings touch each other in a cycle "
                    f"(ring {ring} at ({point[0]:.10g}, {point[1]:.10g}))")
            parent[a] = b


def _check_parts_disjoint(polygons: Sequence[Polygon], label: str) -> None:
    """The parts of a MultiPolygon may touch but not overlap (so a lookup may OR them)."""
    if len(polygons) < 2:
        return
    rings = [r for p in polygons for r in p.rings]
    part_of = np.concatenate([np.full(len(p.rings), k) for k, p in enumerate(polygons)])
    xy1, xy2, ring_of, index_in_ring, ring_len = _edges_of(rings)
    i, j, _, _ = _first_intersection(xy1, xy2, ring_of, index_in_ring, ring_len)
    if i >= 0:
        raise GeoJSONError(
            f"{label}: polygons {part_of[ring_of[i]]} and {part_of[ring_of[j]]} of the "
            f"MultiPolygon intersect: {_fmt_edge(xy1[i], xy2[i])} x {_fmt_edge(xy1[j], xy2[j])}"
        )
    # No crossings: one part is inside another only if a vertex of its shell is strictly inside.
    for a, pa in enumerate(polygons):
        for b, pb in enumerate(polygons):
            if a != b and _ring_inside_polygon(pa.rings[0], pb):
                raise GeoJSONError(
                    f"{label}: polygon {a} of the MultiPolygon lies inside polygon {b}"
                )


def _ring_inside_polygon(ring: np.ndarray, poly: Polygon) -> bool:
    return _vertices_inside(ring, *_edges_of(poly.rings)[:2], False)


# --------------------------------------------------------------------------- region index

_FULL, _PARTIAL = 1, 2
_MAX_CELLS = 1 << 22


class RegionIndex:
    """Point-in-region lookup over many polygons (see the module docstring for the rule).

    >>> idx = RegionIndex(load_regions({"type": "Polygon",
    ...                                 "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]}))
    >>> idx.first(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]), default=-1).tolist()
    [0, 0, -1]
    """

    def __init__(self, regions: Sequence[Region], cells_per_polygon: float = 16.0) -> None:
        self.regions = list(regions)
        polygons = [(k, p) for k, reg in enumerate(self.regions) for p in reg.polygons]
        if not polygons:
            raise ValueError("RegionIndex needs at least one polygon")
        self.n_regions = len(self.regions)
        self.piece_region = np.asarray([k for k, _ in polygons], dtype=np.int64)
        edges1, edges2, starts = [], [], [0]
        for _, poly in polygons:
            xy1, xy2, *_ = _edges_of(poly.rings)
            edges1.append(xy1)
            edges2.append(xy2)
            starts.append(starts[-1] + len(xy1))
        e1, e2 = np.concatenate(edges1), np.concatenate(edges2)
        self._edges = tuple(
            np.ascontiguousarray(a) for a in (e1[:, 0], e1[:, 1], e2[:, 0], e2[:, 1])
        )
        self._piece_start = np.asarray(starts, dtype=np.int64)
        bb = np.asarray(
            [(r[0][:, 0].min(), r[0][:, 1].min(), r[0][:, 0].max(), r[0][:, 1].max())
             for r in (p.rings for _, p in polygons)]
        )
        x0, y0 = bb[:, 0].min(), bb[:, 1].min()
        x1, y1 = bb[:, 2].max(), bb[:, 3].max()
        # Cells about a quarter of a typical polygon's side: most cells of a polygon are then
        # completely inside it and answered without an edge test.
        w_med = float(np.median(bb[:, 2] - bb[:, 0]))
        h_med = float(np.median(bb[:, 3] - bb[:, 1]))
        side = math.sqrt(max(w_med * h_med, 1e-300) / cells_per_polygon)
        nx = max(1, min(4096, math.ceil((x1 - x0) / side) if side > 0 else 1))
        ny = max(1, min(4096, math.ceil((y1 - y0) / side) if side > 0 else 1))
        if nx * ny > _MAX_CELLS:
            scale = math.sqrt(_MAX_CELLS / (nx * ny))
            nx, ny = max(1, int(nx * scale)), max(1, int(ny * scale))
        self.grid = (float(x0), float(y0), float(x1), float(y1), nx, ny)
        # x1 - x0 == 0 cannot happen: a simple ring is never flat
        self._inv = (nx / (x1 - x0), ny / (y1 - y0))
        self._tables = _build_index(
            *self._edges, self._piece_start, float(x0), float(y0), self._inv[0], self._inv[1],
            (x1 - x0) / nx, (y1 - y0) / ny, nx, ny,
        )

    def _lookup(self, lon: np.ndarray, lat: np.ndarray, first: bool, default: int,
                boundary_inside: bool):
        x = np.ascontiguousarray(lon, dtype=np.float64)
        y = np.ascontiguousarray(lat, dtype=np.float64)
        x0, y0, x1, y1, nx, ny = self.grid
        return _lookup_kernel(
            x, y, *self._edges, *self._tables, self.piece_region,
            x0, y0, x1, y1, self._inv[0], self._inv[1], nx, ny, first, default,
            bool(boundary_inside),
        )

    def first(self, lon: np.ndarray, lat: np.ndarray, default: int,
              boundary_inside: bool = True) -> np.ndarray:
        """The lowest region id covering each point (int64), ``default`` where none does.

        ``boundary_inside=False``: a point on a boundary is outside (shapely's ``contains``).
        """
        return self._lookup(lon, lat, True, default, boundary_inside)[0]

    def all(self, lon: np.ndarray, lat: np.ndarray, boundary_inside: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
        """Every region covering each point, ascending: ``(values, row_splits)``."""
        return self._lookup(lon, lat, False, -1, boundary_inside)


@numba.njit(cache=True)
def _cell_of(v, v0, inv, n):
    # The same monotone float mapping for points and for edges, so an edge's cell range always
    # contains the cells of its points.
    c = int(math.floor((v - v0) * inv))
    return min(max(c, 0), n - 1)


@numba.njit(cache=True)
def _build_index(ex1, ey1, ex2, ey2, piece_start, x0, y0, inv_x, inv_y, w, h, nx, ny):
    """Cell lists of (piece, FULL | PARTIAL, first edge, last edge) in piece order, and the
    per-(piece, row) edge lists the PARTIAL entries point into."""
    n_pieces = len(piece_start) - 1
    # Pass 1: for each piece, its rows, and for each edge the rows it spans.
    row_lo = np.empty(n_pieces, np.int64)
    row_hi = np.empty(n_pieces, np.int64)
    col_lo = np.empty(n_pieces, np.int64)
    col_hi = np.empty(n_pieces, np.int64)
    band_off = np.zeros(n_pieces + 1, np.int64)
    for p in range(n_pieces):
        s, t = piece_start[p], piece_start[p + 1]
        r0, r1, c0, c1 = ny, -1, nx, -1
        for e in range(s, t):
            r0 = min(r0, _cell_of(min(ey1[e], ey2[e]), y0, inv_y, ny))
            r1 = max(r1, _cell_of(max(ey1[e], ey2[e]), y0, inv_y, ny))
            c0 = min(c0, _cell_of(min(ex1[e], ex2[e]), x0, inv_x, nx))
            c1 = max(c1, _cell_of(max(ex1[e], ex2[e]), x0, inv_x, nx))
        row_lo[p], row_hi[p], col_lo[p], col_hi[p] = r0, r1, c0, c1
        band_off[p + 1] = band_off[p] + (r1 - r0 + 1)
    n_bands = band_off[n_pieces]
    band_count = np.zeros(n_bands + 1, np.int64)
    for p in range(n_pieces):
        for e in range(piece_start[p], piece_start[p + 1]):
            a = _cell_of(min(ey1[e], ey2[e]), y0, inv_y, ny)
            b = _cell_of(max(ey1[e], ey2[e]), y0, inv_y, ny)
            for r in range(a, b + 1):
                band_count[band_off[p] + r - row_lo[p] + 1] += 1
    band_start = np.cumsum(band_count)
    band_edges = np.empty(band_start[-1], np.int64)
    fill = band_start[:-1].copy()
    for p in range(n_pieces):
        for e in range(piece_start[p], piece_start[p + 1]):
            a = _cell_of(min(ey1[e], ey2[e]), y0, inv_y, ny)
            b = _cell_of(max(ey1[e], ey2[e]), y0, inv_y, ny)
            for r in range(a, b + 1):
                k = band_off[p] + r - row_lo[p]
                band_edges[fill[k]] = e
                fill[k] += 1
    # Pass 2: per piece and row, mark the cells its edges pass near, then classify each run of
    # untouched cells by one point-in-polygon test. Conservatively: the edge's x-range within
    # the row widened by a margin far above the rounding of the point -> cell mapping (a few
    # ulps of the coordinates), so a touched cell may be marked PARTIAL needlessly, never FULL.
    all_edges = np.arange(len(ex1))
    margin_x = w * 1e-6 + 1e-12 * max(1.0, abs(x0), abs(x0 + nx * w))
    margin_y = h * 1e-6 + 1e-12 * max(1.0, abs(y0), abs(y0 + ny * h))
    n_cells = nx * ny
    counts = np.zeros(n_cells + 1, np.int64)
    entries_cell = []
    entries_piece = []
    entries_kind = []
    for p in range(n_pieces):
        ncols = col_hi[p] - col_lo[p] + 1
        touched = np.zeros(ncols, np.bool_)
        for r in range(row_lo[p], row_hi[p] + 1):
            touched[:] = False
            k = band_off[p] + r - row_lo[p]
            ylo = y0 + r * h - margin_y
            yhi = y0 + (r + 1) * h + margin_y
            for q in range(band_start[k], band_start[k + 1]):
                e = band_edges[q]
                ax, ay, bx, by = ex1[e], ey1[e], ex2[e], ey2[e]
                if ay == by:
                    xa, xb = min(ax, bx), max(ax, bx)
                else:
                    ta = (max(min(ylo, max(ay, by)), min(ay, by)) - ay) / (by - ay)
                    tb = (max(min(yhi, max(ay, by)), min(ay, by)) - ay) / (by - ay)
                    xa = ax + (bx - ax) * ta
                    xb = ax + (bx - ax) * tb
                    xa, xb = min(xa, xb), max(xa, xb)
                xa = max(xa, min(ax, bx)) - margin_x
                xb = min(xb, max(ax, bx)) + margin_x
                ca = _cell_of(xa, x0, inv_x, nx)
                cb = _cell_of(xb, x0, inv_x, nx)
                for c in range(max(ca, col_lo[p]), min(cb, col_hi[p]) + 1):
                    touched[c - col_lo[p]] = True
            run_status = -1  # unknown for the current run of untouched cells
            for c in range(col_lo[p], col_hi[p] + 1):
                if touched[c - col_lo[p]]:
                    run_status = -1
                    entries_cell.append(r * nx + c)
                    entries_piece.append(p)
                    entries_kind.append(_PARTIAL)
                    counts[r * nx + c + 1] += 1
                    continue
                if run_status < 0:
                    cx = x0 + (c + 0.5) * w
                    cy = y0 + (r + 0.5) * h
                    on, inside = _locate(cx, cy, ex1, ey1, ex2, ey2, all_edges,
                                         piece_start[p], piece_start[p + 1])
                    run_status = 1 if on or inside else 0
                if run_status == 1:
                    entries_cell.append(r * nx + c)
                    entries_piece.append(p)
                    entries_kind.append(_FULL)
                    counts[r * nx + c + 1] += 1
    cell_start = np.cumsum(counts)
    n_entries = cell_start[-1]
    ent_piece = np.empty(n_entries, np.int64)
    ent_kind = np.empty(n_entries, np.int64)
    ent_band = np.empty(n_entries, np.int64)
    pos = cell_start[:-1].copy()
    # entries were appended piece by piece, so each cell's list stays in piece order
    for i in range(len(entries_cell)):
        cell = entries_cell[i]
        p = entries_piece[i]
        slot = pos[cell]
        pos[cell] += 1
        ent_piece[slot] = p
        ent_kind[slot] = entries_kind[i]
        ent_band[slot] = band_off[p] + cell // nx - row_lo[p]
    return cell_start, ent_piece, ent_kind, ent_band, band_start, band_edges


@numba.njit(cache=True, nogil=True)
def _lookup_kernel(
    x, y, ex1, ey1, ex2, ey2, cell_start, ent_piece, ent_kind, ent_band, band_start,
    band_edges, piece_region, x0, y0, x1, y1, inv_x, inv_y, nx, ny, first, default,
    boundary_inside,
):
    n = len(x)
    splits = np.zeros(n + 1, np.int64)
    out = np.full(n, default, np.int64) if first else np.empty(max(n, 16), np.int64)
    m = 0
    for i in range(n):
        px, py = x[i], y[i]
        if px >= x0 and px <= x1 and py >= y0 and py <= y1:
            cell = _cell_of(py, y0, inv_y, ny) * nx + _cell_of(px, x0, inv_x, nx)
            last_region = -1
            for s in range(cell_start[cell], cell_start[cell + 1]):
                p = ent_piece[s]
                region = piece_region[p]
                if region == last_region:
                    continue  # another part of a region already found
                hit = ent_kind[s] == _FULL
                if not hit:
                    k = ent_band[s]
                    on, inside = _locate(px, py, ex1, ey1, ex2, ey2, band_edges,
                                         band_start[k], band_start[k + 1])
                    hit = boundary_inside if on else inside
                if hit:
                    if first:
                        out[i] = region
                        break
                    if m == len(out):
                        grown = np.empty(2 * len(out), np.int64)
                        grown[:m] = out[:m]
                        out = grown
                    out[m] = region
                    m += 1
                    last_region = region
        splits[i + 1] = m
    if first:
        return out, splits
    return out[:m].copy(), splits
