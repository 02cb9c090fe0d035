"""Streaming from an object store: ShardDataset from the GCS emulator vs local disk.

Writes token documents (``input_ids``, variable length) into indexed shards, copies them to a
bucket on gcp-storage-emulator (started here on 127.0.0.1, as the tests do), and reads one
epoch from each: tokens/s, and remote requests and bytes per epoch against the shard bytes
(targets: requests ≈ blocks read, bytes ≤ 1.05× the shards plus opening each shard).

    python benchmarks/remote_bench.py [--docs 20000] [--block-size 256]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


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
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    return proc, endpoint


def write_shards(out: str, docs: int, shards: int) -> None:
    from shardforge.records import ShardedWriter, encode_example

    rng = np.random.default_rng(0)
    with ShardedWriter(os.path.join(out, "train"), num_shards=shards, index=True) as w:
        for _ in range(docs):
            n = int(rng.integers(16, 512))
            w.write(encode_example({"input_ids": rng.integers(0, 32000, n).astype(np.int64)}))


def epoch(source: str, block_size: int) -> tuple[float, int]:
    from shardforge.records.spec import VarLen
    from shardforge.training.dataset import ShardDataset

    ds = ShardDataset(source, batch_size=256, block_size=block_size, shuffle_buffer=4096,
                      spec_or_schema={"input_ids": VarLen(np.int64)})
    t = time.perf_counter()
    tokens = sum(len(b["input_ids"].values) for b in ds)
    return time.perf_counter() - t, tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256)
    args = ap.parse_args()
    from shardforge.records import fs

    proc, _ = start_emulator()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            write_shards(tmp, args.docs, args.shards)
            url = "gs://bench/out"
            shard_bytes = 0
            for rel in fs.walk(tmp):
                data = fs.read_bytes(os.path.join(tmp, rel))
                fs.write_bytes(fs.join(url, rel), data)
                shard_bytes += len(data) if rel.startswith("train/") else 0
            local_s, tokens = epoch(os.path.join(tmp, "train"), args.block_size)
            fs.STATS.requests = fs.STATS.bytes = 0
            remote_s, remote_tokens = epoch(f"{url}/train", args.block_size)
            assert remote_tokens == tokens
            blocks = -(-args.docs // args.block_size)
            print(f"{args.docs} docs, {tokens} tokens, {args.shards} shards, "
                  f"{shard_bytes / 2**20:.1f} MiB")
            print(f"local disk        {tokens / local_s / 1e6:8.2f} M tokens/s")
            print(f"GCS emulator      {tokens / remote_s / 1e6:8.2f} M tokens/s "
                  f"({remote_s / local_s:.1f}x the local time)")
            print(f"requests / epoch  {fs.STATS.requests} (blocks of {args.block_size} records:"
                  f" {blocks}; {fs.STATS.requests - blocks} to open the shards and indexes)")
            print(f"bytes / epoch     {fs.STATS.bytes / shard_bytes:.3f}x the shard bytes")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
