"""Distributed evaluation with eval splits that give the ranks different numbers of batches
(the usual case): at ZeRO-3 every forward all-gathers the weights, so a rank that runs out of
batches first must still run as many forwards as the others, or the run hangs (rank 0 waiting in
the eval's all-reduce, rank 1 in FSDP's all-gather). Two processes on CPU (gloo) under torchrun,
with a timeout so a hang fails the test instead of stalling it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import shardforge.features as sf
from shardforge.training.config import TrainConfig
from tests.training.test_trainer import TINY_LM, _write_split

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def make_data(root: Path, eval_docs: int) -> Path:
    """Byte-token documents of ~120 tokens (one per 128-token packed batch): 40 for training,
    ``eval_docs`` for eval, split over 2 ranks by record (1 eval doc: rank 0 gets none)."""
    rng = np.random.default_rng(0)
    docs = ["".join(rng.choice(list("abcdefgh "), size=120)) for _ in range(40 + eval_docs)]
    fs = sf.FeatureSet([sf.text("text", tokenizer="bytes", name="tokens")])
    state = fs.fit([fs.coerce({"text": docs[eval_docs:]})[0]])
    state.save(str(root))
    _write_split(root / "train", fs, state, {"text": docs[eval_docs:]})
    _write_split(root / "eval", fs, state, {"text": docs[:eval_docs]}, num_shards=eval_docs)
    return root


def eval_config(data: Path, out_dir: Path, **overrides) -> TrainConfig:
    values = dict(task="lm", data=str(data), out_dir=str(out_dir), packing_length=128,
                  model=dict(TINY_LM), max_steps=2, warmup_steps=1, eval_every=1,
                  eval_batches=0, log_every=1, ckpt_every=0, plot=False, threads=1,
                  device="cpu")
    return TrainConfig(**{**values, **overrides})


WORKER = textwrap.dedent("""
    import json, os, sys
    from shardforge.training.trainer import train
    from tests.training.test_eval_ranks import eval_config

    root = sys.argv[1]
    rank = int(os.environ["RANK"])
    out = {}
    for name in ("uneven", "one_doc"):
        result = train(eval_config(f"{root}/{name}", f"{root}/{name}/run", zero_stage=3))
        out[name] = {"first": result.first_eval, "last": result.last_eval}
    with open(f"{root}/rank{rank}.json", "w") as f:
        json.dump(out, f)
""")


def test_unequal_eval_splits_at_zero3_finish_with_the_single_process_loss(tmp_path):
    from shardforge.training.trainer import train

    datasets = {"uneven": make_data(tmp_path / "uneven", eval_docs=3),  # ranks: 1 and 2 batches
                "one_doc": make_data(tmp_path / "one_doc", eval_docs=1)}  # ranks: 0 and 1
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "torchrun.log"  # a file, not a pipe: a hung rank cannot block reading it
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             "2", str(tmp_path / "worker.py"), str(tmp_path)],
            env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # torchrun stops its ranks
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            pytest.fail("the 2-rank ZeRO-3 run hung in evaluation:\n" + log.read_text()[-3000:])
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for name, data in datasets.items():
        # before the first step the weights are the seed's on any world size: the 2-rank eval,
        # padded with forwards that count for nothing, is the single process's eval exactly
        single = train(eval_config(data, tmp_path / f"single_{name}", max_steps=1))
        for rank in ranks:
            assert rank[name]["first"]["eval_items"] == single.first_eval["eval_items"]
            assert rank[name]["first"]["eval_loss"] == pytest.approx(
                single.first_eval["eval_loss"], rel=1e-6)
            assert rank[name]["last"] == ranks[0][name]["last"]  # every rank, the same figures
