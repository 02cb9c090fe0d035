"""The first LM run a user starts (the ``train`` command ``shardforge example stdlib`` prints) is
sized for the machine: steps timed there to fit minutes, on its GPU if it has one, and it runs
as printed."""

import shlex
import subprocess
import sys

import pytest
import torch

from shardforge.examples import cli_example
from shardforge.training.config import TrainConfig

CONFIG = cli_example.EXAMPLES_DIR / "lm.yaml"


@pytest.fixture
def timed(monkeypatch):
    """A step-timing stand-in: 0.25 s a step; records what it was asked to time."""
    import shardforge.training.sizing

    calls = []

    def steps_for_budget(model_cfg, packing_length, budget_s, device, bounds, threads):
        calls.append(dict(model=model_cfg, packing_length=packing_length, device=device,
                          threads=threads))
        return min(max(int(budget_s / 0.25), bounds[0]), bounds[1]), 0.25

    monkeypatch.setattr(shardforge.training.sizing, "lm_steps_for_budget", steps_for_budget)
    return calls


def overrides(arguments: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in arguments if "=" in a)


def test_cpu_run_times_the_configured_model_and_fits_the_budget(timed, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    sizing = cli_example.size_first_lm_run(CONFIG)
    args = overrides(sizing.arguments)
    steps = int(cli_example.FIRST_RUN_BUDGET_S / 0.25)
    assert sizing.arguments[:2] == ["--device", "cpu"] and args["threads"] == "1"
    assert args["max_steps"] == str(steps) and args["packing_length"] == "512"
    assert timed == [dict(model=TrainConfig.load(CONFIG).model, packing_length=512,
                          device="cpu", threads=1)]
    minutes, seconds = divmod(round(steps * 0.25), 60)
    assert "the CPU" in sizing.summary and f"ETA {minutes}:{seconds:02d}" in sizing.summary
    # every key is one the trainer knows, and the run stops by the time limit at the latest
    cfg = TrainConfig.load(CONFIG, [a for a in sizing.arguments if "=" in a])
    assert cfg.max_steps == steps and cfg.time_limit_s >= cli_example.FIRST_RUN_BUDGET_S


def test_gpu_run_says_so_and_takes_more_tokens_a_step(timed, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA Test GPU")
    sizing = cli_example.size_first_lm_run(CONFIG)
    args = overrides(sizing.arguments)
    assert sizing.arguments[:2] == ["--device", "cuda"] and "threads" not in args
    assert int(args["packing_length"]) > TrainConfig.load(CONFIG).packing_length
    assert timed[0]["device"] == "cuda" and "the GPU (NVIDIA Test GPU)" in sizing.summary


@pytest.mark.slow
def test_printed_commands_run_as_printed(tmp_path):
    def sh(command: str) -> str:
        return subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                              timeout=600, check=True).stdout

    printed = sh(shlex.join([sys.executable, "-m", "shardforge", "example", "stdlib", "--out",
                             "ex", "--files", "12"]))
    lines = [line.strip() for line in printed.splitlines()]
    run = next(line for line in lines if " run --features " in line)
    train_at = next(i for i, line in enumerate(lines) if " train --config " in line)
    assert lines[train_at - 1].startswith("# sized for the "), printed
    # in-process Beam for 12 files; a few steps of the printed run (later overrides win)
    sh(f"{run} --direct_running_mode=in_memory --direct_num_workers=1")
    done = sh(f"{lines[train_at]} max_steps=3 eval_batches=1 plot=false")
    assert "done: 3 steps" in done, done
