"""End-to-end Beam job on the click log at several sizes: rows/s, peak memory of every process,
and tf.Transform beside it in the same run.

    .venv/bin/python benchmarks/pipeline_bench.py [--sizes 200000,1000000] [--workers 2]
        [--tft-python /path/to/venv-with-tensorflow-transform/bin/python]
    .venv/bin/python benchmarks/pipeline_bench.py --rows 10000000     # ours alone, one size

For each size it generates the CSV with shardforge/examples/clicklog.py (cached under
--data-dir, written a million rows at a time), runs the example feature set
(shardforge/examples/click_features.py) through ``run_pipeline`` on the offline local runner in
a child process, and samples the peak RSS (``VmHWM``) of that launcher and of each of its worker
processes. With --tft-python it also runs the equivalent tf.Transform preprocessing_fn on the
same file (in that interpreter, same runner settings, tfx_bsl's C++ CSV decoder and Example
encoder), measured the same way. It prints a table per size (rows/s, the ratio, peak RSS per
process) and the marginal rows/s between consecutive sizes (the cost of the extra rows, without
the fixed start-up), then one JSON line. Such a venv:

    python3 -m venv /tmp/tftvenv && /tmp/tftvenv/bin/pip install tensorflow-transform==1.21.0 \
        tensorflow-cpu==2.21.0 apache-beam==2.77.0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FEATURES = os.path.join(REPO, "shardforge", "examples", "click_features.py")
GENERATE_ROWS = 1_000_000

TFT_SCRIPT = r'''
import json, sys, tempfile, time
import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

csv_path, workers, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
print(json.dumps({"seconds": time.perf_counter() - start, "rows": None}))
'''

OURS_SCRIPT = r'''
import json, logging, sys
sys.path.insert(0, sys.argv[5])
logging.getLogger("apache_beam").setLevel(logging.ERROR)
from shardforge.pipelines import run_pipeline
csv_path, workers, out, features = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = run_pipeline(features, csv_path, out, overwrite=True,
                 beam_args=[f"--direct_num_workers={workers}"])
print(json.dumps({"seconds": s.seconds, "rows": s.rows_read, "errors": s.errors,
                  "records": s.splits}))
'''


def _children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_measured(argv: list[str], env: dict | None = None) -> dict:
    """Run ``argv``; its last stdout line is JSON. Adds the peak RSS of the process itself
    (``launcher_mb``) and of every descendant that runs Python (``workers_mb``), sampled from
    /proc every 0.2 s (VmHWM is each process's own high-water mark)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peaks: dict[int, float] = {}
    kinds: dict[int, str] = {}
    while proc.poll() is None:
        todo = [proc.pid]
        while todo:
            pid = todo.pop()
            hwm = _hwm_mb(pid)
            if hwm is not None:
                peaks[pid] = max(peaks.get(pid, 0.0), hwm)
                if pid not in kinds:
                    kinds[pid] = _cmdline(pid)
            todo += _children(pid)
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{argv[:3]} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["launcher_mb"] = round(peaks.get(proc.pid, 0.0))
    result["workers_mb"] = sorted(
        (round(v) for p, v in peaks.items()
         if p != proc.pid and "python" in kinds.get(p, "") and v > 100), reverse=True)
    return result


def write_clicklog(path: str, n: int) -> None:
    """The click log CSV, generated a million rows at a time (seed = part index)."""
    from shardforge.examples.clicklog import write_csv

    if n <= GENERATE_ROWS:
        write_csv(path, n, seed=0)
        return
    tmp = path + ".part"
    with open(path + ".tmp", "wb") as out:
        for k, start in enumerate(range(0, n, GENERATE_ROWS)):
            write_csv(tmp, min(GENERATE_ROWS, n - start), seed=k)
            with open(tmp, "rb") as f:
                if k:
                    f.readline()  # one header
                while block := f.read(1 << 24):
                    out.write(block)
    os.remove(tmp)
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,1000000",
                        help="comma-separated row counts, measured in this order")
    parser.add_argument("--rows", type=int, default=None, help="one size only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "sf_bench"))
    parser.add_argument("--tft-python", default=None,
                        help="python of a venv with tensorflow-transform, for the comparison")
    args = parser.parse_args()
    sizes = [args.rows] if args.rows else [int(s) for s in args.sizes.split(",")]
    os.makedirs(args.data_dir, exist_ok=True)

    results = []
    for n in sizes:
        csv_path = os.path.join(args.data_dir, f"clicks-{n}.csv")
        if not os.path.exists(csv_path):
            start = time.perf_counter()
            write_clicklog(csv_path, n)
            print(f"generated {csv_path} in {time.perf_counter() - start:.1f} s",
                  file=sys.stderr)
        out = os.path.join(args.data_dir, "out")
        ours = run_measured([sys.executable, "-c", OURS_SCRIPT, csv_path, str(args.workers),
                             out, FEATURES, REPO])
        row = {"rows": n, "csv_mb": round(os.path.getsize(csv_path) / 2**20, 1),
               "ours_s": round(ours["seconds"], 2),
               "ours_rows_per_s": round(n / ours["seconds"]),
               "ours_launcher_mb": ours["launcher_mb"], "ours_workers_mb": ours["workers_mb"],
               "errors": ours["errors"], "records": ours["records"]}
        if args.tft_python:
            with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
                tft = run_measured([args.tft_python, "-c", TFT_SCRIPT, csv_path,
                                    str(args.workers), tmp],
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            row |= {"tft_s": round(tft["seconds"], 2),
                    "tft_rows_per_s": round(n / tft["seconds"]),
                    "tft_launcher_mb": tft["launcher_mb"], "tft_workers_mb": tft["workers_mb"],
                    "speedup_vs_tft": round(tft["seconds"] / ours["seconds"], 2)}
        results.append(row)
        print(json.dumps(row), file=sys.stderr)

    marginal = []
    for a, b in zip(results, results[1:]):
        m = {"from": a["rows"], "to": b["rows"],
             "ours_rows_per_s": round((b["rows"] - a["rows"]) / (b["ours_s"] - a["ours_s"]))}
        if "tft_s" in a:
            m["tft_rows_per_s"] = round((b["rows"] - a["rows"]) / (b["tft_s"] - a["tft_s"]))
            m["ratio"] = round(m["ours_rows_per_s"] / m["tft_rows_per_s"], 2)
        marginal.append(m)

    print(f"{'rows':>10} {'ours rows/s':>12} {'tft rows/s':>11} {'ratio':>6} "
          f"{'ours launcher/workers MB':>26} {'tft launcher/workers MB':>26}")
    for r in results:
        ours_mem = f"{r['ours_launcher_mb']} / {','.join(map(str, r['ours_workers_mb']))}"
        tft_mem = (f"{r['tft_launcher_mb']} / {','.join(map(str, r['tft_workers_mb']))}"
                   if "tft_s" in r else "-")
        print(f"{r['rows']:>10} {r['ours_rows_per_s']:>12} {r.get('tft_rows_per_s', '-'):>11} "
              f"{r.get('speedup_vs_tft', '-'):>6} {ours_mem:>26} {tft_mem:>26}")
    for m in marginal:
        print(f"marginal {m['from']} -> {m['to']}: ours {m['ours_rows_per_s']} rows/s"
              + (f", tft {m['tft_rows_per_s']} rows/s, ratio {m['ratio']}"
                 if "ratio" in m else ""))
    print(json.dumps({"bench": "pipeline", "workers": args.workers, "sizes": results,
                      "marginal": marginal}))


if __name__ == "__main__":
    main()
