"""`shardforge train` through the CLI, for every task and VLM kind, written the way README.md
and docs/ write the commands (tiny sizes): the config, the model settings and the schema are
checked by the task's recipe, so a documented command is never rejected by a stale list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shardforge.examples.vision_features import IMAGE_TOKEN_ID, TEXT_VOCAB_SIZE
from tests.training.test_trainer import make_lm_data, make_tabular_data
from tests.vision.test_vlm_recipe import make_vlm_data

ROOT = Path(__file__).resolve().parents[2]
TINY = ["max_steps=2", "warmup_steps=1", "eval_every=2", "eval_batches=1", "log_every=1",
        "ckpt_every=0", "plot=false", "threads=1", "device=cpu"]
# README.md: `shardforge train --data out/ --out runs/vlm task=vlm ... model.kind=encoder ...`
VLM = ["task=vlm", "packing_length=256", "model.patch_budget=256",
       f"model.image_token_id={IMAGE_TOKEN_ID}", "model.lookahead=64", "model.lm.d_model=32",
       "model.lm.n_layer=1", "model.lm.n_head=2", "model.lm.n_kv_head=1",
       "model.vision.patch_dim=1176", "model.vision.d_model=32", "model.vision.n_layer=1",
       "model.vision.n_head=2"]
CASES = {
    "lm": ("lm", ["--config", "lm", "packing_length=256", "model.n_layer=1",
                  "model.d_model=32", "model.n_head=2", "model.n_kv_head=1"]),
    "tabular": ("tabular", ["--config", "tabular", "batch_size=64", "model.hidden=[8]"]),
    "vlm-encoder": ("vlm", VLM + ["model.kind=encoder"]),
    "vlm-blind": ("vlm", VLM + ["model.kind=blind"]),
    "vlm-fusion": ("vlm", VLM + ["model.kind=fusion", f"model.text_vocab_size={TEXT_VOCAB_SIZE}"]),
    "vlm-packaged": ("vlm", ["--config", "vlm", "packing_length=256", "model.patch_budget=256",
                             "model.lookahead=64"]),
}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {"lm": make_lm_data(root / "lm", n_docs=40),
            "tabular": make_tabular_data(root / "tabular", n_rows=400),
            "vlm": make_vlm_data(root / "vlm", samples=40)}


def shardforge(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "shardforge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", sorted(CASES))
def test_documented_train_command_runs(datasets, tmp_path, case):
    task, args = CASES[case]
    proc = shardforge("train", "--data", str(datasets[task]), "--out", str(tmp_path / "run"),
                      *args, *TINY)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "done: 2 steps" in proc.stdout
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


def test_a_kind_that_does_not_exist_is_one_line(datasets, tmp_path):
    proc = shardforge("train", "--data", str(datasets["vlm"]), "--out", str(tmp_path / "run"),
                      *VLM, "model.kind=encodr", *TINY)
    assert proc.returncode == 2
    assert "model.kind must be one of encoder, blind, fusion, not 'encodr'; did you mean " \
        "'encoder'?" in proc.stderr
    assert "Traceback" not in proc.stderr
