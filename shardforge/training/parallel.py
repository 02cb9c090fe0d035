"""Data parallelism for the recipes: the process group, the device, wrapping the model and
building its optimizer, and full (gathered) state dicts for checkpoints.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is NCCL on GPUs and gloo on CPUs; every
rank starts from the same seed, so from the same weights.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from shardforge.training.config import TrainConfig


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
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


def autocast_for(device: torch.device):
    """bf16 autocast on the GPU (the weights stay fp32); plain fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """AdamW with weight decay on matrices only (not norms, biases); FusedAdamW on the GPU."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    if device.type == "cuda":
        from shardforge.kernels import FusedAdamW

        return FusedAdamW(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def parallelize(model: torch.nn.Module, cfg: TrainConfig, d: Dist, device: torch.device
                ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model to train (DDP-wrapped over several ranks) and its optimizer."""
    optimizer = build_optimizer(model, cfg, device)
    if d.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    return model, optimizer


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's model inside a DDP wrapper."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: torch.nn.Module, sync: bool):
    """Context for one micro-batch's backward: DDP all-reduces only when ``sync`` (the last
    micro-batch of a step), so gradient accumulation costs one all-reduce per step."""
    if sync or not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  grad_clip: float) -> float:
    """Clip the global gradient norm (``grad_clip`` > 0), step, zero the gradients; returns
    the norm before clipping (NaN without clipping)."""
    norm = float("nan")
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip).item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def full_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer
                     ) -> tuple[dict, dict]:
    """The unwrapped model's and the optimizer's whole state (call on every rank)."""
    return unwrap(model).state_dict(), optimizer.state_dict()


def load_full_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                          model_state: dict, optimizer_state: dict) -> None:
    unwrap(model).load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
