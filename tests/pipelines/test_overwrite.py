"""--overwrite replaces only what was ours, only after the new job succeeded; one job per output."""

import hashlib
import os
import subprocess
import sys

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import manifest as mf
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY, shard_paths

pytestmark = pytest.mark.xdist_group("pipelines-overwrite")


def snapshot(root):
    """Every file under ``root`` but the job state directory, with its SHA-256."""
    out = {}
    for dp, dns, ns in os.walk(root):
        dns[:] = [d for d in dns if d != mf.STATE_DIR]
        for n in ns:
            p = os.path.join(dp, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("overwrite")
    write_csv(str(d / "a.csv"), 300, seed=4)
    write_csv(str(d / "b.csv"), 500, seed=5)
    # 30 rows whose price is not a number: 6% of the rows fail, over the 1% budget
    with open(d / "a.csv") as f:
        header, *rows = f.read().splitlines()
    bad = [r.replace(r.split(",")[1], '"abc"', 1) for r in rows[:30]]
    (d / "bad.csv").write_text("\n".join([header, *rows[30:], *bad]) + "\n")
    return d


def run(data, name, out, **kw):
    from shardforge.pipelines import run_pipeline

    return run_pipeline(CLICK_FEATURES, str(data / name), str(out), beam_args=IN_MEMORY,
                        **kw)


def test_overwrite_keeps_user_files_and_replaces_only_ours(data, tmp_path):
    out = tmp_path / "out"
    run(data, "a.csv", out, num_shards=3)
    (out / "train" / "my_notes.txt").write_text("mine")
    (out / "README.md").write_text("mine too")
    with pytest.raises(mf.OutputError, match="--overwrite"):
        run(data, "b.csv", out, num_shards=2)
    summary = run(data, "b.csv", out, num_shards=2, overwrite=True)
    assert sorted(summary.kept) == ["README.md", "train/my_notes.txt"]
    assert (out / "train" / "my_notes.txt").read_text() == "mine"
    assert [os.path.basename(p) for p in shard_paths(str(out), "train")] == [
        "part-00000-of-00002.tfrecord", "part-00001-of-00002.tfrecord"]
    m = mf.verify_output(str(out), checksums=True)
    assert m.rows_written == 500 and m.rows_read == 500
    assert "train/my_notes.txt" not in {f.path for f in m.files}


def test_failed_job_leaves_the_previous_output_exactly_as_it_was(data, tmp_path):
    from shardforge.pipelines import TooManyErrors

    out = tmp_path / "out"
    run(data, "a.csv", out, num_shards=2)
    (out / "train" / "my_notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(TooManyErrors, match=r"30 of 300 input rows failed.*failed-errors"):
        run(data, "bad.csv", out, num_shards=3, overwrite=True)
    assert snapshot(out) == before
    mf.verify_output(str(out), checksums=True)
    # the failed job's dead letters are kept for the user, beside the untouched output
    failed = out / mf.STATE_DIR / "failed-errors"
    assert sum(1 for p in failed.glob("*.jsonl") for _ in open(p)) == 30


def test_failed_first_job_leaves_errors_and_no_output(data, tmp_path):
    from shardforge.pipelines import TooManyErrors

    out = tmp_path / "out"
    with pytest.raises(TooManyErrors):
        run(data, "bad.csv", out)
    # the errors for the user, and Beam's log of the failed job in the job-state folder
    assert sorted(os.listdir(out)) == [mf.STATE_DIR, "errors"]
    assert os.listdir(out / mf.STATE_DIR) == ["failed-job.log"]
    with pytest.raises(mf.OutputError, match="no manifest"):
        mf.verify_output(str(out))
    run(data, "a.csv", out)  # a failed job's errors need no --overwrite to be replaced
    mf.verify_output(str(out))


def test_second_job_fails_fast_naming_the_first(data, tmp_path):
    out = tmp_path / "out"
    with mf.JobLock(str(out), "shardforge run --output other"):
        with pytest.raises(mf.OutputLocked, match=rf"pid {os.getpid()} .*--output other"):
            run(data, "a.csv", out)
    run(data, "a.csv", out)  # released: the next job runs


def test_stale_lock_of_a_dead_job_is_taken_over(data, tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = mf.JobLock(str(out), "shardforge run (killed)")
    lock.acquire()
    lock._held = False  # pretend this job was killed: its lock and staging stay behind
    with open(lock.path) as f:
        text = f.read().replace(f'"pid": {os.getpid()}', f'"pid": {dead.pid}')
    with open(lock.path, "w") as f:
        f.write(text)
    summary = run(data, "a.csv", out)
    assert summary.rows_out == 300
    assert not os.path.exists(lock.staging) and not os.path.exists(lock.path)


def test_overwrite_of_an_output_without_manifest_replaces_shardforge_names_only(data, tmp_path):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    for name in ("stats.json", "schema.pbtxt", "train/part-00000-of-00003.tfrecord",
                 "train/part-00000-of-00003.tfrecord.idx", "train/notes.txt", "mine.csv"):
        (out / name).write_text("old")
    with pytest.raises(mf.OutputError, match="no manifest"):
        mf.verify_output(str(out))  # an older shardforge's (or a killed job's) output
    with pytest.raises(mf.OutputError, match="--overwrite"):
        run(data, "a.csv", out)
    summary = run(data, "a.csv", out, num_shards=2, overwrite=True)
    assert sorted(summary.kept) == ["mine.csv", "train/notes.txt"]
    assert not (out / "train" / "part-00000-of-00003.tfrecord").exists()
    assert mf.verify_output(str(out)).rows_written == 300
