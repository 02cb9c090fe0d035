"""A job writing to a bucket commits by its manifest, created last with a precondition."""

import os
import signal
import subprocess
import sys
import time

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import fs
from shardforge.records import manifest as mf
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY

pytestmark = [pytest.mark.xdist_group("remote"), pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    with mf.RemoteJobLock(out, "shardforge run (the first job)") as lock, pytest.raises(
            mf.OutputLocked, match=lock.job):
        run_pipeline(CLICK_FEATURES, csv, out, num_shards=2, beam_args=IN_MEMORY,
                     overwrite=True)
    assert mf.verify_output(out).job == m.job  # the refused jobs changed nothing


def run_cli(store, *args, **kw):
    env = {**os.environ, **store.env, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "shardforge.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def test_the_documented_commands_run_then_train_from_a_bucket(gcs, csv, tmp_path):
    # docs/object_storage.md: `shardforge run ... --output gs://B/out` then
    # `shardforge train --data gs://B/out`
    out = gcs.url("out")
    run = run_cli(gcs, "run", "--features", CLICK_FEATURES, "--input", csv, "--output", out,
                  "--num-shards", "2", *IN_MEMORY)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert f"{out}/manifest.json" in stdout
    train = run_cli(gcs, "train", "--config", "tabular", "--data", out, "--out",
                    str(tmp_path / "run"), "batch_size=32", "max_steps=2", "warmup_steps=1",
                    "eval_every=2", "eval_batches=1", "log_every=1", "ckpt_every=0",
                    "plot=false", "threads=1", "device=cpu")
    stdout, stderr = train.communicate(timeout=300)
    assert train.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "done: 2 steps" in stdout


def test_kill_9_of_a_job_writing_a_bucket_leaves_no_readable_output(gcs, csv):
    out = gcs.url("out")
    job = run_cli(gcs, "run", "--features", CLICK_FEATURES, "--input", csv, "--output", out,
                  "--num-shards", "2", *IN_MEMORY)
    deadline = time.monotonic() + 120
    while not fs.exists(fs.join(out, mf.STATE_DIR, mf.LOCK)):
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.2)
    time.sleep(3)  # into the Beam job
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    with pytest.raises(mf.OutputError, match="no manifest.json: a job is writing it or was "
                                             "killed before it published"):
        mf.verify_output(out)
    # the dead job's lock (same host, its pid gone) is taken over by the next job
    from shardforge.pipelines import run_pipeline

    run_pipeline(CLICK_FEATURES, csv, out, num_shards=2, beam_args=IN_MEMORY)
    mf.verify_output(out)

