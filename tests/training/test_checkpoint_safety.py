"""Checkpoints never execute code, killed saves leave nothing behind, metrics.jsonl never
repeats a step after a resume; and the reporting fixes (ETA within the time limit, the run's
average throughput, a warning for a missing logger)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from shardforge.training import checkpoint as ckpt
from shardforge.training.progress import Meter
from tests.training.test_trainer import lm_config, make_lm_data

pytestmark = pytest.mark.xdist_group("checkpoint_safety")  # one lm_data for the module


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    return make_lm_data(tmp_path_factory.mktemp("lm_data"), n_docs=60)


class Planted:
    """What an attacker pickles: unpickling it calls os.system."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_checkpoint_is_refused_and_runs_nothing(lm_data, tmp_path):
    from shardforge.training.trainer import train

    run = tmp_path / "run"
    train(lm_config(lm_data, run, max_steps=2, eval_batches=1))
    marker = tmp_path / "pwned"
    planted = run / "checkpoints" / "step-999999.pt"
    torch.save({"step": 999999, "model": Planted(marker)}, planted)
    assert ckpt.latest_checkpoint(run / "checkpoints") == planted
    refused = "step-999999.pt: refused to load: it asks to run posix.system"
    with pytest.raises(ckpt.CheckpointError, match=refused):
        train(lm_config(lm_data, run, max_steps=4, eval_batches=1), resume=True)
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_data(lm_data, tmp_path):
    from shardforge.training.trainer import train

    result = train(lm_config(lm_data, tmp_path / "run", max_steps=2, eval_batches=1))
    state = ckpt.load_checkpoint(result.checkpoint)  # weights_only=True
    assert state["step"] == 2 and isinstance(state["rng"][0]["numpy"]["state"]["key"], list)
    ckpt.set_rng_state(state["rng"][0])
    with pytest.raises(ckpt.CheckpointError, match="not a readable checkpoint"):
        bad = tmp_path / "step-000003.pt"
        bad.write_bytes(b"not a zip")
        ckpt.load_checkpoint(bad)


KILLED_SAVE = textwrap.dedent("""
    import os, sys, time
    import torch
    from shardforge.training import checkpoint as ckpt

    directory, ready = sys.argv[1], sys.argv[2]
    ckpt.save_checkpoint(directory, 1, {"step": 1, "w": torch.ones(4)})

    def stall(fd):  # the second save's bytes are written: now die before the rename
        open(ready, "w").close()
        time.sleep(60)

    os.fsync = stall
    ckpt.save_checkpoint(directory, 2, {"step": 2, "w": torch.ones(1 << 16)})
""")


def test_a_killed_save_leaves_the_last_checkpoint_and_its_temporary_is_removed(lm_data,
                                                                               tmp_path):
    directory, ready = tmp_path / "run" / "checkpoints", tmp_path / "ready"
    script = tmp_path / "save.py"
    script.write_text(KILLED_SAVE)
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, str(script), str(directory), str(ready)],
                            env={**os.environ, "PYTHONPATH": root})
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the saving process never reached fsync"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = sorted(p.name for p in directory.iterdir())
    assert leftovers[0].startswith(".tmp-") and leftovers[1:] == ["step-000001.pt"]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(directory))["step"] == 1
    # the next save (or a resume) removes it
    ckpt.save_checkpoint(directory, 3, {"step": 3})
    assert sorted(p.name for p in directory.iterdir()) == ["step-000001.pt", "step-000003.pt"]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_continue_from_the_checkpoint_without_repeating_rows(lm_data, tmp_path):
    from shardforge.training.trainer import train

    cfg = dict(max_steps=12, log_every=1, eval_every=4, ckpt_every=4, eval_batches=1)
    full = train(lm_config(lm_data, tmp_path / "full", **cfg))
    run = tmp_path / "run"
    train(lm_config(lm_data, run, **cfg), stop_at=7)
    # killed after step 7's rows were written but before its checkpoint: the newest is 4
    (run / "checkpoints" / "step-000007.pt").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "loss": 1.')  # and a torn last line
    resumed = train(lm_config(lm_data, run, **cfg), resume=True)
    assert resumed.steps == 12
    rows, expected = _rows(run / "metrics.jsonl"), _rows(full.metrics)
    assert [(r["step"], sorted(r)) for r in rows] == [(r["step"], sorted(r)) for r in expected]
    assert [r.get("loss") for r in rows] == [r.get("loss") for r in expected]


def test_eta_honours_the_time_limit_and_throughput_is_the_run_average():
    meter = Meter(max_steps=1000, time_limit_s=30.0)
    meter.add_step(loss=1.0, items=1000, seconds=1.0)
    meter.add_step(loss=1.0, items=1000, seconds=3.0)
    # 998 steps at ~2 s would take half an hour; the limit ends the run in 30 - 4 s
    assert meter.eta(done=2, elapsed_s=4.0) == pytest.approx(26.0)
    window = meter.window()
    assert window["rate"] == pytest.approx(500.0)
    meter.add_step(loss=1.0, items=1000, seconds=0.5)
    assert meter.window()["rate"] == pytest.approx(2000.0)  # the last window
    assert meter.average_rate == pytest.approx(3000 / 4.5)  # the run's average


def test_time_limited_run_reports_eta_within_the_limit(lm_data, tmp_path, capsys):
    from shardforge.training.trainer import train

    train(lm_config(lm_data, tmp_path / "run", max_steps=100000, time_limit_s=1.0,
                    log_every=1, eval_batches=1))
    etas = [line.split("ETA ")[1] for line in capsys.readouterr().out.splitlines()
            if "ETA " in line]
    minutes_seconds = [tuple(map(int, eta.split(":"))) for eta in etas]
    assert etas and all(m == 0 and s <= 1 for m, s in minutes_seconds)


def test_missing_tensorboard_warns(lm_data, tmp_path, monkeypatch, capsys):
    from shardforge.training.trainer import train

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.warns(UserWarning, match="tensorboard package is not installed"):
        train(lm_config(lm_data, tmp_path / "run", max_steps=1, eval_batches=1,
                        tensorboard=True))
    assert "warning: tensorboard=true" in capsys.readouterr().out
