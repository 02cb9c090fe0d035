"""End-to-end Beam job on a 200k-row click log: rows/s and peak memory.

    .venv/bin/python benchmarks/pipeline_bench.py [--rows 200000] [--workers 2]
        [--tft-python /path/to/venv-with-tensorflow-transform/bin/python]

Generates the CSV with examples/clicklog.py (cached under --data-dir), runs the example feature
set (examples/click_features.py) through `run_pipeline` on the offline local runner, and prints
one JSON line last: rows/s, wall seconds, peak RSS of the launcher and of its worker processes.
With --tft-python it also runs the equivalent tf.Transform preprocessing_fn on the same file
(in that interpreter, same runner settings, tfx_bsl's C++ CSV decoder and Example encoder) and
reports the ratio. Such a venv:

    python3 -m venv /tmp/tftvenv && /tmp/tftvenv/bin/pip install tensorflow-transform==1.21.0 \
        tensorflow-cpu==2.21.0 apache-beam==2.77.0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TFT_SCRIPT = r'''
import json, sys, tempfile, time
import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

csv_path, workers = sys.argv[1], int(sys.argv[2])
columns = ["label", "price", "age", "country", "item_id", "query", "lat", "lon"]
# price has missing values: tf.Transform wants those as VarLen and densifies them itself
spec = {
    "label": tf.io.FixedLenFeature([], tf.int64),
    "price": tf.io.VarLenFeature(tf.float32),
    "age": tf.io.FixedLenFeature([], tf.float32),
    "country": tf.io.FixedLenFeature([], tf.string),
    "item_id": tf.io.FixedLenFeature([], tf.string),
    "query": tf.io.FixedLenFeature([], tf.string),
    "lat": tf.io.FixedLenFeature([], tf.float32),
    "lon": tf.io.FixedLenFeature([], tf.float32),
}

def preprocessing_fn(x):
    age_b = tft.bucketize(x["age"], 10)
    country = tft.compute_and_apply_vocabulary(x["country"], top_k=100, num_oov_buckets=1)
    tokens = tf.strings.split(x["query"])
    return {
        "price": tft.scale_to_z_score(tf.squeeze(tft.sparse_tensor_to_dense_with_shape(
            x["price"], [None, 1], default_value=0.0), axis=1)),
        "age_bucketized": age_b,
        "country": country,
        "item_id": tf.strings.to_hash_bucket_fast(x["item_id"], 100000),
        "age_bucketized_X_country": tf.reshape(tf.sparse.to_dense(tf.sparse.cross_hashed(
            [tf.reshape(age_b, [-1, 1]), tf.reshape(country, [-1, 1])], num_buckets=1000)),
            [-1]),
        "query": tft.compute_and_apply_vocabulary(tokens, top_k=2000, num_oov_buckets=1),
        "label": x["label"],
    }

class EncodeExamples(beam.DoFn):
    """Transformed record batches -> serialized tf.Examples (tfx_bsl's C++ encoder)."""

    def __init__(self, schema):
        self.schema = schema

    def setup(self):
        from tfx_bsl.coders import example_coder

        self.encoder = example_coder.RecordBatchToExamplesEncoder(self.schema)

    def process(self, batch_and_passthrough):
        yield from self.encoder.encode(batch_and_passthrough[0])


schema = schema_utils.schema_from_feature_spec(spec)
out = tempfile.mkdtemp()
start = time.perf_counter()
opts = beam.options.pipeline_options.PipelineOptions(
    ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
with beam.Pipeline(runner=FnApiRunner(), options=opts) as p, tft_beam.Context(temp_dir=out):
    source = tfxio.BeamRecordCsvTFXIO(physical_format="text", column_names=columns, schema=schema)
    raw = (p | beam.io.ReadFromText(csv_path, skip_header_lines=1)
             | beam.Map(str.encode).with_output_types(bytes)
             | source.BeamSource())
    analyze = tft_beam.AnalyzeAndTransformDataset(preprocessing_fn, output_record_batches=True)
    (transformed, metadata), fn = (raw, source.TensorAdapterConfig()) | analyze
    _ = (transformed | beam.ParDo(EncodeExamples(metadata.schema))
                     | beam.io.WriteToTFRecord(out + "/tft"))
print(json.dumps({"seconds": time.perf_counter() - start}))
'''


def _children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "sf_bench"))
    parser.add_argument("--tft-python", default=None,
                        help="python of a venv with tensorflow-transform, for the comparison")
    args = parser.parse_args()

    import logging

    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    from shardforge.pipelines import run_pipeline

    os.makedirs(args.data_dir, exist_ok=True)
    csv_path = os.path.join(args.data_dir, f"clicks-{args.rows}.csv")
    if not os.path.exists(csv_path):
        start = time.perf_counter()
        from shardforge.examples.clicklog import write_csv

        write_csv(csv_path, args.rows, seed=0)
        print(f"generated {csv_path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    out = os.path.join(args.data_dir, "out")
    summary = run_pipeline(
        os.path.join(REPO, "shardforge", "examples", "click_features.py"), csv_path, out, overwrite=True,
        beam_args=[f"--direct_num_workers={args.workers}"],
    )
    result = {
        "bench": "pipeline", "rows": summary.rows_read, "workers": args.workers,
        "seconds": round(summary.seconds, 2),
        "rows_per_s": round(summary.rows_read / summary.seconds),
        "records": summary.splits, "errors": summary.errors,
        "csv_mb": round(os.path.getsize(csv_path) / 2**20, 1),
        "peak_rss_mb_launcher": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_worker": round(_children_peak_rss_mb()),
    }
    if args.tft_python:
        proc = subprocess.run([args.tft_python, "-c", TFT_SCRIPT, csv_path, str(args.workers)],
                              capture_output=True, text=True,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if proc.returncode == 0:
            tft_seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
            result["tft_rows_per_s"] = round(summary.rows_read / tft_seconds)
            result["speedup_vs_tft"] = round(tft_seconds / summary.seconds, 2)
        else:
            result["tft_error"] = proc.stderr.strip().splitlines()[-1:]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
