"""Points/s of the geo columns' core against shapely 2 on the same points, one core.

    PYTHONPATH=. .venv/bin/python benchmarks/geo_bench.py           # 1,000 polygons, 1M points
    PYTHONPATH=. .venv/bin/python benchmarks/geo_bench.py --polygons 5000 --points 200000

Region lookup: ``RegionIndex.first`` (lowest region covering each point, boundary inside) against
shapely's ``STRtree.query(points, predicate="intersects")`` over the same polygons (random star
polygons, half with a hole, some overlapping) and the same points, uniform over the globe
("world") and uniform in random polygons' bounding boxes ("near"); the shapely figure leaves out
building the point geometries (``shapely.points``), which is reported on its own. Both answers
are compared, so the figures are for identical results. Distance: haversine distance to a reference
point (``haversine_km``, what ``geo_distance`` computes) against shapely's vectorized planar
``shapely.distance`` to the same point (a peer for the cost of one vectorized call per point:
shapely has no great-circle distance); the bearing (``initial_bearing_deg``) is timed too.
Every stage runs ``--repeat`` times and the best run counts; the first call of each numba kernel
is made beforehand so its (cached) compilation is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shardforge import geometry  # noqa: E402


def star_polygons(n: int, seed: int) -> dict:
    """A FeatureCollection of ``n`` random star-shaped polygons over the world, half with a hole."""
    rng = np.random.default_rng(seed)
    feats = []
    for k in range(n):
        cx, cy = rng.uniform(-175, 175), rng.uniform(-85, 85)
        r = rng.uniform(1.0, 4.0)
        rings = []
        for r0, r1, m in ((0.7 * r, r, int(rng.integers(8, 65))), (0.1 * r, 0.4 * r, 8)):
            ang = np.sort((np.arange(m) + rng.uniform(-0.3, 0.3, m)) * 2 * np.pi / m)
            rad = rng.uniform(r0, r1, m)
            pts = np.c_[cx + rad * np.cos(ang), cy + rad * np.sin(ang)]
            rings.append(np.vstack([pts, pts[:1]]).tolist())
            if k % 2 == 0:
                break
        rings[1:] = [h[::-1] for h in rings[1:]]
        feats.append({"type": "Feature", "properties": {"name": f"region {k}"},
                      "geometry": {"type": "Polygon", "coordinates": rings}})
    return {"type": "FeatureCollection", "features": feats}


def best(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def region_lookup(index, tree, n_shapes: int, lon: np.ndarray, lat: np.ndarray,
                  repeat: int) -> dict:
    """Points/s of both lookups on the same points, and how many answers differ."""
    import shapely

    index.first(lon[:100], lat[:100], -1)  # compile / load the cached kernel
    ours_s, ours = best(lambda: index.first(lon, lat, -1), repeat)
    points_s, points = best(lambda: shapely.points(lon, lat), repeat)
    shapely_s, (qi, gi) = best(lambda: tree.query(points, predicate="intersects"), repeat)
    lowest = np.full(len(lon), n_shapes)
    np.minimum.at(lowest, qi, gi)
    theirs = np.where(lowest < n_shapes, lowest, -1)
    n = len(lon)
    return {
        "inside": int((ours >= 0).sum()),
        "mismatches_vs_shapely": int((theirs != ours).sum()),
        "shardforge_points_per_s": round(n / ours_s),
        "shapely_strtree_points_per_s": round(n / shapely_s),
        "shapely_with_point_creation_points_per_s": round(n / (shapely_s + points_s)),
        "ratio": round(shapely_s / ours_s, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polygons", type=int, default=1000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    import shapely

    fc = star_polygons(args.polygons, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    n = args.points
    t = time.perf_counter()
    regions = geometry.load_regions(fc)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    index = geometry.RegionIndex(regions)
    build_s = time.perf_counter() - t
    shapes = [shapely.from_geojson(json.dumps(f)) for f in fc["features"]]
    t = time.perf_counter()
    tree = shapely.STRtree(shapes)
    tree_s = time.perf_counter() - t

    # "world": uniform over the globe (most points in no polygon); "near": uniform in the
    # bounding box of a random polygon (every point needs real work from both)
    lon = rng.uniform(-180, 180, n)
    lat = rng.uniform(-90, 90, n)
    bounds = shapely.bounds(shapes)[rng.integers(0, len(shapes), n)]
    near_lon = rng.uniform(bounds[:, 0], bounds[:, 2])
    near_lat = rng.uniform(bounds[:, 1], bounds[:, 3])
    lookups = {name: region_lookup(index, tree, len(shapes), x, y, args.repeat)
               for name, x, y in (("world", lon, lat), ("near", near_lon, near_lat))}

    ref_lat, ref_lon = 40.7128, -74.0060
    dist_s, _ = best(lambda: geometry.haversine_km(lat, lon, ref_lat, ref_lon), args.repeat)
    bearing_s, _ = best(lambda: geometry.initial_bearing_deg(lat, lon, ref_lat, ref_lon),
                        args.repeat)
    points = shapely.points(lon, lat)
    ref = shapely.Point(ref_lon, ref_lat)
    planar_s, _ = best(lambda: shapely.distance(points, ref), args.repeat)

    results = {
        "polygons": args.polygons, "points": n,
        "region_lookup": lookups,
        "builds_s": {"load_geojson": round(load_s, 3), "region_index": round(build_s, 3),
                     "strtree": round(tree_s, 3)},
        "distance": {
            "shardforge_haversine_points_per_s": round(n / dist_s),
            "shardforge_bearing_points_per_s": round(n / bearing_s),
            "shapely_planar_distance_points_per_s": round(n / planar_s),
            "ratio": round(planar_s / dist_s, 2),
        },
    }
    print(f"{args.polygons} polygons, {n:,} points per set, one core")
    for name, r in lookups.items():
        print(f"region lookup {name:<5}  shardforge {r['shardforge_points_per_s']:>12,} pts/s  "
              f"shapely STRtree {r['shapely_strtree_points_per_s']:>11,} pts/s  "
              f"ratio {r['ratio']:.2f}x  ({r['inside']:,} inside, "
              f"{r['mismatches_vs_shapely']} mismatches)")
    print(f"  builds: load + check GeoJSON {load_s:.2f} s, region index {build_s:.3f} s, "
          f"STRtree {tree_s:.3f} s (shapely.points not counted above)")
    d = results["distance"]
    print(f"distance            shardforge {d['shardforge_haversine_points_per_s']:>12,} pts/s  "
          f"shapely planar  {d['shapely_planar_distance_points_per_s']:>11,} pts/s  "
          f"ratio {d['ratio']:.2f}x")
    print(f"bearing             shardforge {d['shardforge_bearing_points_per_s']:>12,} pts/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if any(r["mismatches_vs_shapely"] for r in lookups.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
