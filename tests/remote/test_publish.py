"""Publishing into a bucket: ``--overwrite`` puts the new output in place before it replaces the
manifest (with a precondition), and deletes only what the old manifest listed; the lock of a
live job beats, a silent one is taken over after its lease.

The outputs are two local job outputs uploaded into a job's staging prefix: the commit is what
is tested here, against both emulators (the Beam job writing a bucket: test_commit.py)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from shardforge.examples.clicklog import write_csv
from shardforge.records import fs
from shardforge.records import manifest as mf
from shardforge.records.index import index_records
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY

pytestmark = [pytest.mark.xdist_group("remote"), pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Two local job outputs of different data: the old and the new."""
    from shardforge.pipelines import run_pipeline

    tmp = tmp_path_factory.mktemp("publish")
    made = {}
    for name, rows, seed in (("old", 300, 4), ("new", 200, 5)):
        write_csv(str(tmp / f"{name}.csv"), rows, seed=seed)
        run_pipeline(CLICK_FEATURES, str(tmp / f"{name}.csv"), str(tmp / name), num_shards=2,
                     beam_args=IN_MEMORY, command="shardforge run --test")
        made[name] = str(tmp / name)
    return made


def stage(local: str, staging: str, job: str) -> mf.Manifest:
    """Upload the local output ``local`` as a job's staging prefix; its manifest."""
    for rel in fs.walk(local):
        if rel != mf.MANIFEST and not rel.startswith(mf.STATE_DIR):
            fs.write_bytes(fs.join(staging, rel), fs.read_bytes(fs.join(local, rel)))
    return mf.build_manifest(staging, count_records=index_records, rows_read=1, rows_failed=0,
                             command="test", job=job)


def publish(out: str, local: str, hook=None) -> mf.Manifest:
    """A job's publish of the local output ``local`` into the bucket prefix ``out``."""
    with mf.RemoteJobLock(out, "shardforge run --test") as lock:
        return lock.publish(stage(local, lock.staging, lock.job), hook=hook).manifest


KILLED = """import os, sys
from tests.remote.test_publish import publish
publish(sys.argv[1], sys.argv[2], hook=lambda at: at == sys.argv[3] and os._exit(9))
"""


def publish_killed(store, out: str, local: str, stage: str) -> None:
    """A job killed (its process gone, nothing cleaned up) after publish step ``stage``."""
    run = subprocess.run([sys.executable, "-c", KILLED, out, local, stage], cwd=ROOT,
                         env={**os.environ, **store.env, "PYTHONPATH": ROOT},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 9, run.stderr[-2000:]


def dataset(out: str):
    from shardforge.training.dataset import ShardDataset

    return ShardDataset(f"{out}/train", batch_size=16, remainder="keep", record_ids=True,
                        shuffle=False)


def stream(batches) -> dict:
    """The dense columns of a batch stream, concatenated."""
    batches = list(batches)
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]
            if isinstance(batches[0][k], (torch.Tensor, np.ndarray))}


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_overwrite_publishes_first_and_a_reader_of_the_old_manifest_streams_its_epoch(
        store, outputs):
    out = store.url("out")
    old = publish(out, outputs["old"])
    fs.write_bytes(fs.join(out, "notes.txt"), b"a user's file")
    want = stream(dataset(out))
    assert len(want["record_id"]) == old.splits["train"]["records"]

    reader = iter(dataset(out))  # opened on the old manifest, streamed across the publish
    got = [next(reader)]
    seen = []

    def hook(stage):
        # one whole output, but while the small files are replaced (the documented window)
        seen.append((stage, stage != "publish_small" and mf.verify_output(out).job))
        got.append(next(reader))
        if stage == "publish_committed":  # the new manifest is in: the old reader finishes
            got.extend(reader)

    new = publish(out, outputs["new"], hook=hook)
    assert [s for s, _ in seen] == ["publish_copied", "publish_small", "publish_committed"]
    assert seen[0][1] == old.job and seen[-1][1] == new.job
    assert_same(stream(got), want)
    # only what the old manifest listed is gone; the new shards carry the new job's tag
    assert mf.verify_output(out, checksums=True).job == new.job
    left = set(fs.walk(out)) - {mf.MANIFEST, "notes.txt"}
    assert left == {f.path for f in new.files}
    assert not {f.path for f in old.shards} & left
    assert len(stream(dataset(out))["record_id"]) == new.splits["train"]["records"]


@pytest.mark.parametrize("stage", ["publish_copied", "publish_committed"])
def test_a_job_killed_at_a_publish_step_leaves_the_old_or_the_new_output(store, outputs,
                                                                          stage):
    out = store.url("out")
    old = publish(out, outputs["old"])
    publish_killed(store, out, outputs["new"], stage)
    m = mf.verify_output(out, checksums=True)
    assert m.job != old.job if stage == "publish_committed" else m.job == old.job
    assert len(stream(dataset(out))["record_id"]) == m.splits["train"]["records"]
    # the next job takes the dead one's lock over, publishes, and leaves only its own files
    new = publish(out, outputs["new"])
    assert set(fs.walk(out)) - {mf.MANIFEST} == {f.path for f in new.files}


def test_a_job_killed_while_it_replaces_the_small_files_is_refused_until_rerun(store, outputs):
    # the documented residual window: the schema and stats are replaced in place just before
    # the manifest
    out = store.url("out")
    publish(out, outputs["old"])
    publish_killed(store, out, outputs["new"], "publish_small")
    with pytest.raises(mf.OutputError, match="does not match its SHA-256"):
        mf.verify_output(out)
    new = publish(out, outputs["new"])
    assert mf.verify_output(out).job == new.job


def test_two_jobs_racing_to_replace_one_manifest_publish_one_output(store, outputs):
    out = store.url("out")
    publish(out, outputs["old"])
    won = []

    def hook(at):  # a second job (a lock taken over too early) commits while the first is
        # between its copies and its commit
        if at == "publish_small" and not won:
            staging = fs.join(out, mf.STATE_DIR, "staging-the-other-job")
            won.append(mf.publish_remote(
                staging, out, stage(outputs["old"], staging, "the-other-job")).manifest)

    with pytest.raises(mf.OutputError, match="replaced by another job"):
        publish(out, outputs["new"], hook=hook)
    m = mf.verify_output(out, checksums=True)
    assert m.job == won[0].job
    assert not [rel for rel in fs.walk(out) if mf.is_shard(rel)
                and rel not in {f.path for f in m.files}]  # the loser's shards are gone


def test_a_live_job_keeps_its_lock_past_the_lease_and_a_silent_one_loses_it(store):
    out = store.url("out")
    with mf.RemoteJobLock(out, "the live job", heartbeat=0.2, lease=1.0) as live:
        time.sleep(2.5)  # past its lease: its beats keep it
        with pytest.raises(mf.OutputLocked, match=live.job):
            mf.RemoteJobLock(out, "a second job").acquire()
    silent = mf.RemoteJobLock(out, "a hung job", heartbeat=2.0, lease=0.5).acquire()
    try:
        time.sleep(1.0)  # silent past its lease
        with mf.RemoteJobLock(out, "the next job") as taker:
            assert mf.read_lock(out)["job"] == taker.job
            time.sleep(1.5)  # the hung job's next beat finds its lock taken
            assert silent.taken_by == taker.job
            with pytest.raises(mf.OutputLocked, match="taken over by"):
                silent.publish(None)
        assert mf.read_lock(out) is None  # the taker released it; the hung job cannot
    finally:
        silent.release()
    assert mf.read_lock(out) is None
