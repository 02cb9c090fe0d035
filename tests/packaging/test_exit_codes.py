"""One exit-code rule for every command, run as a user runs them (a subprocess in an empty
directory): 2 and one line naming the thing for the user's mistake (a missing or invalid file,
input, column or argument), 130 and the state left behind for Ctrl-C, and no library logging
unless ``--verbose``."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.packaging.test_cli import ENV, one_line_error, shardforge

CSV = "price,age,country,item_id,query,lat,lon,label\n"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The click-log example's files, written by `shardforge example` (no job run)."""
    root = tmp_path_factory.mktemp("example")
    proc = shardforge("example", "clicklog", "--out", str(root), "--rows", "300", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.mark.parametrize("argv,names", [
    (["inspect", "nowhere"], "nowhere: no such file or directory"),
    (["index", "nowhere"], "no shards match 'nowhere'"),
    (["stats", "nowhere"], "nowhere/stats.json not found"),
    (["plan", "--params", "1e9", "--zero-stage", "3", "--gpus", "0"], "gpus"),
    (["train", "--config", "nope"], "config 'nope' is neither a file nor a packaged config"),
    (["example", "nope"], "invalid choice: 'nope'"),
    (["demo", "--steps", "nope"], "unknown steps ['nope']"),
    (["run", "--features", "nope.py", "--input", "{ex}/clicks.csv", "--output", "out"],
     "nope.py: No such file or directory"),
    (["run", "--features", "{ex}/click_features.py", "--input", "none*.csv", "--output", "out"],
     "no input files match 'none*.csv'"),
    (["run", "--features", "{ex}/click_features.py", "--input", "bad.csv", "--output", "out"],
     "bad.csv has no column 'label'"),
    (["run", "--features", "{ex}/click_features.py", "--input", "x.csv", "--output", "out",
      "--num-shrds", "2"], "--num-shrds (did you mean --num-shards?)"),
])
def test_a_users_mistake_exits_2_with_one_line_naming_it(tmp_path, example, argv, names):
    (tmp_path / "bad.csv").write_text(CSV.replace(",label", "") + "1,2,us,3,q,1,2\n")
    proc = shardforge(*[a.format(ex=example) for a in argv], cwd=tmp_path)
    if argv[0] == "example":  # argparse's own usage error: the usage, then the one error line
        assert proc.returncode == 2 and names in proc.stderr.splitlines()[-1]
        return
    line = one_line_error(proc)
    assert line.startswith(f"shardforge {argv[0]}: error: ") and names in line
    assert not (tmp_path / "out").exists()


def test_run_over_a_published_output_without_overwrite_exits_2(tmp_path, example):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text("{}")
    line = one_line_error(shardforge("run", "--features", str(example / "click_features.py"),
                                     "--input", str(example / "clicks.csv"), "--output", "out",
                                     cwd=tmp_path))
    assert "out" in line


@pytest.fixture(scope="module")
def job(example) -> tuple[subprocess.CompletedProcess, Path]:
    """A small `shardforge run --quiet` over the example's data, and its output directory."""
    out = example / "data"
    proc = shardforge("run", "--features", str(example / "click_features.py"), "--input",
                      str(example / "clicks.csv"), "--output", str(out), "--quiet",
                      cwd=example)
    return proc, out


def test_a_small_run_prints_no_library_logging(job):
    proc, _ = job
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: no progress line, and none of Beam's, gRPC's, absl's
    assert "wrote 300 records" in proc.stdout


def test_run_pipeline_is_quiet_by_default(tmp_path, example):
    code = ("from shardforge.pipelines import run_pipeline; "
            f"s = run_pipeline({str(example / 'click_features.py')!r}, "
            f"{str(example / 'clicks.csv')!r}, 'out'); print(s.rows_out)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["300"] and proc.stderr == ""  # none of Beam's logging


def interrupt(argv: list[str], cwd: Path, ready) -> subprocess.CompletedProcess:
    """Start ``shardforge ARGV``, wait until ``ready()``, then Ctrl-C it (the terminal signals
    the whole process group)."""
    proc = subprocess.Popen([sys.executable, "-m", "shardforge", *argv], cwd=cwd, env=ENV,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_ctrl_c_during_train_names_the_checkpoint_to_resume_from(tmp_path, job):
    _, data = job
    checkpoints = tmp_path / "run" / "checkpoints"
    proc = interrupt(["train", "--config", "tabular", "--data", str(data), "--out", "run",
                      "--device", "cpu", "batch_size=16", "max_steps=1000000", "ckpt_every=5",
                      "eval_every=5", "plot=false"],
                     tmp_path, lambda: any(checkpoints.glob("step-*.pt")))
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("shardforge train: interrupted: the newest checkpoint is run/"), line
    assert line.endswith("continue from it with --resume")


def test_ctrl_c_during_run_says_nothing_was_published(tmp_path, example):
    lock = tmp_path / "out" / ".shardforge"  # the job has taken the output's lock
    proc = interrupt(["run", "--features", str(example / "click_features.py"), "--input",
                      str(example / "clicks.csv"), "--output", "out"], tmp_path, lock.exists)
    assert proc.returncode == 130, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "rows read" not in ln]  # progress lines
    assert lines == ["shardforge run: interrupted: out holds no output; nothing was published"]
    assert not (tmp_path / "out" / "manifest.json").exists()
