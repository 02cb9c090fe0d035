"""Readers take a URL: an output copied to a bucket (as `gsutil cp -r` / `aws s3 sync` would)
is verified, inspected and trained from, streaming, with the same batches as the local copy."""

import os
import subprocess
import sys

import numpy as np
import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import fs
from shardforge.records import manifest as mf
from shardforge.records.index import FINGERPRINT_SPAN
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY

pytestmark = pytest.mark.xdist_group("remote")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from shardforge.pipelines import run_pipeline

    d = tmp_path_factory.mktemp("remote")
    csv = str(d / "clicks.csv")
    write_csv(csv, 600, seed=3)
    out = str(d / "out")
    run_pipeline(CLICK_FEATURES, csv, out, num_shards=2, beam_args=IN_MEMORY,
                 command="shardforge run --test")
    return out


def upload(local: str, url: str) -> None:
    for rel in fs.walk(local):
        fs.write_bytes(fs.join(url, rel), fs.read_bytes(os.path.join(local, rel)))


def dataset(source):
    from shardforge.training.dataset import ShardDataset

    return ShardDataset(source, batch_size=64, seed=7, shuffle_buffer=128, block_size=16,
                        record_ids=True)


def batches(source):
    ds = source if not isinstance(source, str) else dataset(source)
    return [{k: np.asarray(v) for k, v in b.items() if isinstance(v, np.ndarray)} for b in ds]


def same(a, b):
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def cli(store, *args):
    env = {**os.environ, **store.env, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "shardforge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_bucket_copy_verifies_and_streams_the_same_batches(job, store):
    from shardforge.features.state import load_schema

    url = store.url("out")
    upload(job, url)
    m = mf.verify_output(url, checksums=True)
    assert m.splits == mf.verify_output(job).splits
    assert load_schema(url).spec == load_schema(job).spec
    remote = dataset(f"{url}/train")
    fs.STATS.requests = fs.STATS.bytes = 0
    same(batches(remote), batches(os.path.join(job, "train")))
    # an epoch reads each record once, one request per block of 16 records, plus what opening a
    # shard costs (its index, and the ends of the shard the index is bound to)
    train = [f for f in m.files if f.path.startswith(("train/", ".index/train/"))]
    shards = sum(f.records is not None for f in train)
    opening = sum(f.bytes for f in train if f.records is None) + shards * 2 * FINGERPRINT_SPAN
    assert fs.STATS.bytes <= m.splits["train"]["bytes"] + opening
    assert fs.STATS.requests <= -(-m.splits["train"]["records"] // 16) + shards * 4


def test_a_bucket_output_missing_its_manifest_is_refused(job, store):
    url = store.url("out")
    upload(job, url)
    fs.delete(fs.join(url, mf.MANIFEST))
    with pytest.raises(mf.OutputError, match="no manifest.json: no job published it"):
        batches(f"{url}/train")


def test_a_shard_the_manifest_does_not_list_is_not_read(job, store):
    # in a bucket a split folder holds the next job's shards while it publishes: a reader of
    # the folder reads what the manifest lists (a local output refuses a stray shard), and a
    # stray shard named by its path is refused
    url = store.url("out")
    upload(job, url)
    stray = fs.join(url, "train", "part-00000-of-00009.tfrecord")
    fs.write_bytes(stray, b"not a shard")
    same(batches(f"{url}/train"), batches(f"{job}/train"))
    with pytest.raises(mf.OutputError, match="not listed in"):
        batches(dataset([stray]))


def test_streaming_under_faults_yields_the_identical_batches(job, store, faulty):
    url = store.url("out")
    upload(job, url)
    want = batches(f"{url}/train")
    with faulty() as proxy:
        got = batches(f"{url}/train")
    same(got, want)
    assert proxy.faults > 0


def test_cli_stats_inspect_train_from_a_bucket(job, store, tmp_path):
    url = store.url("out")
    upload(job, url)
    stats = cli(store, "stats", url)
    assert stats.returncode == 0, stats.stderr
    assert "train" in stats.stdout
    inspect = cli(store, "inspect", f"{url}/train", "--limit", "1")
    assert inspect.returncode == 0, inspect.stderr
    assert "Example 0" in inspect.stdout
    train = cli(store, "train", "--config", "tabular", "--data", url, "--out",
                str(tmp_path / "run"), "batch_size=32", "max_steps=2", "warmup_steps=1",
                "eval_every=2", "eval_batches=1", "log_every=1", "ckpt_every=0", "plot=false",
                "threads=1", "device=cpu", f"cache_dir={tmp_path / 'blocks'}")
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert "done: 2 steps" in train.stdout
    # the config's cache_dir reached the loader: the blocks read from the bucket are kept
    assert any(p.is_file() for p in (tmp_path / "blocks").rglob("*"))
