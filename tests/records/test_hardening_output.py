"""Nothing outside the output: a forged manifest cannot make a reader open, or a job delete or
write, a file outside the output directory; and a stale lock is taken over by one job only."""

import json
import multiprocessing
import os
import re
import subprocess
import sys
import time

import pytest

from shardforge.records import manifest as mf
from shardforge.records.framing import frame, read_records

RACERS = 100


def _count(shard: str) -> int:
    """These hand-written shards have no index: their records counted by reading them."""
    return sum(1 for _ in read_records(shard))


def _published(root, files):
    """A published output holding ``files`` ({relative path: bytes})."""
    for rel, data in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    mf.write_manifest(root, mf.build_manifest(root, count_records=_count, rows_read=0,
                                              rows_failed=0, command="test"))


def _forge(root, edit):
    """Rewrite ``root``'s manifest.json with ``edit(doc)`` applied."""
    path = os.path.join(root, mf.MANIFEST)
    with open(path) as f:
        doc = json.load(f)
    edit(doc)
    with open(path, "w") as f:
        json.dump(doc, f)


@pytest.mark.parametrize("entry", ["../outside/victim.txt", "{tmp}/outside/victim.txt",
                                   "train/../../outside/victim.txt", ".shardforge/lock"])
def test_readers_refuse_a_manifest_entry_outside_the_output(tmp_path, entry):
    """A forged entry naming a file outside (with its true size and SHA-256) is refused."""
    root = tmp_path / "out"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_bytes(b"victim")
    (root / ".shardforge").mkdir(parents=True)
    (root / ".shardforge" / "lock").write_bytes(b"victim")
    entry = entry.format(tmp=tmp_path)
    _published(str(root), {"schema.pbtxt": b"schema"})
    _forge(str(root), lambda doc: doc["files"].append(
        {"path": entry, "bytes": 6, "sha256": mf.sha256_file(tmp_path / "outside" / "victim.txt"),
         "records": None}))
    with pytest.raises(mf.OutputError, match=re.escape(repr(entry))):
        mf.verify_output(str(root), checksums=True)


def test_readers_refuse_a_listed_file_reached_through_a_symlink(tmp_path):
    root = tmp_path / "out"
    _published(str(root), {"train/part-00000-of-00001.tfrecord": frame(b"record")})
    elsewhere = tmp_path / "elsewhere"
    os.replace(root / "train", elsewhere)
    os.symlink(elsewhere, root / "train")  # the same bytes, but outside the output
    with pytest.raises(mf.OutputError, match="train is a symbolic link"):
        mf.verify_output(str(root))


def test_a_manifest_listing_a_file_twice_is_refused(tmp_path):
    root = tmp_path / "out"
    _published(str(root), {"schema.pbtxt": b"schema"})
    _forge(str(root), lambda doc: doc["files"].append(dict(doc["files"][0])))
    with pytest.raises(mf.OutputError, match="'schema.pbtxt' is listed twice"):
        mf.read_manifest(str(root))


def test_publish_refuses_a_bad_previous_manifest_before_withdrawing_it(tmp_path):
    """An entry naming a directory: the previous output stays published and readable."""
    root = tmp_path / "out"
    _published(str(root), {"schema.pbtxt": b"old",
                           "train/part-00000-of-00001.tfrecord": frame(b"record")})
    _forge(str(root), lambda doc: doc["files"].append(
        {"path": "train", "bytes": 0, "sha256": "", "records": None}))
    before = (root / mf.MANIFEST).read_bytes()
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "schema.pbtxt").write_bytes(b"new")
    new = mf.build_manifest(str(staging), count_records=_count, rows_read=0, rows_failed=0,
                            command="test")
    with pytest.raises(mf.OutputError, match="'train': train is a directory"):
        mf.publish(str(staging), str(root), new)
    assert (root / mf.MANIFEST).read_bytes() == before
    assert (root / "schema.pbtxt").read_bytes() == b"old"
    assert (staging / "schema.pbtxt").read_bytes() == b"new"


# --- the job lock ----------------------------------------------------------------------------


def _race(root, barrier, results):
    read = mf.read_lock

    def slow_read(root):  # a slow disk: what a racer read is older by the time it acts on it
        doc = read(root)
        time.sleep(0.05)
        return doc

    mf.read_lock = slow_read  # this racer process only
    lock = mf.JobLock(root, f"racer {os.getpid()}")
    barrier.wait()
    try:
        lock.acquire()
    except mf.OutputLocked:
        results.put(("locked", os.getpid()))
        return
    except BaseException as err:  # noqa: BLE001 - the test reports what a racer died of
        results.put(("crashed", f"{type(err).__name__}: {err}"))
        return
    results.put(("held", lock.job))  # and keeps holding it: this process exits without release


def test_racing_takeovers_of_a_stale_lock_leave_one_holder(tmp_path):
    root = str(tmp_path / "out")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = mf.JobLock(root, "shardforge run (killed)")
    stale.acquire()
    stale._held = False  # this job was killed: its lock and staging stay behind
    with open(stale.path) as f:
        doc = json.load(f)
    with open(stale.path, "w") as f:
        json.dump(doc | {"pid": dead.pid}, f)

    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(root, barrier, results)) for _ in range(RACERS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r for r in got if r[0] == "crashed"] == []
    holders = [job for what, job in got if what == "held"]
    assert len(holders) == 1, holders
    assert mf.read_lock(root)["job"] == holders[0]
    assert sorted(os.listdir(os.path.join(root, mf.STATE_DIR))) == [
        mf.LOCK, f"staging-{holders[0]}"]
