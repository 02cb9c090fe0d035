"""Read + verify + decode throughput: shardforge vs tf.data + tf.io.parse_example vs `tfrecord`.

    .venv/bin/python benchmarks/records_bench.py            # 200k Examples
    .venv/bin/python benchmarks/records_bench.py --quick    # 20k, a few seconds

It also times the writer side on one core: ``encode_batch`` (compiled) against ``encode_example``
row by row on the click-log example batch (shardforge/examples/click_features.py applied to
shardforge/examples/clicklog.py rows, 4096 rows, 7 features) and prints both in µs/row.

Everything runs pinned to one CPU core (sched_setaffinity, TF thread pools of 1); records/s are
given per CPU-second (the primary figure, robust on a shared machine) and per wall-second. Both
readers read the same files for the same features; after one untimed pass each they alternate,
and each one's best pass counts (over at least 2 pairs, 5 without --quick, and at least
``--seconds`` of CPU each). Each
Example has 5 float scalars, 4 int64 scalars, one int64 token list of 16-256 values and one
short bytes value; the shards are uncompressed with CRCs checked by every reader. The last line
printed is one JSON object with records/s for each reader and ``ratio_vs_tf``.
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

TF_BATCH = 1024
NUM_SHARDS = 4


def write_dataset(directory: str, n: int, seed: int = 0) -> list[str]:
    from shardforge.records import ShardedWriter, encode_example

    rng = np.random.default_rng(seed)
    with ShardedWriter(directory, num_shards=NUM_SHARDS) as w:
        for i in range(n):
            w.write(encode_example({
                **{f"f{k}": float(rng.standard_normal()) for k in range(5)},
                **{f"i{k}": int(rng.integers(0, 1 << 40)) for k in range(4)},
                "tokens": rng.integers(0, 50_000, size=int(rng.integers(16, 257))),
                "key": f"item-{i}",
            }))
    return w.paths


def spec():
    from shardforge.records import FixedLen, VarLen

    return {
        **{f"f{k}": FixedLen("float32") for k in range(5)},
        **{f"i{k}": FixedLen("int64") for k in range(4)},
        "tokens": VarLen("int64"),
        "key": FixedLen("bytes"),
    }


def ours_pass(paths: list[str]) -> int:
    from shardforge.records import decode_batch, read_blocks

    s = spec()
    n = 0
    for block in read_blocks(paths, verify=True):
        n += len(decode_batch(block, s)["key"])
    return n


def bench_encode(rows: int = 4096, repeat: int = 5) -> tuple[float, float]:
    """(encode_batch µs/row, encode_example-per-row µs/row) on the click-log example batch."""
    import shardforge.examples
    import shardforge.features as sf
    from shardforge.examples.clicklog import generate_clicklog
    from shardforge.records import encode_batch, encode_example

    examples = os.path.dirname(shardforge.examples.__file__)
    fs = sf.load_feature_set(os.path.join(examples, "click_features.py"))
    raw = {k: v.tolist() for k, v in generate_clicklog(rows, seed=0).items()}
    batch, _ = fs.coerce(raw)
    out = fs.transform(batch, fs.fit([batch]))
    n = len(encode_batch(out))  # compiles (or loads) the kernels

    def per_row() -> None:
        for i in range(n):
            encode_example({name: col[i] for name, col in out.items()})

    times = []
    for fn in (lambda: encode_batch(out), per_row):
        best = float("inf")
        for _ in range(repeat):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        times.append(best / n * 1e6)
    return times[0], times[1]


def tf_pass_factory(paths: list[str]):
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    features = {
        **{f"f{k}": tf.io.FixedLenFeature([], tf.float32) for k in range(5)},
        **{f"i{k}": tf.io.FixedLenFeature([], tf.int64) for k in range(4)},
        "tokens": tf.io.VarLenFeature(tf.int64),
        "key": tf.io.FixedLenFeature([], tf.string),
    }
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    ds = (
        tf.data.TFRecordDataset(paths)
        .batch(TF_BATCH)
        .map(lambda x: tf.io.parse_example(x, features))
        .with_options(options)
    )

    def tf_pass() -> int:
        return sum(int(batch["key"].shape[0]) for batch in ds)

    return tf_pass


def timed(fn, *args) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of all the process's threads, result)."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, n


def bench_tfrecord_pkg(paths: list[str], limit: int) -> tuple[float, float, int] | None:
    """The `tfrecord` package in a child process: its tensorflow.* protos clash with TF's."""
    code = (
        "import json, sys, time\n"
        "from tfrecord.reader import tfrecord_loader\n"
        "paths, limit = sys.argv[1:-1], int(sys.argv[-1])\n"
        "desc = {**{f'f{k}': 'float' for k in range(5)}, **{f'i{k}': 'int' for k in range(4)},\n"
        "        'tokens': 'int', 'key': 'byte'}\n"
        "t0, c0, n = time.perf_counter(), time.process_time(), 0\n"
        "for p in paths:\n"
        "    for _ in tfrecord_loader(p, None, desc):\n"
        "        n += 1\n"
        "        if n >= limit: break\n"
        "    if n >= limit: break\n"
        "wall, cpu = time.perf_counter() - t0, time.process_time() - c0\n"
        "print(json.dumps([n / cpu, n / wall, n]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *paths, str(limit)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        if "No module named 'tfrecord'" not in out.stderr:
            print(f"tfrecord package failed: {out.stderr.strip().splitlines()[-1]}")
        return None
    cpu_rps, wall_rps, n = json.loads(out.stdout.strip().splitlines()[-1])
    return cpu_rps, wall_rps, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k records, two passes or more")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--dir", default=None, help="keep the benchmark shards here")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="CPU seconds each reader gets at least (default 1)")
    args = parser.parse_args()
    n = args.records or (20_000 if args.quick else 200_000)
    repeat = 2 if args.quick else 5
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or tmp
        t0 = time.perf_counter()
        paths = write_dataset(directory, n)
        size = sum(os.path.getsize(p) for p in paths)
        print(f"wrote {n} Examples ({size / 2**20:.1f} MiB, {NUM_SHARDS} shards) "
              f"in {time.perf_counter() - t0:.1f} s")
        # one untimed pass each over the same files: numba's cache and TF's graph and thread
        # pools loaded, the page cache warm for both
        ours_pass(paths)
        tf_pass = tf_pass_factory(paths)
        tf_pass()
        # Alternate the two so that a busy machine slows both alike, and keep each one's best
        # pass. CPU time (all threads, all on the one core) is the figure that holds up on a
        # shared machine, where wall time favours whichever process has more runnable threads.
        # A pass of a small dataset lasts a few time slices: pairs go on until both sides have
        # had ``--seconds`` of CPU, so that each best is taken over enough passes.
        best = {"ours": [float("inf")] * 2, "tf": [float("inf")] * 2}
        spent = {"ours": 0.0, "tf": 0.0}
        pairs = 0
        while pairs < repeat or min(spent.values()) < args.seconds:
            for name, fn, fn_args in (("ours", ours_pass, (paths,)), ("tf", tf_pass, ())):
                wall, cpu, got = timed(fn, *fn_args)
                assert got == n, (name, got, n)
                best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
                spent[name] += cpu
            pairs += 1
        print(f"{pairs} timed passes each")
        pkg = bench_tfrecord_pkg(paths, min(n, 20_000))
    encode_us, encode_rows_us = bench_encode()

    ours_wall, ours_cpu = (n / t for t in best["ours"])
    tf_wall, tf_cpu = (n / t for t in best["tf"])
    rows = [("shardforge read+verify+decode_batch", ours_cpu, ours_wall),
            (f"tf.data + parse_example (batch {TF_BATCH})", tf_cpu, tf_wall)]
    if pkg:
        rows.append((f"tfrecord package, no CRC check ({pkg[2]} rec)", pkg[0], pkg[1]))
    print(f"\n{'reader (1 core)':46s} {'rec/CPU-s':>11s} {'vs TF':>6s} {'rec/wall-s':>11s} "
          f"{'vs TF':>6s}")
    for name, cpu, wall in rows:
        print(f"{name:46s} {cpu:11,.0f} {cpu / tf_cpu:5.2f}x {wall:11,.0f} {wall / tf_wall:5.2f}x")
    print(f"\nencode_batch (click-log batch, 1 core) {encode_us:.2f} µs/row; encode_example per "
          f"row {encode_rows_us:.2f} µs/row ({encode_rows_us / encode_us:.0f}x)")
    result = {
        "records": n, "shardforge_rps": round(ours_cpu), "tf_parse_example_rps": round(tf_cpu),
        "tfrecord_pkg_rps": round(pkg[0]) if pkg else None,
        "ratio_vs_tf": round(ours_cpu / tf_cpu, 2),
        "wall_rps": {"shardforge": round(ours_wall), "tf": round(tf_wall)},
        "ratio_vs_tf_wall": round(ours_wall / tf_wall, 2),
        "encode_batch_us_per_row": round(encode_us, 3),
        "encode_example_us_per_row": round(encode_rows_us, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
