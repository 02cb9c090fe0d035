"""Streaming from an object store: ShardDataset from the GCS emulator vs local disk, beside a
peer streaming reader (LitData) on the same emulator and the same tokens, in the same run.

Writes token documents (``input_ids``, variable length) into indexed shards and copies them to
a bucket on gcp-storage-emulator (started here on 127.0.0.1, as the tests do); with
``--peer-python`` (a venv with ``litdata``), converts the same tokens to LitData's chunks and
uploads those too. Then reads one epoch (one process, shuffled) of each and prints:

- tokens/s: ours from local disk, ours from the emulator (read-ahead 4 and 0), the peer from
  the emulator, and the ceiling: a raw fsspec ``cat`` of every shard byte (the emulator is a
  single-threaded ``http.server``: one request at a time, whatever the client does);
- requests and bytes per epoch, counted on the wire by a proxy in front of the emulator (the
  tests' :class:`FaultProxy`, faults off), against the bytes of each reader's dataset: ours
  split into shard and index bytes (an index is read once per epoch by each worker).

    python benchmarks/remote_bench.py [--docs 20000] [--block-size 256] [--repeat 3] \\
        [--peer-python /work/peervenv/bin/python]

The peer's venv (LitData 0.2.76; torch, numpy and google-cloud-storage seen from ours):

    python -m venv /work/peervenv
    /work/peervenv/bin/pip install --no-deps litdata==0.2.76
    /work/peervenv/bin/pip install lightning-utilities filelock tifffile
    echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > /work/peervenv/lib/python3.11/site-packages/zz_ours.pth

without ``obstore``: LitData builds its ``obstore`` GCS store with no endpoint, so with it
installed it asks the real GCS (and fails on anonymous credentials); without it LitData uses
``google-cloud-storage``, which honours ``STORAGE_EMULATOR_HOST``. (Mosaic Streaming 0.13 was
tried first: it imports torchvision, whose PyPI wheel does not load beside the CPU torch.)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Run by the peer's Python: "write TOKENS.npy OFFSETS.npy DIR CHUNK_BYTES" converts the tokens
# to LitData chunks; "read URL CACHE_DIR" reads one shuffled epoch and prints tokens and seconds.
PEER = r"""
import json, sys, time
import numpy as np
if sys.argv[1] == "write":
    from litdata.streaming.writer import BinaryWriter
    tokens, offsets = np.load(sys.argv[2]), np.load(sys.argv[3])
    w = BinaryWriter(sys.argv[4], chunk_bytes=sys.argv[5])
    for i in range(len(offsets) - 1):
        w[i] = {"input_ids": tokens[offsets[i]:offsets[i + 1]]}
    w.done()
    w.merge()
else:
    from litdata import StreamingDataset
    t = time.perf_counter()
    ds = StreamingDataset(sys.argv[2], cache_dir=sys.argv[3], shuffle=True, seed=0)
    n = sum(len(item["input_ids"]) for item in ds)
    print(json.dumps({"tokens": int(n), "seconds": time.perf_counter() - t}))
"""


def start_emulator() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "remote",
                                                          "gcs_emulator.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    req = urllib.request.Request(f"{endpoint}/storage/v1/b?project=bench", method="POST",
                                 data=b'{"name": "bench"}',
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()
    return proc, endpoint


def use_endpoint(endpoint: str) -> None:
    """Point this process's and the peer's clients at ``endpoint``."""
    from shardforge.records import fs

    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "bench")
    fs._FILESYSTEMS.clear()


def make_tokens(docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Every document's tokens, concatenated, and where each starts."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(16, 512, docs)
    offsets = np.zeros(docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return rng.integers(0, 32000, int(offsets[-1])).astype(np.int64), offsets


def write_shards(out: str, tokens: np.ndarray, offsets: np.ndarray, shards: int) -> None:
    from shardforge.records import ShardedWriter, encode_example

    with ShardedWriter(os.path.join(out, "train"), num_shards=shards, index=True) as w:
        for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
            w.write(encode_example({"input_ids": tokens[a:b]}))


def upload(local: str, url: str) -> dict[str, int]:
    """Copy a folder to a bucket; bytes per top folder."""
    from shardforge.records import fs

    sizes: dict[str, int] = {}
    for rel in fs.walk(local):
        data = fs.read_bytes(os.path.join(local, rel))
        fs.write_bytes(fs.join(url, rel), data)
        top = rel.split("/", 1)[0]
        sizes[top] = sizes.get(top, 0) + len(data)
    return sizes


SETUP: list[float] = []  # seconds of each ShardDataset's setup, in the order made


def ours(source: str, block_size: int, read_ahead: int,
         mark: Callable[[], None] = lambda: None) -> tuple[float, int]:
    """Seconds and tokens of one epoch (the dataset's setup included, as a user waits for;
    :data:`SETUP` gets the setup's seconds); ``mark`` is called between the setup and the
    epoch."""
    from shardforge.records.spec import VarLen
    from shardforge.training.dataset import ShardDataset

    t = time.perf_counter()
    ds = ShardDataset(source, batch_size=256, block_size=block_size, shuffle_buffer=4096,
                      spec_or_schema={"input_ids": VarLen(np.int64)}, read_ahead=read_ahead,
                      remainder="keep")
    SETUP.append(time.perf_counter() - t)
    mark()
    tokens = sum(len(b["input_ids"].values) for b in ds)
    return time.perf_counter() - t, tokens


def peer(python: str, url: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([python, "-c", PEER, "read", url, cache], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": ""})
    if out.returncode:
        raise RuntimeError(f"the peer failed reading {url}:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["seconds"], got["tokens"]


def ceiling(url: str, blocks: int) -> tuple[float, float, int]:
    """Seconds to ``cat`` every shard whole, and to read it in ``blocks`` ranges (our requests'
    sizes), one request after another; and the bytes."""
    from shardforge.records import fs

    gcs = fs.filesystem(url)
    files = sorted(gcs.find(url))
    t = time.perf_counter()
    n = sum(len(gcs.cat_file(f)) for f in files)
    whole = time.perf_counter() - t
    t = time.perf_counter()
    for f in files:
        size = gcs.size(f)
        cuts = np.linspace(0, size, blocks // len(files) + 1).astype(int)
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            gcs.cat_file(f, start=a, end=b)
    return whole, time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--peer-python", help="a Python with litdata (its own venv)")
    ap.add_argument("--peer-chunk-bytes", default="4MB", help="LitData's chunk size")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, best kept")
    ap.add_argument("--latency", type=float, default=0.03,
                    help="seconds added per request in the slow-store rows")
    args = ap.parse_args()
    from tests.remote.conftest import FaultProxy

    proc, endpoint = start_emulator()
    proxy = FaultProxy(endpoint, every=0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tokens, offsets = make_tokens(args.docs)
            write_shards(os.path.join(tmp, "ours"), tokens, offsets, args.shards)
            use_endpoint(endpoint)
            sizes = upload(os.path.join(tmp, "ours"), "gs://bench/out")
            shard_bytes, index_bytes = sizes["train"], sizes[".index"]
            url = "gs://bench/out/train"
            peer_url, peer_bytes = "gs://bench/peer", 0
            if args.peer_python:
                np.save(os.path.join(tmp, "t.npy"), tokens)
                np.save(os.path.join(tmp, "o.npy"), offsets)
                subprocess.run([args.peer_python, "-c", PEER, "write", os.path.join(tmp, "t.npy"),
                                os.path.join(tmp, "o.npy"), os.path.join(tmp, "peer"),
                                args.peer_chunk_bytes], check=True,
                               env={**os.environ, "PYTHONPATH": ""}, capture_output=True)
                peer_bytes = sum(upload(os.path.join(tmp, "peer"), peer_url).values())

            local = os.path.join(tmp, "ours", "train")
            ours(local, args.block_size, 4)  # warm up: imports, compiled decoder
            blocks = args.shards * -(-(args.docs // args.shards) // args.block_size)
            # a real bucket answers in tens of ms: the same epochs with that much added per request
            slow = FaultProxy(endpoint, every=0, latency=args.latency)
            ms = f"+{args.latency * 1e3:.0f} ms/request"
            runs: list[tuple[str, str | None, Callable[[], tuple[float, int]]]] = [
                ("ours, local disk", None, lambda: ours(local, args.block_size, 4)),
                ("ours, emulator (read-ahead 4)", endpoint, lambda: ours(url, args.block_size, 4)),
                ("ours, emulator (read-ahead 0)", endpoint, lambda: ours(url, args.block_size, 0)),
                (f"ours, {ms} (read-ahead 4)", slow.endpoint,
                 lambda: ours(url, args.block_size, 4)),
                (f"ours, {ms} (read-ahead 0)", slow.endpoint,
                 lambda: ours(url, args.block_size, 0)),
            ]
            if args.peer_python:
                runs[3:3] = [("LitData, emulator", endpoint,
                              lambda: peer(args.peer_python, peer_url))]
                runs.append((f"LitData, {ms}", slow.endpoint,
                             lambda: peer(args.peer_python, peer_url)))
            best: dict[str, tuple[float, int]] = {}
            setup_s: dict[str, float | None] = {}
            cat_s = ranged_s = float("inf")
            for _ in range(args.repeat):  # interleaved, best of each: the machine is shared
                for name, where, run in runs:
                    if where is not None:
                        use_endpoint(where)
                    SETUP.clear()
                    seconds, n = run()
                    if seconds < best.get(name, (float("inf"), 0))[0]:
                        best[name] = (seconds, n)
                        setup_s[name] = SETUP[0] if SETUP else None
                use_endpoint(endpoint)
                whole, ranged, cat_bytes = ceiling(url, blocks)
                cat_s, ranged_s = min(cat_s, whole), min(ranged_s, ranged)
            slow.close()
            rows = [(name, *best[name]) for name, _, _ in runs]
            total = int(offsets[-1])
            for name, _, n in rows:
                assert n == total, (name, n, total)

            # requests and bytes on the wire: the same epochs again, through the counting proxy
            use_endpoint(proxy.endpoint)
            setup = []
            proxy.requests = proxy.bytes = 0
            ours(url, args.block_size, 4, lambda: setup.append((proxy.requests, proxy.bytes)))
            counted = [("ours", proxy.requests - setup[0][0], proxy.bytes - setup[0][1])]
            if args.peer_python:
                proxy.requests = proxy.bytes = 0
                peer(args.peer_python, peer_url)
                counted.append(("LitData", proxy.requests, proxy.bytes))

        print(f"{args.docs} docs, {total} tokens; ours: {args.shards} shards, "
              f"{shard_bytes / 2**20:.2f} MiB + {index_bytes / 2**20:.2f} MiB of indexes, "
              f"{blocks} blocks of {args.block_size} records"
              + (f"; LitData: {peer_bytes / 2**20:.2f} MiB in {args.peer_chunk_bytes} chunks"
                 if args.peer_python else ""))
        base = rows[1][1]
        for name, seconds, _ in rows:
            took = setup_s[name]
            print(f"{name:36s} {total / seconds / 1e6:7.2f} M tokens/s  "
                  f"({base / seconds:.2f}x ours from the emulator)"
                  + (f"  setup {took:.2f} s, epoch alone {total / (seconds - took) / 1e6:.2f} M"
                     if took is not None else ""))
        rate = total / shard_bytes / 1e6
        print(f"{'ceiling: fsspec cat, whole shards':36s} {rate * cat_bytes / cat_s:7.2f} M "
              f"tokens/s ({cat_bytes / cat_s / 2**20:.1f} MiB/s, one request after another)")
        print(f"{'ceiling: fsspec cat, block ranges':36s} {rate * cat_bytes / ranged_s:7.2f} M "
              f"tokens/s ({blocks} ranges, one after another)")
        print(f"ours     setup:     {setup[0][0]:5d} requests, {setup[0][1] / 2**20:7.2f} MiB "
              "(listing, the manifest check, index headers)")
        for name, requests, nbytes in counted:
            own = shard_bytes + index_bytes if name == "ours" else peer_bytes
            print(f"{name:8s} per epoch: {requests:5d} requests, {nbytes / 2**20:7.2f} MiB = "
                  f"{nbytes / own:.3f}x its dataset's bytes"
                  + (f"; {(nbytes - index_bytes) / shard_bytes:.3f}x the shard bytes with the "
                     f"indexes ({index_bytes / shard_bytes:.3f}x) counted apart"
                     if name == "ours" else ""))
    finally:
        proxy.close()
        proc.kill()


if __name__ == "__main__":
    main()
