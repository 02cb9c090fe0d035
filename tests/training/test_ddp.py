"""A real 2-process DDP run on CPU (gloo) under torch.distributed.run."""

import json
import math
import os
import subprocess
import sys
import textwrap

import torch

from shardforge.training.checkpoint import list_checkpoints, load_checkpoint
from tests.training.test_trainer import lm_config, make_lm_data

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from shardforge.training import trainer
    from shardforge.training.recipes import lm
    from shardforge.training.config import TrainConfig

    seen = []
    forward = lm.lm_forward

    def spy(model, batch, device):  # record which documents each rank trains on
        if model.training:
            seen.extend(batch["doc_ids"].tolist())
        return forward(model, batch, device)

    lm.lm_forward = spy
    result = trainer.train(TrainConfig.from_dict(json.loads(sys.argv[1])))
    checksum = sum(float(p.double().sum()) for p in result.model.parameters())
    with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"seen": seen, "losses": result.losses, "checksum": checksum,
                   "eval": result.last_eval}, f)
""")


def test_two_process_gloo_ddp(tmp_path):
    data = make_lm_data(tmp_path / "data", n_docs=200)
    cfg = lm_config(data, tmp_path / "run", max_steps=6, eval_every=6, ckpt_every=3,
                    eval_batches=2).to_dict()
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), json.dumps(cfg), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # both ranks trained every step, and DDP kept their weights identical
    assert all(len(r["losses"]) == 6 and all(map(math.isfinite, r["losses"])) for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert ranks[0]["eval"] == ranks[1]["eval"]  # eval loss all-reduced over ranks
    # disjoint data: no document trained on by both ranks (well inside one epoch)
    assert ranks[0]["seen"] and ranks[1]["seen"]
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])

    # one set of checkpoints (rank 0 writes), holding both ranks' loader positions
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000003.pt",
                                                                       "step-000006.pt"]
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000003.pt", "step-000006.pt"]
    state = load_checkpoint(run / "checkpoints" / "step-000006.pt")
    assert state["world_size"] == 2 and [s["rank"] for s in state["loader"]] == [0, 1]
    assert isinstance(state["model"]["embed.weight"], torch.Tensor)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps))  # written once, by rank 0
    assert proc.stdout.count("memory plan") == 1
