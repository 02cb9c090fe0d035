"""A job writing to a bucket commits by its manifest, created last with a precondition."""

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import fs
from shardforge.records import manifest as mf
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY

pytestmark = pytest.mark.xdist_group("remote")


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("commit") / "clicks.csv")
    write_csv(path, 300, seed=4)
    return path


def test_a_job_on_a_bucket_commits_and_a_second_job_is_refused(gcs, csv):
    from shardforge.pipelines import run_pipeline
    from shardforge.training.dataset import ShardDataset

    out = gcs.url("out")
    summary = run_pipeline(CLICK_FEATURES, csv, out, num_shards=2, beam_args=IN_MEMORY,
                           command="shardforge run --test")
    assert summary.manifest == f"{out}/manifest.json"
    m = mf.verify_output(out, checksums=True)
    assert m.rows_written == sum(summary.splits.values())
    assert not [rel for rel in fs.walk(out) if rel.startswith(mf.STATE_DIR)]  # staging gone
    assert sum(len(b["record_id"]) for b in ShardDataset(
        f"{out}/train", batch_size=16, remainder="keep", record_ids=True)) == m.splits[
            "train"]["records"]
    with pytest.raises(mf.OutputError, match="--overwrite"):
        run_pipeline(CLICK_FEATURES, csv, out, num_shards=2, beam_args=IN_MEMORY)
    lock = mf.acquire_remote(out, "shardforge run (the first job)")
    with pytest.raises(mf.OutputLocked, match=lock["job"]):
        run_pipeline(CLICK_FEATURES, csv, out, num_shards=2, beam_args=IN_MEMORY,
                     overwrite=True)
    mf.release_remote(out, lock)
    assert mf.verify_output(out).job == m.job  # the refused jobs changed nothing
