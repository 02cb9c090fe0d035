"""A tampered output directory: `run --overwrite` never deletes or writes outside the output,
and refuses before it touches anything."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import manifest as mf
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY, MULTI_PROCESS, REPO
from tests.pipelines.test_overwrite import snapshot

pytestmark = pytest.mark.xdist_group("pipelines-hostile-output")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from shardforge.pipelines import run_pipeline

    d = tmp_path_factory.mktemp("hostile")
    csv = str(d / "clicks.csv")
    write_csv(csv, 300, seed=3)
    run_pipeline(CLICK_FEATURES, csv, str(d / "out"), num_shards=2, beam_args=IN_MEMORY)
    return csv, d / "out"


@pytest.fixture
def job(published, tmp_path):
    """The click job's input, and a copy of its published output to tamper with."""
    csv, out = published
    shutil.copytree(out, tmp_path / "out")
    return csv, tmp_path / "out"


def overwrite(csv, out):
    from shardforge.pipelines import run_pipeline

    return run_pipeline(CLICK_FEATURES, csv, str(out), num_shards=3, beam_args=IN_MEMORY,
                        overwrite=True)


def files_under(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def test_manifest_entry_outside_the_output_is_refused_and_the_file_survives(job, tmp_path):
    csv, out = job
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("not yours")
    with open(out / mf.MANIFEST) as f:
        doc = json.load(f)
    doc["files"].append({"path": "../outside/victim.txt", "bytes": 9, "sha256": "0" * 64,
                         "records": None})
    with open(out / mf.MANIFEST, "w") as f:
        json.dump(doc, f)
    before = snapshot(out)
    proc = subprocess.run(
        [sys.executable, "-m", "shardforge.cli", "run", "--features", CLICK_FEATURES, "--input",
         csv, "--output", str(out), "--overwrite", "--quiet", *IN_MEMORY],
        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "'../outside/victim.txt'" in proc.stderr and "refusing" in proc.stderr
    assert victim.read_text() == "not yours"
    assert snapshot(out) == before


@pytest.mark.parametrize("folder", ["train", ".index"])
def test_a_symlinked_output_folder_is_refused_and_what_it_points_to_is_untouched(job, tmp_path,
                                                                                folder):
    csv, out = job
    elsewhere = tmp_path / "elsewhere"
    os.replace(out / folder, elsewhere)
    os.symlink(elsewhere, out / folder)  # the previous shards (or indexes) now lie outside
    there = files_under(elsewhere)
    with pytest.raises(mf.OutputError, match=rf"{folder} is a symbolic link"):
        overwrite(csv, out)
    assert files_under(elsewhere) == there
    assert os.path.islink(out / folder) and os.path.exists(out / mf.MANIFEST)


def test_a_manifest_entry_naming_a_directory_leaves_the_previous_output_in_place(job):
    csv, out = job
    with open(out / mf.MANIFEST) as f:
        doc = json.load(f)
    doc["files"].append({"path": "eval", "bytes": 0, "sha256": "0" * 64, "records": None})
    with open(out / mf.MANIFEST, "w") as f:
        json.dump(doc, f)
    before = snapshot(out)
    with pytest.raises(mf.OutputError, match="'eval': eval is a directory"):
        overwrite(csv, out)
    assert snapshot(out) == before  # the manifest was never withdrawn, no shard deleted
    doc["files"].pop()
    with open(out / mf.MANIFEST, "w") as f:
        json.dump(doc, f)
    mf.verify_output(str(out), checksums=True)  # the user's fix makes it readable again


# on the job's PYTHONPATH: its sitecustomize makes the disk under the output full
DISKFULL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "diskfull")


@pytest.mark.slow
def test_a_full_disk_fails_the_job_with_one_message_and_keeps_the_previous_output(job):
    csv, out = job
    before = snapshot(out)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, DISKFULL]),
               SHARDFORGE_DISKFULL_DIR=str(out), SHARDFORGE_DISKFULL_BYTES="20000")
    proc = subprocess.run(  # the shards are written by worker processes
        [sys.executable, "-m", "shardforge.cli", "run", "--features", CLICK_FEATURES, "--input",
         csv, "--output", str(out), "--overwrite", "--num-shards", "1", "--quiet",
         *MULTI_PROCESS], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert f"no space left on device writing {out}{os.sep}" in proc.stderr
    assert "nothing was published" in proc.stderr
    assert snapshot(out) == before
    mf.verify_output(str(out), checksums=True)
    state = out / mf.STATE_DIR
    assert not (state / mf.LOCK).exists() and not list(state.glob("staging-*"))
