"""Data parallelism and ZeRO for the recipes: the process group, the device, wrapping the model
and building its optimizer, measuring what each rank holds, and whole (gathered) state dicts.

``zero_stage`` (the knob ``shardforge plan --zero-stage`` takes) picks the mechanism:

=====  =====================================================  ==================================
stage  what each rank holds                                   mechanism
=====  =====================================================  ==================================
0      everything (plain data parallelism)                    ``DistributedDataParallel``
                                                              (``gradient_as_bucket_view=True``)
1      all weights and gradients, 1/N of optimizer states     :class:`ZeroOptimizer` (stage 1)
2      all weights, 1/N of gradients and optimizer states     :class:`ZeroOptimizer` (stage 2)
3      1/N of weights, gradients and optimizer states         FSDP2 ``fully_shard`` per block +
                                                              root, ``reshard_after_forward=True``
=====  =====================================================  ==================================

Why stages 1 and 2 are not ``ZeroRedundancyOptimizer`` and ``fully_shard(reshard_after_forward=
False)``: ``ZeroRedundancyOptimizer`` gives each rank whole tensors, so on a model whose
embedding is a large part of it the ranks' shares are far from 1/N; and FSDP2 without
reshard-after-forward still reshards after backward, so between steps it holds 1/N of the
weights (stage 3's footprint, with stage 2's all-gather-free backward), not DeepSpeed's stage 2.
:class:`ZeroOptimizer` partitions each parameter group's flattened parameters into N equal
slices, as DeepSpeed does: rank r keeps optimizer state for slice r only, reduces the gradients
(an all-reduce for stage 1; a reduce-scatter for stage 2, after which the full gradients are
freed), updates its slice and all-gathers the weights.

Differences from DeepSpeed's definition: gradients are reduced once per optimizer step after
the last micro-batch, not bucket by bucket during backward (so stage 2's full gradients exist
until the end of backward before they are reduce-scattered); the weights are the fp32 master
copy (bf16 autocast computes on the GPU), so there is no separate 16-bit weight copy; FSDP2
stage 3 shards each tensor along dim 0 (padded to a multiple of N) instead of one flat buffer.

Activation checkpointing (``activation_checkpointing: true``) recomputes each of the model's
``repeated_blocks()`` (the :class:`~shardforge.training.models.TrainableModel` protocol; a VLM
lists its encoder's blocks and its LM's) during backward through
``torch.utils.checkpoint.checkpoint(use_reentrant=False)``; ZeRO-3 shards the same blocks one
by one, then the rest of the model as the root unit.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from shardforge.training.config import TrainConfig
from shardforge.training.models import TrainableModel


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str, zero_stage: int = 0) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1). A single process
    with ZeRO gets a one-rank group, so the same wrapping runs (FSDP2 needs a device mesh)."""
    backend = "nccl" if device_type == "cuda" else "gloo"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        if zero_stage and not dist.is_initialized():
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_type_for(cfg: TrainConfig) -> str:
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def pick_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    name = device_type_for(cfg)
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but torch sees no CUDA GPU")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on the GPU (the weights stay fp32); plain fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------
# Optimizer and wrapping
# --------------------------------------------------------------------------------------------


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Weight decay on matrices only (not norms, biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_optimizer(groups: list[dict], cfg: TrainConfig, device: torch.device
                   ) -> torch.optim.Optimizer:
    """AdamW over ``groups``: FusedAdamW on the GPU, ``torch.optim.AdamW`` on the CPU."""
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    if device.type == "cuda":
        from shardforge.kernels import FusedAdamW

        return FusedAdamW(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def blocks_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks, the unit of sharding and recomputation."""
    if not isinstance(model, TrainableModel):
        raise TypeError(f"{type(model).__name__} does not list its blocks: a model to train "
                        "implements shardforge.training.models.TrainableModel "
                        "(repeated_blocks() -> list[nn.Module])")
    return model.repeated_blocks()


def checkpoint_activations(model: torch.nn.Module) -> None:
    """Recompute each block's forward in backward instead of keeping its activations.

    The block's ``forward`` is replaced on the instance (not the module tree), so parameter
    names, state dicts and FSDP2's per-block hooks are unchanged.
    """
    for block in blocks_of(model):
        block.forward = functools.partial(_checkpointed, block.forward)


def _checkpointed(forward, *args, **kwargs):
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def parallelize(model: torch.nn.Module, cfg: TrainConfig, d: Dist, device: torch.device
                ) -> tuple[torch.nn.Module, torch.optim.Optimizer | ZeroOptimizer]:
    """The model to train and its optimizer, for ``cfg.zero_stage`` over ``d.world_size``
    ranks (see the module docstring); ``model`` must already be on ``device``.

    Example (one process, stage 3 on a one-rank group)::

        cfg = TrainConfig(zero_stage=3)
        model, optimizer = parallelize(model, cfg, setup_distributed("cpu", 3), device)
    """
    if cfg.activation_checkpointing:
        checkpoint_activations(model)
    if cfg.zero_stage == 3:
        for block in blocks_of(model):
            fully_shard(block, reshard_after_forward=True)
        fully_shard(model, reshard_after_forward=True)
        return model, make_optimizer(param_groups(model, cfg), cfg, device)
    if cfg.zero_stage in (1, 2):
        return model, ZeroOptimizer(model, param_groups(model, cfg), cfg.zero_stage,
                                    lambda groups: make_optimizer(groups, cfg, device))
    optimizer = make_optimizer(param_groups(model, cfg), cfg, device)
    if d.world_size > 1:
        # gradient_as_bucket_view: the gradients live in DDP's buckets, not in a second copy
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if device.type == "cuda" else None,
            gradient_as_bucket_view=True)
    return model, optimizer


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's model inside a DDP wrapper (FSDP2 and ZeRO-1/2 do not wrap it)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Context for one micro-batch's backward: gradients are reduced over ranks only when
    ``sync`` (the last micro-batch of a step), so accumulation costs one reduction per step.
    (ZeRO-1/2 reduce in :meth:`ZeroOptimizer.step`, once per step anyway.)"""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) and not sync:
        return model.no_sync()
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer | ZeroOptimizer,
                  grad_clip: float) -> float:
    """Reduce the gradients (ZeRO-1/2), clip their global norm (``grad_clip`` > 0) and step;
    returns the norm before clipping (NaN without clipping). Zero the gradients after it."""
    if isinstance(optimizer, ZeroOptimizer):
        return optimizer.step(grad_clip)
    norm = float("nan")
    if grad_clip > 0:
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        norm = (total.full_tensor() if isinstance(total, DTensor) else total).item()
    optimizer.step()
    return norm


# --------------------------------------------------------------------------------------------
# ZeRO stages 1 and 2
# --------------------------------------------------------------------------------------------


class _FlatGroup:
    """One parameter group's parameters re-pointed into one flat buffer, padded to a multiple
    of the world size; ``shard`` is this rank's slice (a view: updating it updates them)."""

    def __init__(self, params: list[torch.nn.Parameter], world: int, rank: int) -> None:
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1:
            raise ValueError(f"ZeRO-1/2: a parameter group mixes dtypes {sorted(map(str, dtypes))}")
        self.params = params
        self.numels = [p.numel() for p in params]
        numel = sum(self.numels)
        self.size = -(-numel // world)  # elements per rank
        self.flat = torch.zeros(self.size * world, dtype=params[0].dtype,
                                device=params[0].device)
        offset = 0
        for p, n in zip(params, self.numels):
            self.flat[offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset:offset + n].view_as(p)
            offset += n
        self.pad = self.flat.numel() - offset
        self.shard = self.flat.narrow(0, rank * self.size, self.size)

    def flat_grad(self) -> torch.Tensor:
        parts = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(n)
                 for p, n in zip(self.params, self.numels)]
        return torch.cat(parts + [self.flat.new_zeros(self.pad)])

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """A whole-group flat tensor as one tensor per parameter, shaped like it (views)."""
        sizes = self.numels + [self.pad]
        return [t.view_as(p) for t, p in zip(torch.split(flat, sizes), self.params)]


class ZeroOptimizer:
    """ZeRO stage 1 or 2 over a replicated (unwrapped) model: each rank keeps the optimizer
    state of 1/N of every parameter group's flattened parameters.

    ``step(grad_clip)`` reduces the gradients (stage 1: all-reduce, the full averaged gradients
    stay on the parameters; stage 2: reduce-scatter, only this rank's slice is kept), clips by
    the global norm, steps the inner optimizer on this rank's slice and all-gathers the weights.
    ``state_dict()`` is the whole optimizer state keyed by parameter name, the format of
    ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict(full_state_dict=True)``,
    so checkpoints move between stages and world sizes.

    Example::

        opt = ZeroOptimizer(model, [{"params": list(model.parameters())}], 2,
                            lambda groups: torch.optim.AdamW(groups))
    """

    def __init__(self, model: torch.nn.Module, groups: list[dict], stage: int, make) -> None:
        if stage not in (1, 2):
            raise ValueError(f"ZeroOptimizer implements stages 1 and 2, not {stage}")
        self.stage = stage
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        names: dict[torch.nn.Parameter, str] = {}
        for name, p in model.named_parameters():
            names.setdefault(p, name)
        groups = [g for g in groups if g["params"]]
        self.flats = [_FlatGroup(list(g["params"]), self.world, self.rank) for g in groups]
        self.names = [[names[p] for p in g.params] for g in self.flats]
        self.optimizer = make([{**g, "params": [f.shard]} for g, f in zip(groups, self.flats)])

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @torch.no_grad()
    def step(self, grad_clip: float = 0.0) -> float:
        """Reduce, clip, update this rank's slice, all-gather; returns the gradient norm."""
        for f in self.flats:
            grad = f.flat_grad().div_(self.world)  # averaged like DDP: divide, then sum
            if self.stage == 2:
                f.shard.grad = grad.new_empty(f.size)
                if self.world > 1:
                    dist.reduce_scatter_tensor(f.shard.grad, grad)
                else:
                    f.shard.grad.copy_(grad)
                for p in f.params:
                    p.grad = None  # only this rank's slice of the gradients is kept
            else:
                if self.world > 1:
                    dist.all_reduce(grad)
                for p, g in zip(f.params, f.split(grad)):
                    p.grad = g
                f.shard.grad = grad.narrow(0, self.rank * f.size, f.size)
        norm = float("nan")
        if grad_clip > 0:
            norm = self._clip(grad_clip)
        self.optimizer.step()
        for f in self.flats:
            if self.world > 1:
                dist.all_gather_into_tensor(f.flat, f.shard.clone())
        return norm

    def _clip(self, max_norm: float) -> float:
        # the slices are disjoint: their squared norms add up to the whole gradient's
        sq = sum(f.shard.grad.double().pow(2).sum() for f in self.flats)
        if self.world > 1:
            dist.all_reduce(sq)
        norm = float(sq.sqrt())
        # torch.nn.utils.clip_grad_norm_'s rule
        coef = min(max_norm / (norm + 1e-6), 1.0)
        for f in self.flats:
            f.shard.grad.mul_(coef)
        return norm

    def zero_grad(self, set_to_none: bool = True) -> None:
        for f in self.flats:
            f.shard.grad = None
            for p in f.params:
                p.grad = None

    def state_dict(self) -> dict:
        """The whole state, keyed by parameter name (gathered: call on every rank)."""
        state: dict[str, dict] = {}
        groups = []
        for f, names, group in zip(self.flats, self.names, self.optimizer.param_groups):
            shard_state = self.optimizer.state.get(f.shard, {})
            for key, value in shard_state.items():
                if key == "step" or value.dim() == 0:
                    for name in names:
                        state.setdefault(name, {})[key] = value.clone()
                    continue
                full = value.new_empty(f.size * self.world)
                if self.world > 1:
                    dist.all_gather_into_tensor(full, value.contiguous())
                else:
                    full.copy_(value)
                for name, t in zip(names, f.split(full)):
                    state.setdefault(name, {})[key] = t.clone()
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(names)})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a whole state (this class's, or a gathered ``get_optimizer_state_dict``'s):
        each rank keeps its slice."""
        saved = state_dict["state"]
        inner_state, inner_groups = {}, []
        for i, (f, names, group) in enumerate(zip(self.flats, self.names,
                                                  state_dict["param_groups"])):
            inner_groups.append({**{k: v for k, v in group.items() if k != "params"},
                                 "params": [i]})
            if not all(name in saved for name in names):
                continue
            first = saved[names[0]]
            entry = {}
            for key, value in first.items():
                if key == "step" or value.dim() == 0:
                    entry[key] = value
                    continue
                flat = torch.cat([saved[n][key].reshape(-1).to(f.flat.device) for n in names]
                                 + [f.flat.new_zeros(f.pad, dtype=value.dtype)])
                entry[key] = flat.narrow(0, self.rank * f.size, f.size).clone()
            inner_state[i] = entry
        self.optimizer.load_state_dict({"state": inner_state, "param_groups": inner_groups})


# --------------------------------------------------------------------------------------------
# State dicts and measurement
# --------------------------------------------------------------------------------------------

_GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)
_WHOLE = StateDictOptions(full_state_dict=True)


def full_state_dicts(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """The model's and the optimizer's whole state keyed by parameter name, the same for every
    stage and world size (call on every rank; only rank 0's copy is complete)."""
    model_state = get_model_state_dict(model, options=_GATHERED)
    if isinstance(optimizer, ZeroOptimizer):
        return model_state, optimizer.state_dict()
    return model_state, get_optimizer_state_dict(model, optimizer, options=_GATHERED)


def load_full_state_dicts(model: torch.nn.Module, optimizer, model_state: dict,
                          optimizer_state: dict) -> None:
    """Load what :func:`full_state_dicts` gave (every rank passes the whole dicts; each keeps
    its shard)."""
    set_model_state_dict(model, model_state, options=_WHOLE)
    if isinstance(optimizer, ZeroOptimizer):
        optimizer.load_state_dict(optimizer_state)
    else:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=_WHOLE)


def held_bytes(model: torch.nn.Module, optimizer) -> dict[str, int]:
    """Bytes this rank holds for weights, gradients and optimizer states: the storage of the
    local tensors (a DTensor's local shard), each storage counted once (views into flat buffers
    or DDP's gradient buckets, tied weights)."""
    seen: set[tuple[int, str]] = set()

    def storage_bytes(tensors) -> int:
        total = 0
        for t in tensors:
            if t is None:
                continue
            t = t.to_local() if isinstance(t, DTensor) else t
            storage = t.untyped_storage()
            key = (storage.data_ptr(), str(t.device))
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        return total

    params = list(model.parameters())
    inner = optimizer.optimizer if isinstance(optimizer, ZeroOptimizer) else optimizer
    opt_params = [p for g in inner.param_groups for p in g["params"]]
    weights = storage_bytes(params)
    grads = storage_bytes([p.grad for p in params] + [p.grad for p in opt_params])
    states = storage_bytes(v for s in inner.state.values() for v in s.values()
                           if isinstance(v, torch.Tensor))
    return {"weights": weights, "gradients": grads, "optimizer states": states,
            "model states": weights + grads + states}
