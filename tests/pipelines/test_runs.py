"""Sorted runs: what the transform step spills and the shard writers merge."""

import numpy as np
import pytest

from shardforge.pipelines import sort as S
from shardforge.records import RecordBlock
from shardforge.records.layout import shard_bounds


@pytest.mark.parametrize("merge_bytes", [500, 1 << 20])
def test_merged_ranges_equal_a_sort_of_everything(tmp_path, monkeypatch, merge_bytes):
    # windows far smaller than a run (and larger), ties within and across runs
    monkeypatch.setattr(S, "MERGE_BYTES", merge_bytes)
    rng = np.random.default_rng(0)
    records, runs = [], []
    for r in range(7):
        spiller = S.RunSpiller(str(tmp_path), run_bytes=1 << 30)
        n = int(rng.integers(1, 3000))
        keys = rng.integers(0, 50 if r % 2 else 2**63, n).astype(np.uint64)
        recs = [bytes(rng.integers(0, 3, int(rng.integers(0, 5))).astype(np.uint8))
                for _ in range(n)]
        records += list(zip(keys.tolist(), recs))
        assert not list(spiller.add("train", keys, RecordBlock.from_records(recs)))
        runs += spiller.flush()
    assert sum(r["records"] for r in runs) == len(records)
    opened = [S.Run(r["path"]) for r in runs]
    n = 3
    merged = []
    for i in range(n):
        lo, hi = shard_bounds(i, n)
        assert lo == -(-(i << 64) // n)
        part = [b for block in S.merge_runs(opened, lo, hi) for b in block]
        expected = sorted((k, b) for k, b in records if k >= lo and (hi is None or k < hi))
        assert part == [b for _, b in expected]
        merged += part
    assert len(merged) == len(records)
    for run in opened:
        run.close()


def test_a_run_spills_when_full_and_sorts_by_key_then_bytes(tmp_path):
    spiller = S.RunSpiller(str(tmp_path), run_bytes=6)
    keys = np.array([5, 1, 5, 1], dtype=np.uint64)
    runs = list(spiller.add("eval", keys, RecordBlock.from_records([b"zz", b"b", b"aa", b"a"])))
    assert [(r["split"], r["records"], r["bytes"]) for r in runs] == [("eval", 4, 6)]
    run = S.Run(runs[0]["path"])
    assert run.keys.tolist() == [1, 1, 5, 5]
    spans = run.spans(0, 4)
    assert [spans.record(i) for i in range(4)] == [b"a", b"b", b"aa", b"zz"]
    run.close()


@pytest.mark.xdist_group("pipelines-runs")
def test_shards_are_byte_identical_across_runners_and_chunking(tmp_path):
    # runs differ (two worker processes and 500-row chunks vs one process and 4096): the
    # shards, merged by (key, bytes), must not
    from shardforge.examples.clicklog import write_csv
    from shardforge.pipelines import run_pipeline
    from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY, MULTI_PROCESS, shard_paths

    csv = str(tmp_path / "clicks.csv")
    write_csv(csv, 5000, seed=11)
    a = run_pipeline(CLICK_FEATURES, csv, str(tmp_path / "a"), num_shards=3, chunk_rows=500,
                     beam_args=MULTI_PROCESS)
    b = run_pipeline(CLICK_FEATURES, csv, str(tmp_path / "b"), num_shards=3, chunk_rows=4096,
                     beam_args=IN_MEMORY)
    for split in ("train", "eval"):
        pa_, pb = shard_paths(a.output, split), shard_paths(b.output, split)
        assert len(pa_) == len(pb) == 3
        for x, y in zip(pa_, pb):
            with open(x, "rb") as fx, open(y, "rb") as fy:
                assert fx.read() == fy.read(), x
    assert not (tmp_path / "a" / ".tmp-runs").exists()
