"""Training in a hostile environment (issue #25): a corrupted checkpoint is never resumed from
(resume falls back to the previous intact one and says so), a resume never silently changes the
math, and a rank never outlives the launcher that started it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shardforge.training import checkpoint as ckpt
from shardforge.training.config import TrainConfig
from tests.training.test_trainer import lm_config, make_lm_data

pytestmark = pytest.mark.xdist_group("hostile_training")  # one lm_data for the module

ROOT = str(Path(__file__).resolve().parents[2])
RESUMABLE = dict(max_steps=12, log_every=1, eval_every=4, ckpt_every=4, eval_batches=1)


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    return make_lm_data(tmp_path_factory.mktemp("lm_data"), n_docs=60)


@pytest.fixture(scope="module")
def uninterrupted(lm_data, tmp_path_factory):
    from shardforge.training.trainer import train

    return train(lm_config(lm_data, tmp_path_factory.mktemp("full") / "run", **RESUMABLE))


def flip_bytes(path: Path, n: int = 64) -> None:
    """What the adversary did: ``n`` bytes in the middle of the file inverted."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + n] = bytes(b ^ 0xFF for b in data[middle:middle + n])
    path.write_bytes(bytes(data))


def stopped_run(lm_data, run: Path) -> Path:
    """A run stopped after step 8: checkpoints of steps 4 and 8."""
    from shardforge.training.trainer import train

    train(lm_config(lm_data, run, **RESUMABLE), stop_at=8)
    checkpoints = run / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(checkpoints)] == ["step-000004.pt",
                                                                    "step-000008.pt"]
    return checkpoints


def test_a_corrupt_latest_checkpoint_is_refused_and_resume_falls_back(lm_data, uninterrupted,
                                                                      tmp_path, capsys):
    from shardforge.training.trainer import train

    checkpoints = stopped_run(lm_data, tmp_path / "run")
    flip_bytes(checkpoints / "step-000008.pt")
    capsys.readouterr()
    resumed = train(lm_config(lm_data, tmp_path / "run", **RESUMABLE), resume=True)
    out = capsys.readouterr().out
    assert "step-000008.pt is corrupt (checksum mismatch in its record" in out
    assert "; resuming from step-000004.pt" in out
    assert resumed.steps == 12
    # bit-identical on CPU to the run that was never interrupted, from step 4 on
    assert resumed.losses == uninterrupted.losses[4:]


def test_every_checkpoint_corrupt_is_an_error_naming_them(lm_data, tmp_path):
    from shardforge.training.trainer import train

    checkpoints = stopped_run(lm_data, tmp_path / "run")
    flip_bytes(checkpoints / "step-000008.pt")
    (checkpoints / "step-000004.pt").write_bytes(
        (checkpoints / "step-000004.pt").read_bytes()[:1000])  # a torn copy
    with pytest.raises(ckpt.CorruptCheckpoint,
                       match=r"no intact checkpoint in .*step-000008.pt is corrupt \(checksum "
                       r"mismatch.*step-000004.pt: not a readable checkpoint"):
        train(lm_config(lm_data, tmp_path / "run", **RESUMABLE), resume=True)


def test_no_flipped_byte_loads_other_data(tmp_path):
    """Wherever one byte of a checkpoint flips, loading it either fails as corrupt or returns
    exactly what was saved (a flip in bytes nothing reads: padding, timestamps)."""
    state = {"step": 3, "w": torch.randn(64, 32), "b": torch.arange(50),
             "config": {"lr": 0.01, "name": "run"}, "rng": [{"python": (3, (1, 2), None)}]}
    good = ckpt.save_checkpoint(tmp_path / "good", 3, state)
    data = good.read_bytes()
    bad = tmp_path / "step-000003.pt"
    rng = random.Random(0)
    loaded_equal = 0
    for position in rng.sample(range(len(data)), 300):
        flipped = bytearray(data)
        flipped[position] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(flipped))
        try:
            got = ckpt.load_checkpoint(bad)
        except ckpt.CorruptCheckpoint:
            continue
        loaded_equal += 1
        assert got.keys() == state.keys() and got["config"] == state["config"], position
        assert got["rng"] == state["rng"] and got["step"] == 3, position
        assert torch.equal(got["w"], state["w"]) and torch.equal(got["b"], state["b"]), position
    assert loaded_equal < 300  # most flips hit the records, and every one of those is refused


def test_a_config_that_changes_the_math_is_refused_naming_what_changed(lm_data, tmp_path, capsys):
    from shardforge.training.trainer import train

    run = tmp_path / "run"
    stopped_run(lm_data, run)
    changed = lm_config(lm_data, run, **{**RESUMABLE, "lr": 0.02, "seed": 1})
    changed.model["n_layer"] = 2
    with pytest.raises(ckpt.CheckpointError, match=r"step-000008.pt was saved with another "
                       r"config: lr 0.01 -> 0.02, model.n_layer 1 -> 2, seed 0 -> 1\. These"):
        train(changed, resume=True)
    # where it writes, how often it reports and how long it runs: allowed, and said
    capsys.readouterr()
    resumed = train(lm_config(lm_data, run, **{**RESUMABLE, "max_steps": 10, "eval_every": 5}),
                    resume=True)
    assert resumed.steps == 10
    assert "at step 8 with eval_every 4 -> 5, max_steps 12 -> 10" in capsys.readouterr().out


def test_grad_accum_may_change_with_the_world_size_but_not_the_step_it_makes(tmp_path):
    saved = TrainConfig(grad_accum=1)
    state = {"config": saved.to_dict(), "world_size": 2}
    assert ckpt.check_resume_config(state, TrainConfig(grad_accum=2), 1, "ck") == []
    with pytest.raises(ckpt.CheckpointError, match=r"grad_accum x ranks 2 -> 4"):
        ckpt.check_resume_config(state, TrainConfig(grad_accum=2), 2, "ck")
    # a field the checkpoint predates counts as its default; the model's keys as given
    del state["config"]["eval_split"]
    assert ckpt.check_resume_config(state, TrainConfig(grad_accum=2), 1, "ck") == []
    with pytest.raises(ckpt.CheckpointError, match=r"model.d_model '\(default\)' -> 64"):
        ckpt.check_resume_config(state, TrainConfig(grad_accum=2, model={"d_model": 64}), 1,
                                 "ck")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_rank_dies_with_its_launcher(lm_data, tmp_path):
    """kill -9 of torchrun's process group: the rank, in a session of its own, exits too."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
         "-m", "shardforge.cli", "train", "--config", "lm", "--data", str(lm_data), "--out",
         str(run), "max_steps=100000", "log_every=1", "eval_every=100000", "eval_batches=1",
         "ckpt_every=0",
         "packing_length=256", "model.n_layer=1", "model.d_model=32", "model.n_head=2",
         "model.n_kv_head=1", "plot=false", "threads=1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and launcher.poll() is None:
            if (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text():
                break  # the rank is training
            time.sleep(0.2)
        assert launcher.poll() is None, "torchrun ended before its rank trained a step"
        ranks = _children(launcher.pid)
        assert len(ranks) == 1 and os.getsid(ranks[0]) != os.getsid(launcher.pid)
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 60  # a bound on a hang, not a timing: it takes < 1 s
        while _alive(ranks[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(ranks[0]), "the rank outlived its launcher"
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        for pid in ranks:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
