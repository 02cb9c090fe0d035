"""The learning-rate schedule: linear warmup, then cosine decay to ``min_lr``.

The schedule is a pure function of the step, so a checkpoint's step is its whole state.

>>> from shardforge.training.config import TrainConfig
>>> cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
>>> lr_at(0, cfg), lr_at(9, cfg), lr_at(110, cfg)
(0.1, 1.0, 0.1)
"""

from __future__ import annotations

import math

import torch

from shardforge.training.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay from ``lr`` to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
