"""A job a person can watch: counts from worker processes reach the launcher's progress line;
Beam stays quiet unless asked; failures and typos are one short message."""

import io
import json
import os
import subprocess
import sys

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.pipelines import progress
from tests.pipelines.helpers import CLICK_FEATURES, MULTI_PROCESS, REPO

pytestmark = pytest.mark.xdist_group("pipelines-progress")

WORKER = """
import json, os, socket, sys, time
from shardforge.pipelines import progress
progress.add("rows_read", int(sys.argv[1]))
progress.add("files_read")
progress.add("errors", 2)
mine = os.path.join(sys.argv[2], f"{socket.gethostname()}-{os.getpid()}.json")
deadline = time.monotonic() + 60
def flushed():
    try:
        return json.load(open(mine)).get("errors") == 2
    except (OSError, ValueError):
        return False
while not flushed() and time.monotonic() < deadline:
    time.sleep(0.1)  # the flush thread writes twice a second
"""


def test_worker_counts_reach_the_launcher(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, **progress.launcher_env(str(tmp_path)))
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(n), str(tmp_path)], env=env)
               for n in (100, 250)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    assert len(os.listdir(tmp_path)) == 2  # one small file per process
    totals = progress.totals(str(tmp_path))
    assert totals == {"files_read": 2, "rows_read": 350, "records_written": 0, "errors": 4}


class Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_line(tmp_path, tty):
    (tmp_path / "w.json").write_text(json.dumps({"rows_read": 5000, "records_written": 4000,
                                                 "files_read": 3}))
    stream = Stream(tty)
    with progress.ProgressLine(str(tmp_path), stream=stream, interval=0.05) as line:
        line._stop.wait(0.3)
    text = stream.getvalue()
    assert "3 files, 5,000 rows read, 4,000 records written, 0 errors" in text
    if tty:
        assert text.startswith("\r\x1b[K") and text.endswith("\n") and text.count("\n") == 1
    else:
        assert "\r" not in text and text.count("\n") >= 2


WORKER_BROKEN = """
import os
import shardforge.features as sf
launcher = os.environ.get("SHARDFORGE_LAUNCHER", "").split(":")[0]
if launcher and launcher != str(os.getpid()):  # only in the job's worker processes
    raise RuntimeError("cannot load /data/table.csv")
FEATURES = sf.FeatureSet([sf.numeric("price")], label=sf.numeric("label", dtype="int64"))
"""


def run_cli(*args, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "shardforge.cli", "run", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)


def test_unknown_flags_are_an_error_with_did_you_mean(tmp_path):
    proc = run_cli("--features", CLICK_FEATURES, "--input", "x.csv", "--output", "out",
                   "--num-shrds", "2", "--eval-fracton", "0.5", "--direct_num_workers=2",
                   tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "--num-shrds (did you mean --num-shards?)" in proc.stderr
    assert "--eval-fracton (did you mean --eval-fraction?)" in proc.stderr
    assert "direct_num_workers" not in proc.stderr  # Beam knows that one
    assert not (tmp_path / "out").exists()


def test_a_plain_run_is_quiet_and_a_failure_is_short(tmp_path):
    write_csv(str(tmp_path / "clicks.csv"), 500, seed=9)
    proc = run_cli("--features", CLICK_FEATURES, "--input", "clicks.csv", "--output", "out",
                   tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # progress lines only (plain lines: stderr is not a terminal); none of Beam's logging
    noise = [ln for ln in proc.stderr.splitlines() if "rows read" not in ln]
    assert noise == []
    assert "wrote 500 records" in proc.stdout and "manifest: out/manifest.json" in proc.stdout
    # a feature file that raises: one line saying what failed, no traceback
    (tmp_path / "broken.py").write_text("raise RuntimeError('this feature file is broken')\n")
    proc = run_cli("--features", "broken.py", "--input", "clicks.csv", "--output", "out2",
                   tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "this feature file is broken" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 3
    proc = run_cli("--features", "broken.py", "--input", "clicks.csv", "--output", "out2",
                   "--verbose", tmp_path=tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    # the same inside a Beam worker (the launcher loads the file fine): Beam's pages of worker
    # traceback are not shown, the cause is
    (tmp_path / "worker_broken.py").write_text(WORKER_BROKEN)
    proc = run_cli("--features", "worker_broken.py", "--input", "clicks.csv", "--output", "out3",
                   "--quiet", *MULTI_PROCESS, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "the job failed: RuntimeError: cannot load /data/table.csv" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 3
    log = tmp_path / "out3" / ".shardforge" / "failed-job.log"
    assert f"Beam's output is in {log.relative_to(tmp_path)}" in proc.stderr
    assert "Traceback" in log.read_text()  # the workers' own report, kept for the user
    assert not (tmp_path / "out3" / "train").exists()


def test_importing_progress_starts_no_thread():
    # a module that a worker imports must not start a watchdog that may SIGKILL its process:
    # a DoFn starts it in setup() (progress.attach)
    code = ("import threading; import shardforge.pipelines.progress, shardforge.pipelines.stats;"
            " print(threading.active_count())")
    env = dict(os.environ, PYTHONPATH=REPO, SHARDFORGE_LAUNCHER="1:0",
               SHARDFORGE_PROGRESS_DIR="/nonexistent")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "1"
