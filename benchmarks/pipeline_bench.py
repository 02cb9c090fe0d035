"""What a user waits for: ``shardforge run`` on the click log, from the command's start to its
exit, beside tf.Transform on the same file in the same run, and where the wall clock goes.

    .venv/bin/python benchmarks/pipeline_bench.py [--sizes 1000,200000,1000000] [--workers 2]
        [--tft-python /path/to/venv-with-tensorflow-transform/bin/python] [--features both]
    .venv/bin/python benchmarks/pipeline_bench.py --rows 10000000     # ours alone, one size
    .venv/bin/python benchmarks/pipeline_bench.py --per-row --sizes 1000000 --features example

For each size it generates the CSV with shardforge/examples/clicklog.py (cached under
--data-dir, written a million rows at a time) and runs ``python -m shardforge.cli run`` on it
(the offline local runner, --workers worker processes) with two feature sets: ``example``
(shardforge/examples/click_features.py, with three geo columns tf.Transform has no peer for)
and ``like`` (benchmarks/tft_parity_features.py: exactly the tf.Transform preprocessing_fn
below). With --tft-python it runs that preprocessing_fn on the same file between the two (in
that interpreter, same runner settings, tfx_bsl's C++ CSV decoder and Example encoder).

Per run it measures the command's wall clock (start to exit, here), the job time it reports
itself (in-job), the CPU seconds of the command and its workers, and the peak RSS (``VmHWM``) of
the launcher and of each worker, sampled from /proc. For ours it also prints where the wall
clock went, from what is visible in the output directory while the job runs (``JobMarks``). It
prints a table per size, the marginal rows/s between consecutive sizes (the cost of the extra
rows, without the fixed start-up), then one JSON line. ``--per-row`` runs instead the workers'
code for every row in this process, without a runner (the analyze pass, the transform pass with
its statistics and spill, the shard merge), and prints its CPU per row beside the parts' sum.
Such a venv:

    python3 -m venv /tmp/tftvenv && /tmp/tftvenv/bin/pip install tensorflow-transform==1.21.0 \
        tensorflow-cpu==2.21.0 apache-beam==2.77.0
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FEATURE_SETS = [
    ("example", os.path.join(REPO, "shardforge", "examples", "click_features.py")),
    ("like", os.path.join(REPO, "benchmarks", "tft_parity_features.py")),  # TFT_SCRIPT's
]
# CPU per row of the job's parts measured alone (issue #24: pyarrow.csv parse ~0.8M rows per
# CPU-second, coerce ~2.6M, fit ~0.9M, transform ~1.0M, encode ~2M; the input read twice): the
# job's CPU per row against this says how close it runs to what its parts allow
PARTS_US_PER_ROW = 6.0
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
imported = time.time()
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
print(json.dumps({"seconds": time.perf_counter() - start, "rows": None,
                  "imported_epoch": imported, "ended_epoch": time.time()}))
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


class JobMarks:
    """When a ``shardforge run`` into ``output`` passes the points a user can see from outside,
    seconds after the command started: its staging directory (start-up done), the first
    progress file of a worker (worker start, first rows counted), all rows read (the analyze
    pass), the first and the last record encoded (the transform pass), the end of Beam (its
    progress directory removed), ``stats.html`` staged, ``manifest.json`` published. Workers
    write their counts every half second (``pipelines.progress``), so marks in the job are
    good to about 0.5 s."""

    def __init__(self, output: str, rows: int) -> None:
        self.output, self.rows, self.marks = output, rows, {}
        self._progress_seen = False

    def poll(self, t: float) -> None:
        from shardforge.pipelines.progress import totals

        def mark(name: str, seen: bool) -> None:
            if seen and name not in self.marks:
                self.marks[name] = t

        staging = glob.glob(os.path.join(self.output, ".shardforge", "staging-*"))
        mark("manifest", os.path.exists(os.path.join(self.output, "manifest.json")))
        if not staging:
            return
        mark("staging", True)
        ticks = os.path.join(staging[0], ".shardforge", "progress")
        if os.path.isdir(ticks):
            self._progress_seen = True
            counts = totals(ticks)
            mark("workers", any(counts.values()))
            mark("read", counts["rows_read"] >= self.rows)
            mark("transform_start", counts["records_written"] > 0)
            mark("transform_done", counts["records_written"] + counts["errors"] >= self.rows)
        mark("beam_done", self._progress_seen and not os.path.isdir(ticks))
        mark("html", os.path.exists(os.path.join(staging[0], "stats.html")))


# (phase, the mark it ends at): each phase runs from the previous mark that was seen
PHASES = [
    ("start-up: imports, input checks, options", "staging"),
    ("pipeline construction, worker start, first chunk", "workers"),
    ("analyze pass: read, coerce, fit", "read"),
    ("combine analyzers, start transform", "transform_start"),
    ("transform pass: read again, transform, encode, spill", "transform_done"),
    ("merge/write shards, stats, Beam shutdown", "beam_done"),
    ("stats.json → stats.html", "html"),
    ("TFMD files, manifest, publish", "manifest"),
    ("exit", "exit"),
]


def breakdown(marks: dict[str, float]) -> list[tuple[str, float]]:
    """(phase, seconds) from a run's marks; a phase whose end mark was not seen (too short to
    catch) counts as 0 and its time goes to the next one."""
    out, last = [], 0.0
    for name, end in PHASES:
        if end in marks:
            out.append((name, max(marks[end] - last, 0.0)))
            last = max(last, marks[end])
        else:
            out.append((name, 0.0))
    return out


def run_measured(argv: list[str], env: dict | None = None, marks: JobMarks | None = None,
                 poll: float = 0.05) -> dict:
    """Run ``argv`` to its exit; it prints JSON (``seconds``: the time it reports
    for its own job). Adds ``wall_s`` (command start to exit, measured here), ``cpu_s`` (user +
    system of the command and the workers it waited for), the peak RSS of the process itself
    (``launcher_mb``) and of every descendant that runs Python (``workers_mb``), sampled from
    /proc (VmHWM is each process's own high-water mark), and ``marks`` from ``marks.poll``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start, start_epoch = time.perf_counter(), time.time()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env)
        peaks: dict[int, float] = {}
        kinds: dict[int, str] = {}
        last_sample = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.perf_counter() - start
            if pid:
                break
            if marks is not None:
                marks.poll(now)
            if now - last_sample >= 0.2:
                last_sample = now
                todo = [proc.pid]
                while todo:
                    p = todo.pop()
                    hwm = _hwm_mb(p)
                    if hwm is not None:
                        peaks[p] = max(peaks.get(p, 0.0), hwm)
                        kinds.setdefault(p, _cmdline(p))
                    todo += _children(p)
            time.sleep(poll)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise RuntimeError(f"{argv[:4]} failed:\n{stderr[-3000:]}")
    # the whole output is one JSON document (``shardforge run --json``) or ends with one line
    text = stdout.strip()
    result = json.loads(text if text.startswith("{") else text.splitlines()[-1])
    result["wall_s"], result["start_epoch"] = now, start_epoch
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["launcher_mb"] = round(peaks.get(proc.pid, 0.0))
    result["workers_mb"] = sorted(
        (round(v) for p, v in peaks.items()
         if p != proc.pid and "python" in kinds.get(p, "") and v > 100), reverse=True)
    if marks is not None:
        result["marks"] = dict(marks.marks, exit=now)
    return result


def run_ours(csv_path: str, features: str, rows: int, workers: int, data_dir: str) -> dict:
    """``shardforge run`` as a user types it, into a fresh output."""
    out = os.path.join(data_dir, "out")
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "shardforge.cli", "run", "--features", features,
            "--input", csv_path, "--output", out, "--json", "--quiet"]
    argv += [f"--direct_num_workers={workers}"] if workers else []  # 0: shardforge's own rule
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    r = run_measured(argv, env=env, marks=JobMarks(out, rows))
    shutil.rmtree(out, ignore_errors=True)
    return r


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


def run_tft(tft_python: str, csv_path: str, workers: int, data_dir: str) -> dict:
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        r = run_measured([tft_python, "-c", TFT_SCRIPT, csv_path, str(workers), tmp],
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    # its own marks are epoch seconds: made relative to the command's start
    r["marks"] = {"imported": r["imported_epoch"] - r["start_epoch"],
                  "job_done": r["ended_epoch"] - r["start_epoch"], "exit": r["wall_s"]}
    return r


def per_row(csv_path: str, features: str) -> dict:
    """CPU seconds of the job's per-row code in this process, a bundle per input split as a
    runner gives them: the analyze pass (read, coerce, fit), the transform pass (read again,
    transform, statistics, encode, spill sorted runs) and the shard writers' merge."""
    from shardforge.pipelines import stats
    from shardforge.pipelines import transforms as t
    from shardforge.pipelines.readers import DEFAULT_CHUNK_ROWS

    ref = t.FeatureSetRef(features)
    ref.get()  # loading the feature set is a fixed cost
    splits = t._split((csv_path, os.path.getsize(csv_path)), None)
    cpu = [time.process_time()]
    read, combine = t._ReadFn(ref, None, DEFAULT_CHUNK_ROWS, "error"), t.AnalyzeCombineFn(ref)
    parts, rows = [], 0
    for split in splits:
        acc = combine.create_accumulator()
        for out in read.process(split):
            if isinstance(out, t.Rows):
                acc = combine.add_input(acc, out)
                rows += len(next(iter(out.batch.values())))
        parts.append(acc)
    state = combine.extract_output(combine.merge_accumulators(parts))
    cpu.append(time.process_time())
    with tempfile.TemporaryDirectory() as tmp:
        fn = t._TransformFn(ref, None, DEFAULT_CHUNK_ROWS, "error", 0.1, None,
                            os.path.join(tmp, "runs"), t.DEFAULT_RUN_BYTES)
        runs, accs = [], []
        for split in splits:
            fn.start_bundle()
            runs += [r for r in fn.process(split, state) if isinstance(r, dict)]
            for out in fn.finish_bundle():
                value = out.value.value if isinstance(out, t.pvalue.TaggedOutput) else out.value
                (accs if isinstance(value, stats.Accumulator) else runs).append(value)
        stats.Accumulator.merge(accs)
        cpu.append(time.process_time())
        sizes = t._SplitSizes()
        totals = sizes.extract_output(sizes.merge_accumulators(
            [sizes.add_input(sizes.create_accumulator(), r) for r in runs]))
        writer = t._WriteShardFn(os.path.join(tmp, "out"), None)
        for split, (_, size) in totals.items():
            n = t.num_shards_for(size, t.DEFAULT_SHARD_SIZE)
            for i in range(n):
                list(writer.process((split, i, n), runs))
        cpu.append(time.process_time())
    us = [(b - a) / rows * 1e6 for a, b in zip(cpu, cpu[1:])]
    return {"rows": rows,
            "us_per_row": {k: round(v, 2) for k, v in zip(("analyze", "transform", "write"), us)},
            "rows_per_s_per_core": round(rows / (cpu[-1] - cpu[0]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,1000000",
                        help="comma-separated row counts, measured in this order")
    parser.add_argument("--rows", type=int, default=None, help="one size only")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes; 0: no flag, shardforge's default (in-process "
                        "for a small input, pipelines/options.py; tf.Transform gets 2)")
    parser.add_argument("--features", choices=("both", "example", "like"), default="both",
                        help="the example feature set, the like-for-like one, or both")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "sf_bench"))
    parser.add_argument("--tft-python", default=None,
                        help="python of a venv with tensorflow-transform, for the comparison")
    parser.add_argument("--per-row", action="store_true",
                        help="the workers' per-row code in this process instead (see per_row)")
    args = parser.parse_args()
    sizes = [args.rows] if args.rows else [int(s) for s in args.sizes.split(",")]
    feature_sets = [(name, path) for name, path in FEATURE_SETS
                    if args.features in ("both", name)]
    os.makedirs(args.data_dir, exist_ok=True)
    if args.per_row:
        for n in sizes:
            csv_path = os.path.join(args.data_dir, f"clicks-{n}.csv")
            if not os.path.exists(csv_path):
                write_clicklog(csv_path, n)
            for name, path in feature_sets:
                r = per_row(csv_path, path)
                total = sum(r["us_per_row"].values())
                print(f"{name} {n:,} rows: CPU µs/row " + ", ".join(
                    f"{k} {v:.2f}" for k, v in r["us_per_row"].items())
                    + f"; {total:.2f} in all = {r['rows_per_s_per_core']:,} rows/s per core "
                    f"(parts' sum {PARTS_US_PER_ROW} µs/row: {PARTS_US_PER_ROW / total:.0%})")
                print(json.dumps({"bench": "pipeline_per_row", "features": name, **r}))
        return

    results = []
    for n in sizes:
        csv_path = os.path.join(args.data_dir, f"clicks-{n}.csv")
        if not os.path.exists(csv_path):
            start = time.perf_counter()
            write_clicklog(csv_path, n)
            print(f"generated {csv_path} in {time.perf_counter() - start:.1f} s",
                  file=sys.stderr)
        runs = {}
        # tf.Transform between our two runs: a machine whose speed drifts slows all alike
        for name, path in feature_sets[:1]:
            runs[name] = run_ours(csv_path, path, n, args.workers, args.data_dir)
        if args.tft_python:
            runs["tft"] = run_tft(args.tft_python, csv_path, args.workers or 2, args.data_dir)
        for name, path in feature_sets[1:]:
            runs[name] = run_ours(csv_path, path, n, args.workers, args.data_dir)
        row = {"rows": n, "csv_mb": round(os.path.getsize(csv_path) / 2**20, 1)}
        for name, r in runs.items():
            row[name] = {
                "wall_s": round(r["wall_s"], 2), "in_job_s": round(r["seconds"], 2),
                "cpu_s": round(r["cpu_s"], 2), "rows_per_s": round(n / r["wall_s"]),
                "us_per_row_cpu": round(r["cpu_s"] / n * 1e6, 2),
                "launcher_mb": r["launcher_mb"], "workers_mb": r["workers_mb"],
                "marks": {k: round(v, 2) for k, v in r["marks"].items()},
            }
            if name != "tft":
                row[name]["errors"], row[name]["records"] = r["errors"], r["splits"]
                row[name]["breakdown"] = [(p, round(t, 2)) for p, t in breakdown(r["marks"])]
            if "tft" in runs and name != "tft":
                row[name]["speedup_wall"] = round(runs["tft"]["wall_s"] / r["wall_s"], 2)
                row[name]["speedup_in_job"] = round(runs["tft"]["seconds"] / r["seconds"], 2)
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
        print_size(row)

    marginal = []
    for a, b in zip(results, results[1:]):
        m = {"from": a["rows"], "to": b["rows"]}
        for name in (k for k in b if isinstance(b[k], dict)):
            m[name] = round((b["rows"] - a["rows"]) / (b[name]["wall_s"] - a[name]["wall_s"]))
        marginal.append(m)
        print(f"marginal rows/s (wall) {m.pop('from')} -> {m.pop('to')}: "
              + ", ".join(f"{k} {v}" for k, v in m.items()))
    print(json.dumps({"bench": "pipeline", "workers": args.workers, "sizes": results,
                      "marginal": marginal}))


def print_size(row: dict) -> None:
    """The table of one size: each run's command wall clock beside its in-job time, and for
    ours where the wall clock went."""
    n = row["rows"]
    print(f"\n{n:,} rows ({row['csv_mb']} MiB CSV)")
    print(f"{'run':<10} {'wall s':>7} {'in-job s':>9} {'CPU s':>7} {'rows/s':>9} "
          f"{'CPU µs/row':>11} {'vs tft wall':>12} {'in-job':>7} {'launcher/workers MB':>22}")
    for name, r in ((k, v) for k, v in row.items() if isinstance(v, dict)):
        mem = f"{r['launcher_mb']} / {','.join(map(str, r['workers_mb']))}"
        print(f"{name:<10} {r['wall_s']:>7.2f} {r['in_job_s']:>9.2f} {r['cpu_s']:>7.2f} "
              f"{r['rows_per_s']:>9,} {r['us_per_row_cpu']:>11.2f} "
              f"{r.get('speedup_wall', '-'):>12} {r.get('speedup_in_job', '-'):>7} {mem:>22}")
    for name, r in ((k, v) for k, v in row.items() if isinstance(v, dict) and "breakdown" in v):
        print(f"  {name}: where the {r['wall_s']:.1f} s of wall clock went "
              f"(in-job {r['in_job_s']:.1f} s; parts' sum {PARTS_US_PER_ROW} µs/row of CPU "
              f"against {r['us_per_row_cpu']:.1f} measured, "
              f"{PARTS_US_PER_ROW / r['us_per_row_cpu']:.0%} of the limit)")
        for phase, t in r["breakdown"]:
            print(f"    {phase:<55} {t:6.2f} s")
    if "tft" in row:
        m = row["tft"]["marks"]
        print(f"  tft: start-up (imports) {m['imported']:.2f} s, job "
              f"{row['tft']['in_job_s']:.2f} s, exit {m['exit'] - m['job_done']:.2f} s")


if __name__ == "__main__":
    main()
