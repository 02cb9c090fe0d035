"""Streaming costs and the reading machinery: an epoch from a bucket reads every shard byte once
with one request per block, read-ahead and the local block cache change nothing that is read,
the cache stays within its bound and refuses a damaged entry."""

import os

import numpy as np
import pytest

from shardforge.records import ShardedWriter, encode_example, fs
from shardforge.records.layout import index_path
from shardforge.records.spec import VarLen
from shardforge.training.dataset import ReadAhead, ShardDataset
from shardforge.training.loader import ShardLoader

pytestmark = pytest.mark.xdist_group("remote")
SHARDS, DOCS, BLOCK = 3, 1500, 64


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of ~400 KB (more than the two 64 KiB ends an index check reads)."""
    out = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(5)
    with ShardedWriter(os.path.join(out, "train"), num_shards=SHARDS, index=True) as w:
        for _ in range(DOCS):
            n = int(rng.integers(20, 300))
            w.write(encode_example({"input_ids": rng.integers(0, 50000, n).astype(np.int64)}))
    return str(out)


def upload(local: str, url: str) -> None:
    for rel in fs.walk(local):
        fs.write_bytes(fs.join(url, rel), fs.read_bytes(os.path.join(local, rel)))


def dataset(source: str, **kw) -> ShardDataset:
    return ShardDataset(source, batch_size=50, seed=3, block_size=BLOCK, shuffle_buffer=200,
                        record_ids=True, spec_or_schema={"input_ids": VarLen(np.int64)}, **kw)


def batches(ds) -> list[dict]:
    return [{"ids": np.asarray(b["record_id"]), "tokens": np.asarray(b["input_ids"].values)}
            for b in ds]


def epoch(ds) -> list[dict]:
    """One epoch of ``ds``, counting (in ``fs.STATS``) only what the epoch reads."""
    fs.STATS.reset()
    return batches(ds)


def same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["ids"], y["ids"])
        np.testing.assert_array_equal(x["tokens"], y["tokens"])


def paths(local: str) -> list[str]:
    return sorted(os.path.join(local, "train", n) for n in os.listdir(os.path.join(local, "train")))


def test_an_epoch_reads_each_byte_once_with_one_request_per_block(shards, store):
    url = store.url("out")
    upload(shards, url)
    shard_bytes = sum(os.path.getsize(p) for p in paths(shards))
    index_bytes = sum(os.path.getsize(index_path(p)) for p in paths(shards))
    blocks = SHARDS * -(-(DOCS // SHARDS) // BLOCK)
    want = batches(dataset(os.path.join(shards, "train"), read_ahead=0))
    same(epoch(dataset(f"{url}/train")), want)
    # the index once, every shard byte once (the ends its check reads answer the blocks there)
    assert fs.STATS.bytes == shard_bytes + index_bytes
    # a request per block (fewer: blocks inside those ends), plus index, head and tail per shard
    assert fs.STATS.requests <= blocks + 3 * SHARDS


@pytest.mark.parametrize("read_ahead", [0, 1, 4])
def test_read_ahead_changes_nothing_read_and_resumes_exactly(shards, gcs, read_ahead):
    url = gcs.url("out")
    upload(shards, url)
    want = batches(dataset(os.path.join(shards, "train"), read_ahead=0))
    same(batches(dataset(f"{url}/train", read_ahead=read_ahead)), want)
    # two worker processes, stopped after 7 batches and resumed from the saved state
    want = batches(ShardLoader(dataset(os.path.join(shards, "train"), read_ahead=0),
                               num_workers=2))
    loader = ShardLoader(dataset(f"{url}/train", read_ahead=read_ahead), num_workers=2)
    it = iter(loader)
    first = [next(it) for _ in range(7)]
    state = loader.state_dict()
    del it
    resumed = ShardLoader(dataset(f"{url}/train", read_ahead=read_ahead), num_workers=2)
    resumed.load_state_dict(state)
    same(batches(first) + batches(resumed), want)


def test_read_ahead_returns_what_is_asked_even_off_plan():
    """The plan is a hint: reads it did not foresee, or foresaw in another order, get their own
    records."""
    def read(shard, start, stop):
        return [(shard, i) for i in range(start, stop)]

    plan = iter([(0, 0, 4), (0, 4, 8), (1, 0, 4), (2, 0, 4)])
    ahead = ReadAhead(read, plan, depth=2, max_records=8)
    try:
        assert ahead.read_block(0, 4, 8) == read(0, 4, 8)  # the second half of a merged request
        assert ahead.read_block(2, 0, 4) == read(2, 0, 4)  # skips a planned read
        assert ahead.read_block(5, 1, 3) == read(5, 1, 3)  # never planned
    finally:
        ahead.close()


def test_cache_serves_later_epochs_and_refetches_a_damaged_entry(shards, gcs, tmp_path):
    url = gcs.url("out")
    upload(shards, url)
    want = batches(dataset(os.path.join(shards, "train"), read_ahead=0))
    cache = tmp_path / "cache"
    index_bytes = sum(os.path.getsize(index_path(p)) for p in paths(shards))
    same(batches(dataset(f"{url}/train", cache_dir=cache)), want)
    same(epoch(dataset(f"{url}/train", cache_dir=cache)), want)
    # from the store only the indexes (read once per epoch), everything else from the cache
    assert (fs.STATS.requests, fs.STATS.bytes) == (SHARDS, index_bytes)
    assert fs.STATS.cache_hits > 0 and fs.STATS.cache_refused == 0

    entry = sorted(cache.iterdir(), key=lambda p: p.stat().st_size)[-1]
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    entry.write_bytes(bytes(raw))
    same(epoch(dataset(f"{url}/train", cache_dir=cache)), want)
    assert fs.STATS.cache_refused == 1
    assert fs.STATS.requests == SHARDS + 1  # the damaged block, read from the store again
    same(epoch(dataset(f"{url}/train", cache_dir=cache)), want)
    assert (fs.STATS.requests, fs.STATS.cache_refused) == (SHARDS, 0)  # and cached again


def test_cache_stays_within_its_bound(shards, gcs, tmp_path):
    url = gcs.url("out")
    upload(shards, url)
    bound = 150_000
    cache = tmp_path / "cache"
    want = batches(dataset(os.path.join(shards, "train"), read_ahead=0))
    same(batches(dataset(f"{url}/train", cache_dir=cache, cache_bytes=bound)), want)
    sizes = [p.stat().st_size for p in cache.iterdir()]
    assert 0 < sum(sizes) <= bound
    assert [p.name for p in cache.iterdir() if not p.name.endswith(fs.BlockCache.SUFFIX)] == []


def test_cache_evicts_the_least_recently_used(tmp_path):
    cache = fs.BlockCache(tmp_path, max_bytes=2 * (100 + 4))
    a, b, c = (bytes([i]) * 100 for i in range(3))
    cache.put(("a",), a)
    cache.put(("b",), b)
    assert cache.get(("a",)) == a  # a used after b: b goes first
    cache.put(("c",), c)
    assert (cache.get(("a",)), cache.get(("b",)), cache.get(("c",))) == (a, None, c)
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 2 * 104
