"""Config loading and overrides, atomic checkpoints, the LR schedule: no data needed."""

import pytest
import torch

from shardforge.training import checkpoint as ckpt
from shardforge.training.config import TrainConfig
from shardforge.training.schedule import lr_at


def test_yaml_config_with_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("task: lm\nlr: 0.001\nmodel:\n  n_layer: 4\n  d_model: 64\n")
    cfg = TrainConfig.load(path, ["lr=3e-4", "model.n_layer=2", "model.qk_norm=true",
                                  "max_steps=7"])
    assert cfg.lr == 3e-4 and cfg.max_steps == 7
    assert cfg.model == {"n_layer": 2, "d_model": 64, "qk_norm": True}
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.load(path, ["learning_rate=1"])
    with pytest.raises(ValueError, match="key=value"):
        TrainConfig.load(path, ["lr"])
    with pytest.raises(ValueError, match="task"):
        TrainConfig.load(None, ["task=vision"])


def test_example_configs_load():
    for name in ("lm", "tabular", "vlm"):
        cfg = TrainConfig.load(f"shardforge/examples/{name}.yaml")
        assert cfg.task == name
        assert TrainConfig.load(name) == cfg  # a packaged config by its name


@pytest.mark.parametrize("override, message", [
    ("max_steps=true", "config key max_steps: expected an integer, got True"),
    ("max_steps=2.7", "config key max_steps: expected an integer, got 2.7"),
    ("max_steps=[1, 2]", "config key max_steps: expected an integer, got [1, 2]"),
    ("max_steps=0", "config key max_steps: expected >= 1, got 0"),
    ("lr=-1e-3", "config key lr: expected > 0, got -0.001"),
    ("lr=fast", "config key lr: expected a number, got 'fast'"),
    ("eval_every=0", "config key eval_every: expected >= 1, got 0"),
    ("activation_checkpointing=1", "config key activation_checkpointing: expected true or "
                                   "false, got 1"),
    ("device=[cpu]", "config key device: expected a string, got ['cpu']"),
    ("model.n_layer=-3", "n_layer must be >= 1, not -3"),
    ("model.n_layer=true", "config key model.n_layer: expected an integer, got True"),
    ("model.qk_norm=2", "config key model.qk_norm: expected true or false, got 2"),
])
def test_config_values_are_checked_when_loaded(override, message):
    with pytest.raises(ValueError) as err:
        TrainConfig.load(None, [override])
    assert str(err.value) == message  # one line, naming the key


def test_whole_numbers_and_yaml_exponents_are_accepted():
    cfg = TrainConfig.load(None, ["max_steps=1e3", "lr=3e-4", "warmup_steps=10.0"])
    assert (cfg.max_steps, cfg.lr, cfg.warmup_steps) == (1000, 3e-4, 10)
    assert type(cfg.max_steps) is int


def test_each_task_checks_its_own_model_settings():
    vlm = ["task=vlm", "model.kind=encoder", "model.lm.n_layer=2", "model.vision.d_model=64"]
    assert TrainConfig.load(None, vlm).settings().kind == "encoder"
    with pytest.raises(ValueError, match="unknown model.lm key 'n_layr'; did you mean "
                                         "'n_layer'"):
        TrainConfig.load(None, vlm + ["model.lm.n_layr=2"])
    with pytest.raises(ValueError, match="model.kind must be one of encoder, blind, fusion"):
        TrainConfig.load(None, ["task=vlm", "model.kind=clip"])
    with pytest.raises(ValueError, match="unknown model key 'kind'"):
        TrainConfig.load(None, ["task=tabular", "model.kind=encoder"])
    with pytest.raises(ValueError, match="config key model.hidden: expected a list"):
        TrainConfig.load(None, ["task=tabular", "model.hidden=8"])


def test_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    lrs = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_checkpoints_are_atomic_and_pruned(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, {"step": step, "w": torch.ones(2) * step}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002.pt",
                                                                "step-000003.pt"]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["step"] == 3

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 4, {"step": 4})
    # the failed write left neither a temporary file nor a half checkpoint behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002.pt", "step-000003.pt"]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["step"] == 3


def test_rng_state_roundtrip():
    import random

    import numpy as np

    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
