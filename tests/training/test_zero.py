"""ZeRO stages 0-3 in 2 processes on CPU (gloo), against a single-process run of the same global
batches: losses, the bytes each rank holds against the memory plan, sharded-checkpoint resume
(on 2 ranks, and from 2 ranks onto 1). Plus activation checkpointing in one process.

Both runs read one fixed list of real packed batches: rank r of W takes batches
``i·W + r``; the single process takes them all in order with ``grad_accum=W``, so each of its
steps averages the gradients of the same W micro-batches a distributed step does.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from shardforge.training.config import TrainConfig
from tests.training.test_trainer import TINY_LM, make_lm_data

STEPS = 20
ROOT = Path(__file__).resolve().parents[2]
# one 2-process launch serves every test here: keep them on one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("zero")]


class ListLoader:
    """A resumable loader over a fixed list of batches, split over ranks like the real one:
    its state is the global number of batches consumed, so it resumes on any world size. Like
    a loader of one output, its dataset has one source."""

    def __init__(self, batches: list, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size
        self.next = 0
        self.dataset = SimpleNamespace(source_names=["data"])

    def __iter__(self):
        while self.next + self.world_size <= len(self.batches):
            batch = self.batches[self.next + self.rank]
            self.next += self.world_size
            yield batch

    def state_dict(self) -> dict:
        return {"next": self.next}

    def load_state_dict(self, state) -> None:
        self.next = (state if isinstance(state, dict) else state[0])["next"]


def use_batches(path, rank: int, world_size: int) -> None:
    """Make the LM recipe train on the saved batches (eval stays on the real eval split)."""
    from shardforge.training.recipes import lm

    batches = torch.load(path, weights_only=False)
    real = lm.make_loader

    def make_loader(cfg, split, *, train, only=None):
        if train:
            return ListLoader(batches, rank, world_size)
        return real(cfg, split, train=train, only=only)

    lm.make_loader = make_loader


def zero_config(data, out_dir, **overrides) -> TrainConfig:
    values = dict(task="lm", data=str(data), out_dir=str(out_dir), packing_length=128,
                  model={**TINY_LM, "n_layer": 2}, max_steps=STEPS, warmup_steps=2, lr=1e-2,
                  min_lr=1e-3, eval_every=STEPS, eval_batches=0, log_every=5, ckpt_every=0,
                  plot=False, seed=0, threads=1, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    from shardforge.training.trainer import train
    from tests.training.test_zero import fused_adamw_on_fsdp2_shards, use_batches, zero_config

    data, batches, root = sys.argv[1:4]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    use_batches(batches, rank, world)
    out = {}
    for stage in (0, 1, 2, 3):
        full = train(zero_config(data, f"{root}/s{stage}/full", zero_stage=stage))
        cfg = zero_config(data, f"{root}/s{stage}/part", zero_stage=stage)
        first = train(cfg, stop_at=10)
        second = train(cfg, resume=True)
        out[stage] = {"losses": full.losses, "memory": full.memory,
                      "resumed": first.losses + second.losses}
    out["fused_adamw_on_shards"] = fused_adamw_on_fsdp2_shards()
    with open(f"{root}/rank{rank}.json", "w") as f:
        json.dump(out, f)
""")


def fused_adamw_on_fsdp2_shards() -> dict:
    """In a 2-rank group: FusedAdamW on a bf16 model sharded by FSDP2 (each rank's DTensor
    holds half of each weight) against FusedAdamW on an unsharded copy fed the same batches;
    then its gathered state loaded into a fresh sharded model continues identically."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from shardforge.kernels import FusedAdamW
    from shardforge.training.parallel import full_state_dicts, load_full_state_dicts

    def sharded(module):
        module = copy.deepcopy(module)
        for layer in (module[0], module[2]):
            fully_shard(layer)
        fully_shard(module)
        return module, FusedAdamW(module.parameters(), lr=1e-2, weight_decay=0.1,
                                  backend="reference")

    def step(pairs, seed):
        x = torch.randn(4, 16, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)
        for m, o in pairs:
            m(x).float().pow(2).mean().backward()
            o.step()
            o.zero_grad()

    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    ref = ref.to(torch.bfloat16)
    model, opt = sharded(ref)
    ref_opt = FusedAdamW(ref.parameters(), lr=1e-2, weight_decay=0.1, backend="reference")
    for seed in range(5):
        step([(model, opt), (ref, ref_opt)], seed)
    # a resume: rank 0's gathered state, read by every rank, into a fresh sharded model
    whole = list(full_state_dicts(model, opt))
    dist.broadcast_object_list(whole, src=0)
    fresh, fresh_opt = sharded(ref)
    load_full_state_dicts(fresh, fresh_opt, *whole)
    step([(model, opt), (ref, ref_opt), (fresh, fresh_opt)], 5)
    pairs = list(zip(model.parameters(), ref.parameters(), fresh.parameters()))
    return {
        "world": dist.get_world_size(),
        "shard_rows": model[0].weight.to_local().shape[0],
        "same_weights": all(torch.equal(p.full_tensor(), q.detach()) for p, q, _ in pairs),
        "same_masters": all(torch.equal(opt.state[p]["master_param"].full_tensor(),
                                        ref_opt.state[q]["master_param"]) for p, q, _ in pairs),
        "states_are_dtensors": all(isinstance(s["exp_avg"], DTensor)
                                   for s in opt.state.values()),
        "resumed_like_uninterrupted": all(torch.equal(p.full_tensor(), f.full_tensor())
                                          for p, _, f in pairs),
    }


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory):
    """One torchrun launch (2 ranks) runs every stage: full, stopped at 10 and resumed."""
    from shardforge.training import packed_loader

    root = tmp_path_factory.mktemp("zero")
    data = make_lm_data(root / "data", n_docs=200)
    loader = packed_loader(str(data / "train"), packing_length=128, seed=0, world_size=1,
                           rank=0)
    batches = []
    while len(batches) < 2 * STEPS:
        batches += list(loader)
    torch.save(batches[:2 * STEPS], root / "batches.pt")
    (root / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(root / "worker.py"), str(data), str(root / "batches.pt"), str(root)],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    return root, data, ranks, proc.stdout


@pytest.fixture(scope="module")
def single_process(zero_runs):
    """The same 20 steps in this process: every global batch, grad_accum=2."""
    from shardforge.training.recipes import lm
    from shardforge.training.trainer import train

    root, data, _, _ = zero_runs
    real = lm.make_loader
    use_batches(root / "batches.pt", 0, 1)
    try:
        return train(zero_config(data, root / "single", grad_accum=2))
    finally:
        lm.make_loader = real


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_two_ranks_match_one_process(zero_runs, single_process, stage):
    _, _, ranks, _ = zero_runs
    # a rank's loss is its micro-batch's; their mean is the single process's step loss
    mean = [(a + b) / 2 for a, b in zip(ranks[0][str(stage)]["losses"],
                                        ranks[1][str(stage)]["losses"])]
    assert len(mean) == STEPS
    torch.testing.assert_close(torch.tensor(mean), torch.tensor(single_process.losses),
                               rtol=1e-5, atol=1e-6)
    assert single_process.losses[-1] < 0.8 * single_process.losses[0]  # it learned


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_measured_bytes_per_rank_match_the_plan(zero_runs, stage):
    _, _, ranks, stdout = zero_runs
    for rank in ranks:
        memory = rank[str(stage)]["memory"]
        planned, measured = memory["planned"], memory["measured"]
        assert measured["model states"] == pytest.approx(planned["model states"], rel=0.05)
        for part in ("weights", "gradients", "optimizer states"):
            assert measured[part] == pytest.approx(planned[part], rel=0.05), part
    assert f"(ZeRO-{stage}): planned vs measured" in stdout
    assert "memory held by rank 1 of 2" in stdout


def test_stages_divide_the_model_states(zero_runs):
    _, _, ranks, _ = zero_runs
    held = [ranks[0][str(s)]["memory"]["measured"] for s in range(4)]
    weights, grads, states = ([h[k] for h in held]
                              for k in ("weights", "gradients", "optimizer states"))
    assert states[1] == pytest.approx(states[0] / 2, rel=0.05)  # stage 1: states halved
    assert grads[1] == pytest.approx(grads[0], rel=0.05)
    assert grads[2] == pytest.approx(grads[0] / 2, rel=0.05)  # stage 2: gradients too
    assert weights[2] == pytest.approx(weights[0], rel=0.05)
    assert weights[3] == pytest.approx(weights[0] / 2, rel=0.05)  # stage 3: weights too


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_resume_from_a_sharded_checkpoint_reproduces_the_run(zero_runs, stage):
    _, _, ranks, _ = zero_runs
    for rank in ranks:
        torch.testing.assert_close(torch.tensor(rank[str(stage)]["resumed"]),
                                   torch.tensor(rank[str(stage)]["losses"]),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("saved_stage, resumed_stage", [(3, 0), (1, 2), (2, 3)])
def test_a_two_rank_checkpoint_resumes_on_one_process_at_another_stage(
        zero_runs, single_process, tmp_path, saved_stage, resumed_stage):
    """A run stopped at step 10 on 2 ranks, resumed here on 1 process (grad_accum=2) at
    another stage: steps 11-20 are the single-process run's."""
    import shutil

    import torch.distributed as dist

    from shardforge.training.checkpoint import list_checkpoints, load_checkpoint
    from shardforge.training.recipes import lm
    from shardforge.training.trainer import train

    root, data, _, _ = zero_runs
    part = tmp_path / "part"
    shutil.copytree(root / f"s{saved_stage}" / "part", part)
    for later in list_checkpoints(part / "checkpoints"):
        if later.name != "step-000010.pt":
            later.unlink()
    state = load_checkpoint(part / "checkpoints" / "step-000010.pt")
    assert state["world_size"] == 2
    # whole tensors keyed by parameter name, whatever the stage that wrote them
    assert state["model"]["embed.weight"].shape[0] == single_process.model.cfg.vocab_size
    assert state["optimizer"]["state"]["embed.weight"]["exp_avg"].shape == \
        state["model"]["embed.weight"].shape
    real, had_group = lm.make_loader, dist.is_initialized()
    use_batches(root / "batches.pt", 0, 1)
    try:
        resumed = train(zero_config(data, part, grad_accum=2, zero_stage=resumed_stage),
                        resume=True)
    finally:
        lm.make_loader = real
        if dist.is_initialized() and not had_group:
            dist.destroy_process_group()
    torch.testing.assert_close(torch.tensor(resumed.losses),
                               torch.tensor(single_process.losses[10:]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_one_process_stages_with_gradient_accumulation(zero_runs, single_process, stage):
    """World size 1 still runs the stage's wrapping (a one-rank group); accumulating 2
    micro-batches per step (FSDP2: no reduction until the last) gives the reference losses."""
    import torch.distributed as dist

    from shardforge.training.recipes import lm
    from shardforge.training.trainer import train

    root, data, _, _ = zero_runs
    real, had_group = lm.make_loader, dist.is_initialized()
    use_batches(root / "batches.pt", 0, 1)
    try:
        result = train(zero_config(data, root / f"one{stage}", grad_accum=2, zero_stage=stage))
    finally:
        lm.make_loader = real
        if dist.is_initialized() and not had_group:  # the one-rank group train() created
            dist.destroy_process_group()
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(single_process.losses),
                               rtol=1e-5, atol=1e-6)
    planned, measured = result.memory["planned"], result.memory["measured"]
    assert measured["model states"] == pytest.approx(planned["model states"], rel=0.05)


def test_fused_adamw_updates_fsdp2_shards_like_the_whole_model(zero_runs):
    _, _, ranks, _ = zero_runs
    for rank in ranks:
        result = rank["fused_adamw_on_shards"]
        assert result["world"] == 2 and result["shard_rows"] == 16  # half of a [32, 16] weight
        assert result["same_weights"] and result["same_masters"]
        assert result["states_are_dtensors"] and result["resumed_like_uninterrupted"]


def test_activation_checkpointing_recomputes_blocks_with_the_same_losses(tmp_path):
    from shardforge.training.models.lm import LMConfig, PackedLM
    from shardforge.training.parallel import checkpoint_activations
    from shardforge.training.trainer import train

    ids = torch.randint(0, 64, (256,), generator=torch.Generator().manual_seed(0))
    pos = torch.cat([torch.arange(128), torch.arange(128)])
    cu = torch.tensor([0, 128, 256], dtype=torch.int32)

    def saved_bytes(model):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(ids, pos, cu, 128, targets=ids)
        out.loss.backward()
        return total

    torch.manual_seed(0)
    plain = PackedLM(LMConfig(vocab_size=64, n_layer=4, n_head=2, n_kv_head=1, d_model=32))
    torch.manual_seed(0)
    recomputed = PackedLM(LMConfig(vocab_size=64, n_layer=4, n_head=2, n_kv_head=1,
                                   d_model=32))
    checkpoint_activations(recomputed)
    assert saved_bytes(recomputed) < 0.5 * saved_bytes(plain)
    for a, b in zip(plain.parameters(), recomputed.parameters()):
        torch.testing.assert_close(a.grad, b.grad)

    data = make_lm_data(tmp_path / "data")
    runs = [train(zero_config(data, tmp_path / f"ac{flag}", max_steps=6, eval_batches=1,
                              activation_checkpointing=flag)) for flag in (False, True)]
    assert runs[0].losses == runs[1].losses
