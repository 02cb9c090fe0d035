"""The training loop end to end on CPU: learning, exact resume, outputs, the CLI.

Shards are written in-process (feature set fit + transform + ShardedWriter, the same functions the
Beam job runs) so these tests need no Beam.
"""

import json

import numpy as np
import pytest

import shardforge.features as sf
from shardforge.records import ShardedWriter, encode_example
from shardforge.training.config import TrainConfig
from shardforge.training.trainer import train

TINY_LM = {"n_layer": 1, "n_head": 2, "n_kv_head": 1, "d_model": 32}


def _write_split(directory, fs, state, raw, num_shards=2):
    batch, errors = fs.coerce(raw)
    assert not errors
    out = fs.transform(batch, state)
    names = list(out)
    with ShardedWriter(directory, num_shards=num_shards) as writer:
        for i in range(len(out[names[0]])):
            writer.write(encode_example({n: out[n][i] for n in names}))


def make_lm_data(root, n_docs=120, seed=0):
    """Documents with an easy pattern to learn (repeated short words), of varied lengths."""
    rng = np.random.default_rng(seed)
    words = ["def ", "return ", "self", ".x", " = ", "(", ")", ":\n", "    ", "import "]
    docs = ["".join(rng.choice(words, size=rng.integers(3, 60))) for _ in range(n_docs)]
    fs = sf.FeatureSet([sf.text("text", tokenizer="bytes", name="tokens")])
    n_eval = n_docs // 5
    batch, _ = fs.coerce({"text": docs[n_eval:]})
    state = fs.fit([batch])
    state.save(str(root))
    _write_split(root / "train", fs, state, {"text": docs[n_eval:]})
    _write_split(root / "eval", fs, state, {"text": docs[:n_eval]})
    return root


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    return make_lm_data(tmp_path_factory.mktemp("lm_data"))


def lm_config(data, out_dir, **overrides):
    values = dict(task="lm", data=str(data), out_dir=str(out_dir), packing_length=256,
                  model=dict(TINY_LM), max_steps=12, warmup_steps=2, lr=1e-2, min_lr=1e-3,
                  eval_every=6, eval_batches=4, log_every=3, ckpt_every=4, plot=False, seed=0,
                  threads=1)
    values.update(overrides)
    return TrainConfig(**values)


def test_lm_learns_and_writes_its_outputs(lm_data, tmp_path, capsys):
    result = train(lm_config(lm_data, tmp_path / "run", max_steps=30, eval_every=15, plot=True))
    out = capsys.readouterr().out
    assert "memory plan" in out and "packing" in out and "ETA" in out
    assert result.steps == 30
    assert result.last_eval["eval_loss"] < 0.8 * result.first_eval["eval_loss"]
    assert 0.5 < result.packing_efficiency <= 1.0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 15, 30]
    assert all({"loss", "lr", "tok_per_s", "packing_efficiency"} <= set(r) for r in rows
               if "loss" in r)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-000028.pt", "step-000030.pt"]  # keep_checkpoints=2, no temporaries


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_reaches_the_same_losses(lm_data, tmp_path, grad_accum):
    full = train(lm_config(lm_data, tmp_path / "full", grad_accum=grad_accum))
    first = train(lm_config(lm_data, tmp_path / "resumed", grad_accum=grad_accum), stop_at=5)
    assert first.steps == 5
    second = train(lm_config(lm_data, tmp_path / "resumed", grad_accum=grad_accum), resume=True)
    assert second.steps == 12
    # bit-identical on CPU: same batches, same RNG, same optimizer and schedule state
    assert first.losses + second.losses == full.losses
    assert second.last_eval["eval_loss"] == full.last_eval["eval_loss"]


def make_tabular_data(root, n_rows=3000, seed=0):
    """label = 1 mostly when x > 0 and color == 'red': a model must use both features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_rows)
    color = rng.choice(["red", "green", "blue"], size=n_rows)
    p = 1 / (1 + np.exp(-(2.5 * x + 2.0 * (color == "red") - 1.0)))
    label = (rng.random(n_rows) < p).astype(np.int64)
    fs = sf.FeatureSet([sf.numeric("x", normalize="zscore"),
                        sf.embedding(sf.categorical_vocab("color"), dim=4)],
                       label=sf.numeric("label", dtype="int64"))
    raw = {"x": x, "color": color.astype(object), "label": label}
    cut = n_rows // 5
    part = {k: v[cut:] for k, v in raw.items()}
    state = fs.fit([fs.coerce(part)[0]])
    state.save(str(root))
    _write_split(root / "train", fs, state, part)
    _write_split(root / "eval", fs, state, {k: v[:cut] for k, v in raw.items()})
    return root


def test_tabular_model_reaches_auc(tmp_path):
    data = make_tabular_data(tmp_path / "data")
    cfg = TrainConfig(task="tabular", data=str(data), out_dir=str(tmp_path / "run"),
                      batch_size=128, model={"hidden": [16], "n_classes": 2}, max_steps=60,
                      warmup_steps=5, lr=1e-2, min_lr=1e-3, eval_every=60, eval_batches=0,
                      log_every=20, ckpt_every=0, plot=False, threads=1)
    result = train(cfg)
    assert result.last_eval["eval_auc"] > 0.8
    assert result.last_eval["eval_items"] == 600  # the whole eval split, remainder included


def test_cli_train_with_yaml_and_overrides(lm_data, tmp_path):
    from shardforge.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("task: lm\npacking_length: 256\nmodel:\n  n_layer: 1\n  n_head: 2\n"
                   "  n_kv_head: 1\n  d_model: 32\n")
    assert main(["train", "--config", str(cfg), "--data", str(lm_data), "--out",
                 str(tmp_path / "run"), "max_steps=3", "eval_batches=1", "plot=false",
                 "warmup_steps=1"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "step-000003.pt").exists()
    assert main(["train", "--config", str(cfg), "--data", str(lm_data), "--out",
                 str(tmp_path / "run"), "--resume", "max_steps=5", "eval_batches=1",
                 "plot=false", "warmup_steps=1"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "step-000005.pt").exists()
    assert main(["train", "--data", str(lm_data), "no_such_key=1"]) == 2


def test_time_limit_stops_with_eval_and_checkpoint(lm_data, tmp_path):
    result = train(lm_config(lm_data, tmp_path / "run", max_steps=50, time_limit_s=1e-6))
    assert result.steps == 1
    assert result.last_eval and result.checkpoint.name == "step-000001.pt"


def test_cli_train_takes_zero_stage_and_activation_checkpointing(lm_data, tmp_path, capsys):
    import torch.distributed as dist

    from shardforge.cli import main

    args = ["train", "--data", str(lm_data), "--out", str(tmp_path / "run"), "task=lm",
            "packing_length=256", "model.n_layer=1", "model.n_head=2", "model.n_kv_head=1",
            "model.d_model=32", "max_steps=2", "eval_batches=1", "plot=false", "threads=1"]
    had_group = dist.is_initialized()
    try:
        assert main(args + ["zero_stage=3", "activation_checkpointing=true"]) == 0
    finally:
        if dist.is_initialized() and not had_group:  # the one-rank group of a ZeRO run
            dist.destroy_process_group()
    out = capsys.readouterr().out
    assert "ZeRO-3 over 1 GPU" in out and "checkpointed" in out
    assert "memory held by rank 0 of 1 after the first step (ZeRO-3)" in out
    assert main(args + ["zero_stage=4"]) == 2
    assert "zero_stage must be 0, 1, 2 or 3" in capsys.readouterr().err
