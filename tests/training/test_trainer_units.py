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
    for name in ("lm", "tabular"):
        cfg = TrainConfig.load(f"shardforge/examples/{name}.yaml")
        assert cfg.task == name


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
