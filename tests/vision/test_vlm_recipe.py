"""The VLM recipe (task=vlm): it learns, and a run stopped and resumed reaches the same losses."""

import numpy as np
import pytest

from shardforge.examples.vision_corpus import write_corpus
from shardforge.examples.vision_features import IMAGE_TOKEN_ID, TEXT_VOCAB_SIZE, feature_set
from shardforge.records import ShardedWriter, encode_example
from shardforge.training.config import TrainConfig
from shardforge.training.trainer import train


def _write(directory, fs, state, raw):
    batch, errors = fs.coerce(raw)
    assert not errors
    out = fs.transform(batch, state)
    with ShardedWriter(directory, num_shards=2) as writer:
        for i in range(len(out["tokens"])):
            writer.write(encode_example({n: out[n][i] for n in out}))


def make_vlm_data(root, samples=90):
    """In-process shards of the demo's feature set (the Beam job's functions, without Beam):
    the first 15 samples are the eval split."""
    import json

    corpus = root / "corpus"
    write_corpus(str(corpus), samples=samples, bad=False, seed=1)
    rows = [json.loads(line) for line in open(corpus / "corpus.jsonl")]
    raw = {"images": [r["images"] for r in rows], "text": [r["text"] for r in rows]}
    fs = feature_set(root=str(corpus))
    batch, _ = fs.coerce(raw)
    state = fs.fit([batch])
    state.save(str(root))
    _write(root / "train", fs, state, {k: v[15:] for k, v in raw.items()})
    _write(root / "eval", fs, state, {k: v[:15] for k, v in raw.items()})
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_vlm_data(tmp_path_factory.mktemp("vlm"))


def vlm_config(data, out_dir, kind="encoder", **overrides):
    model = {"kind": kind, "patch_budget": 256, "image_token_id": IMAGE_TOKEN_ID,
             "lookahead": 64, "lm": {"n_layer": 1, "n_head": 2, "n_kv_head": 1, "d_model": 32},
             "vision": {"patch_dim": 3 * 2 * 14 * 14, "d_model": 32, "n_layer": 1,
                        "n_head": 2}}
    if kind == "fusion":
        model["text_vocab_size"] = TEXT_VOCAB_SIZE
    values = dict(task="vlm", data=str(data), out_dir=str(out_dir), packing_length=256,
                  model=model, max_steps=8, warmup_steps=2, lr=3e-3, min_lr=3e-4,
                  eval_every=4, log_every=4, ckpt_every=3, plot=False, seed=0, threads=1)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("kind", ["encoder", "blind", "fusion"])
def test_each_kind_trains_and_its_eval_loss_drops(data, tmp_path, kind):
    result = train(vlm_config(data, tmp_path / kind, kind))
    assert result.steps == 8 and np.isfinite(result.losses).all()
    assert result.last_eval["eval_loss"] < result.first_eval["eval_loss"]
    assert result.last_eval["eval_items"] > 0


def test_resume_reaches_the_same_losses(data, tmp_path):
    full = train(vlm_config(data, tmp_path / "full"))
    first = train(vlm_config(data, tmp_path / "resumed"), stop_at=5)
    second = train(vlm_config(data, tmp_path / "resumed"), resume=True)
    assert first.steps == 5 and second.steps == 8
    assert first.losses + second.losses == full.losses  # same batches, RNG and optimizer state
    assert second.last_eval["eval_loss"] == full.last_eval["eval_loss"]


def test_unknown_kind_is_one_clear_error(data, tmp_path):
    with pytest.raises(ValueError, match="model.kind"):
        train(vlm_config(data, tmp_path / "x", kind="clip"))
