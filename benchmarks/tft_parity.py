"""Rows whose outputs differ between tf.Transform and shardforge on the same click-log CSV.

    .venv/bin/python benchmarks/tft_parity.py --tft-python /tmp/tftvenv/bin/python --rows 200000

Writes the click log (``shardforge/examples/clicklog.py``) as CSV with a few realistic blemishes
(blank ages, countries and coordinates; queries with double, leading or no spaces), runs the
``preprocessing_fn`` in ``shardforge/examples/tft_features.py``'s docstring through tf.Transform
(``AnalyzeAndTransformDataset`` on Beam's DirectRunner, in the Python given by ``--tft-python``,
which needs tensorflow-transform) and the feature file in-process, and reports per output the
rows that differ: exactly for ids, beyond 1e-5 relative for floats (tf.Transform computes the
mean and variance in float32 batches; shardforge in exact sums). For the bucketized columns it
also reports how many rows each side puts in another bucket than the exact quantiles do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

DEFAULTS = {"price": 0.0, "age": 0, "country": "", "item_id": "", "query": "", "lat": 0.0,
            "lon": 0.0, "label": 0}


def make_csv(path: str, rows: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from shardforge.examples.clicklog import write_csv

    write_csv(path, rows, seed)
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    rng = np.random.default_rng(seed + 1)

    def blank(name: str, fraction: float):
        col = table[name].combine_chunks()
        return pc.if_else(pa.array(rng.random(rows) < fraction), pa.nulls(rows, col.type), col)

    query = table["query"].combine_chunks().to_numpy(zero_copy_only=False).astype(object)
    r = rng.random(rows)
    query[r < 0.02] = [q.replace(" ", "  ", 1) for q in query[r < 0.02]]
    query[(r >= 0.02) & (r < 0.03)] = [" " + q for q in query[(r >= 0.02) & (r < 0.03)]]
    query[(r >= 0.03) & (r < 0.035)] = ""
    cols = {n: table[n] for n in table.column_names}
    cols.update(age=blank("age", 0.04), country=blank("country", 0.03), lat=blank("lat", 0.02),
                query=pa.array(query, pa.string()))
    pacsv.write_csv(pa.table(cols), path, pacsv.WriteOptions(quoting_style="needed"))


# --------------------------------------------------------------------------- tf.Transform side


def run_tft(csv_path: str, out_path: str) -> None:
    """Runs in the tf.Transform venv: the preprocessing_fn over the CSV, outputs to .npz."""
    import csv

    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    def preprocessing_fn(inputs):
        age_bucket = tft.bucketize(inputs["age"], 10)
        words = tf.strings.split(inputs["query"], sep=" ")
        return {
            "row": inputs["row"],
            "price_z": tft.scale_to_z_score(inputs["price"]),
            "age_bucket": age_bucket,
            "country": tft.compute_and_apply_vocabulary(inputs["country"], top_k=100,
                                                        num_oov_buckets=1),
            "item_frequent": tft.compute_and_apply_vocabulary(inputs["item_id"],
                                                              frequency_threshold=10),
            "item_top": tft.compute_and_apply_vocabulary(inputs["item_id"], top_k=5000,
                                                         num_oov_buckets=100),
            "query": tft.compute_and_apply_vocabulary(words, top_k=2000,
                                                      num_oov_buckets=1).to_sparse(),
            "country_age": tf.strings.to_hash_bucket_fast(
                inputs["country"] + "_" + tf.strings.as_string(age_bucket), 1000),
            "lat_bucket": tft.bucketize(inputs["lat"], 20),
            "lon_bucket": tft.bucketize(inputs["lon"], 20),
            "label": inputs["label"],
        }

    kinds = {"price": tf.float32, "age": tf.int64, "country": tf.string, "item_id": tf.string,
             "query": tf.string, "lat": tf.float32, "lon": tf.float32, "label": tf.int64}
    spec = {k: tf.io.FixedLenFeature([], v) for k, v in kinds.items()}
    spec["row"] = tf.io.FixedLenFeature([], tf.int64)
    rows = []
    with open(csv_path, newline="") as f:
        for i, rec in enumerate(csv.DictReader(f)):
            # FixedLenFeature(default_value=...): a missing value is filled when parsed
            row = {"row": i}
            for k, kind in kinds.items():
                v = rec[k]
                if v == "" and k not in ("query",):
                    v = DEFAULTS[k]
                row[k] = (float(v) if kind == tf.float32 else int(v) if kind == tf.int64
                          else v.encode())
            rows.append(row)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp):
        (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=False)
    out = sorted(out, key=lambda r: int(r["row"]))
    arrays = {}
    for name in out[0]:
        if name == "query":
            arrays["query_values"] = np.concatenate([np.asarray(r[name], np.int64) for r in out])
            arrays["query_lengths"] = np.asarray([len(r[name]) for r in out])
        else:
            arrays[name] = np.asarray([r[name] for r in out])
    np.savez(out_path, **arrays)


# --------------------------------------------------------------------------- shardforge side


def run_shardforge(csv_path: str) -> dict:
    import pyarrow.csv as pacsv

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from shardforge.examples.tft_features import FEATURES

    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(
        column_types={k: "string" for k in DEFAULTS}, strings_can_be_null=True))
    raw = {k: table[k].to_numpy(zero_copy_only=False) for k in table.column_names}
    batch, errors = FEATURES.coerce(raw)
    assert not errors, errors[:3]
    state = FEATURES.fit([batch])
    return FEATURES.transform(batch, state), batch


def exact_bucket_rows(values: np.ndarray, num_buckets: int, ids: np.ndarray) -> int:
    """Rows that ``ids`` put in another bucket than the exact quantile boundaries would."""
    xs = np.sort(values.astype(np.float64))
    exact = xs[(np.arange(1, num_buckets) * len(xs)) // num_buckets].astype(np.float32)
    ref = np.searchsorted(exact, values.astype(np.float32), side="right")
    return int(np.sum(ref != ids))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tft-python", required=False, help="python with tensorflow-transform")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-tft", nargs=2, metavar=("CSV", "NPZ"), help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if args.run_tft:
        run_tft(*args.run_tft)
        return 0
    if not args.tft_python:
        ap.error("--tft-python is required")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, npz_path = os.path.join(tmp, "clicks.csv"), os.path.join(tmp, "tft.npz")
        make_csv(csv_path, args.rows, args.seed)
        t = time.perf_counter()
        subprocess.run([args.tft_python, os.path.abspath(__file__), "--run-tft", csv_path,
                        npz_path], check=True)
        tft_s = time.perf_counter() - t
        t = time.perf_counter()
        ours, batch = run_shardforge(csv_path)
        sf_s = time.perf_counter() - t
        theirs = dict(np.load(npz_path))
    results = {"rows": args.rows, "tft_s": round(tft_s, 1), "shardforge_s": round(sf_s, 1)}
    print(f"{'output':<14} {'rows differing':>15} {'share':>8}")
    for name in ["price_z", "age_bucket", "country", "item_frequent", "item_top", "query",
                 "country_age", "lat_bucket", "lon_bucket", "label"]:
        if name == "query":
            lengths = theirs["query_lengths"]
            splits = np.concatenate([[0], np.cumsum(lengths)])
            same_len = ours[name].row_lengths() == lengths
            diff = ~same_len
            for i in np.flatnonzero(same_len):
                diff[i] = not np.array_equal(ours[name][i],
                                             theirs["query_values"][splits[i]:splits[i + 1]])
        elif ours[name].dtype.kind == "f":
            diff = ~np.isclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6)
        else:
            diff = ours[name] != theirs[name]
        n = int(diff.sum())
        results[name] = n
        print(f"{name:<14} {n:>15,} {n / args.rows:>8.3%}")
    for name, source, k in (("lat_bucket", "lat", 20), ("lon_bucket", "lon", 20),
                            ("age_bucket", "age", 10)):
        x = np.asarray(batch[source], np.float64)
        x = np.where(np.isnan(x), 0.0, x)
        a, b = exact_bucket_rows(x, k, ours[name]), exact_bucket_rows(x, k, theirs[name])
        results[f"{name}_vs_exact"] = {"shardforge": a, "tft": b}
        print(f"{name}: rows in another bucket than exact quantiles give: shardforge {a:,}, "
              f"tf.Transform {b:,}")
    print(f"tf.Transform {tft_s:.1f} s, shardforge in-process {sf_s:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
