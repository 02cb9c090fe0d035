"""kill -9 at chosen points of a job: readers refuse what it left, a previous output survives,
and killing only the launcher takes its Beam workers down with it."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import manifest as mf
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY, MULTI_PROCESS, REPO
from tests.pipelines.test_overwrite import snapshot

# on the job's PYTHONPATH: its sitecustomize pauses the process that reaches the named stage
PAUSE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pause")

pytestmark = [pytest.mark.xdist_group("pipelines-kill"), pytest.mark.slow]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("kill") / "clicks.csv")
    write_csv(path, 800, seed=6)
    return path


def start(csv, out, stage, marker, *extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, PAUSE]), SHARDFORGE_PAUSE_AT=stage,
               SHARDFORGE_PAUSE_FILE=str(marker))
    cmd = [sys.executable, "-m", "shardforge.cli", "run", "--features", CLICK_FEATURES,
           "--input", csv, "--output", str(out), "--num-shards", "2", "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_paused(proc, marker, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists():
            return json.loads(marker.read_text())
        if proc.poll() is not None:
            pytest.fail(f"the job ended before pausing: {proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    pytest.fail("the job never reached its pause point")


def session_alive(sid):
    """Live (not zombie) processes of the session ``sid``."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(name))
    return pids


def kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.communicate()


def test_kill_before_publish_keeps_the_previous_output(csv, tmp_path):
    out = tmp_path / "out"
    from shardforge.pipelines import run_pipeline

    run_pipeline(CLICK_FEATURES, csv, str(out), num_shards=3, beam_args=IN_MEMORY)
    before = snapshot(out)
    marker = tmp_path / "paused"
    proc = start(csv, out, "staged", marker, "--overwrite", *IN_MEMORY)
    wait_paused(proc, marker)
    kill_group(proc)  # the job finished into staging but never published
    assert snapshot(out) == before
    mf.verify_output(str(out), checksums=True)
    # the next job takes over the dead job's lock and replaces the output
    summary = run_pipeline(CLICK_FEATURES, csv, str(out), num_shards=2, beam_args=IN_MEMORY,
                           overwrite=True)
    assert summary.rows_out == 800 and mf.verify_output(str(out)).rows_written == 800
    assert not (out / mf.STATE_DIR).exists()  # the dead job's lock and staging are gone


def test_kill_during_publish_is_refused_by_readers(csv, tmp_path):
    from shardforge.pipelines import run_pipeline

    out = tmp_path / "out"
    run_pipeline(CLICK_FEATURES, csv, str(out), num_shards=3, beam_args=IN_MEMORY)
    marker = tmp_path / "paused"
    proc = start(csv, out, "publish_moved", marker, "--overwrite", *IN_MEMORY)
    wait_paused(proc, marker)
    kill_group(proc)  # new shards in place, old ones deleted, manifest not yet written
    with pytest.raises(mf.OutputError, match=r"no manifest.json: a job is writing it or was "
                                             r"killed before it published \(pid \d+"):
        mf.verify_output(str(out))
    with pytest.raises(mf.OutputError, match="no manifest.json"):
        mf.check_shards([str(out / "train" / "part-00000-of-00002.tfrecord")])


def test_killing_only_the_launcher_kills_its_workers(csv, tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "paused"
    # worker processes; the pause point is inside a worker
    proc = start(csv, out, "write_stats", marker, *MULTI_PROCESS)
    paused = wait_paused(proc, marker)
    assert paused["pid"] != proc.pid  # a worker, not the launcher
    assert len(session_alive(proc.pid)) >= 2
    os.kill(proc.pid, signal.SIGKILL)  # the launcher alone, as an OOM kill would
    proc.wait()
    deadline = time.monotonic() + 20
    while session_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_alive(proc.pid) == []
    assert not (out / "train").exists()  # nothing published
    with pytest.raises(mf.OutputError, match="no manifest.json"):
        mf.verify_output(str(out))


WORKER = """
import os, sys, time
from shardforge.pipelines import progress
progress.attach()  # what every shardforge DoFn does in setup()
time.sleep(30)
open(sys.argv[1], "w").write("outlived the launcher")
"""


def test_watchdog_kills_a_worker_whose_launcher_died(tmp_path):
    from shardforge.records.manifest import _proc_start

    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    env = dict(os.environ, PYTHONPATH=REPO,
               SHARDFORGE_LAUNCHER=f"{launcher.pid}:{_proc_start(launcher.pid)}")
    flag = tmp_path / "outlived"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(flag)], env=env)
    time.sleep(1.0)  # let the worker import and start its watchdog
    assert worker.poll() is None
    launcher.kill()
    launcher.wait()
    assert worker.wait(timeout=20) == -signal.SIGKILL  # killed by its watchdog, not the sleep
    assert not flag.exists()


def test_second_job_on_a_running_output_fails_fast_naming_it(csv, tmp_path):
    from shardforge.cli import main

    out = tmp_path / "out"
    marker = tmp_path / "paused"
    first = start(csv, out, "staged", marker, *IN_MEMORY)
    paused = wait_paused(first, marker)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "shardforge.cli", "run", "--features", CLICK_FEATURES,
             "--input", csv, "--output", str(out), "--overwrite", "--quiet", *IN_MEMORY],
            env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1
        assert f"being written by another job (pid {paused['pid']}" in proc.stderr
        assert "--num-shards 2" in proc.stderr  # the other job's command
        assert main(["stats", str(out)]) == 2  # nothing published yet: readers refuse
    finally:
        kill_group(first)


def test_sigterm_cleans_up_the_lock_and_staging(csv, tmp_path):
    from shardforge.pipelines import run_pipeline

    out = tmp_path / "out"
    run_pipeline(CLICK_FEATURES, csv, str(out), num_shards=3, beam_args=IN_MEMORY)
    before = snapshot(out)
    marker = tmp_path / "paused"
    proc = start(csv, out, "staged", marker, "--overwrite", *IN_MEMORY)
    wait_paused(proc, marker)
    proc.terminate()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    proc.communicate()
    assert snapshot(out) == before and not (out / mf.STATE_DIR).exists()
    mf.verify_output(str(out))


def test_a_dead_worker_fails_the_job_naming_its_exit_cause(csv, tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "paused"
    proc = start(csv, out, "write_stats", marker, *MULTI_PROCESS)  # worker processes
    paused = wait_paused(proc, marker)
    assert paused["pid"] != proc.pid
    os.kill(paused["pid"], signal.SIGKILL)  # one worker, as an OOM kill would
    try:
        _, err = proc.communicate(timeout=120)  # Beam alone could wait forever
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail("the launcher did not notice its dead worker")
    assert proc.returncode == 1
    assert "a Beam worker process died (killed by SIGKILL)" in err
    deadline = time.monotonic() + 20
    while session_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_alive(proc.pid) == []  # the job's other workers are gone too
    with pytest.raises(mf.OutputError, match="no manifest.json"):
        mf.verify_output(str(out))
