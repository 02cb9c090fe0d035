"""The tabular recipe: columnar batches -> ``TabularModel`` (FeatureLayer + MLP) -> AdamW.

    shardforge train --config shardforge/examples/tabular.yaml --data out/ max_steps=300
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.distributed as dist

from shardforge.training.config import TrainConfig, coerce_fields, did_you_mean
from shardforge.training.models.tabular import TabularConfig, TabularModel, roc_auc
from shardforge.training.parallel import clip_and_step, gradient_sync, parallelize, unwrap
from shardforge.training.run import (
    Batches,
    Run,
    TrainResult,
    eval_batches,
    load_schema,
    reduce_sum,
)
from shardforge.training.schedule import lr_at, set_lr

Settings = TabularConfig  # what cfg.model sets


def check_schema(cfg: TrainConfig, schema) -> None:
    """The data has the label feature (``label=lable`` gets a did-you-mean)."""
    names = [f.name for f in schema.features]
    if cfg.label not in names:
        raise ValueError(f"the data has no label feature {cfg.label!r}"
                         f"{did_you_mean(cfg.label, names)}")


def make_loader(cfg: TrainConfig, split: str, *, train: bool):
    """Batches of ``batch_size`` rows: shuffled, equal work per rank for training (the
    remainder that does not divide over ranks is dropped); in order and complete for eval."""
    from shardforge.training import shard_loader

    return shard_loader(cfg.mixture(split), batch_size=cfg.batch_size,
                        num_workers=cfg.num_workers if train else 0, shuffle=train,
                        seed=cfg.seed, remainder="drop" if train else "keep",
                        **cfg.cache_settings())


def tabular_forward(model, batch: dict, label: str, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, logits, labels) of one batch; the FeatureLayer takes the columnar numpy batch as
    is and moves it to its own device."""
    inputs = dict(batch)
    labels = torch.as_tensor(np.asarray(inputs.pop(label))).to(device)
    logits = model(inputs)
    return unwrap(model).loss(logits, labels), logits, labels


@torch.no_grad()
def evaluate(model, run: Run) -> dict:
    """Mean loss over the first ``eval_batches`` batches of the eval split on every rank, and
    AUC (binary) or accuracy (multi-class) over all their rows."""
    cfg = run.cfg
    model.eval()
    total, count, scores, labels = 0.0, 0, [], []

    def spare():
        return next(iter(make_loader(cfg, cfg.train_split, train=False)))

    for batch, counted in eval_batches(make_loader(cfg, cfg.eval_split, train=False), run,
                                       spare):
        with run.autocast:
            loss, logits, y = tabular_forward(model, batch, cfg.label, run.device)
        if not counted:
            continue
        total += float(loss) * len(y)
        count += len(y)
        scores.append(unwrap(model).predict(logits.float()).cpu().numpy())
        labels.append(y.cpu().numpy().reshape(-1))
    total, count = reduce_sum([total, count], run)
    model.train()
    result = {"eval_loss": total / max(count, 1), "eval_items": int(count)}
    parts = [(np.concatenate(scores), np.concatenate(labels))] if scores else []
    if run.dist.world_size > 1:  # AUC over every rank's rows, not one rank's
        gathered: list = [None] * run.dist.world_size
        dist.all_gather_object(gathered, parts)
        parts = [p for rank_parts in gathered for p in rank_parts]
    if parts:
        probs = np.concatenate([p for p, _ in parts])
        y = np.concatenate([t for _, t in parts])
        if probs.ndim == 1:
            result["eval_auc"] = roc_auc(y, probs)
        else:
            result["eval_accuracy"] = float((probs.argmax(-1) == y).mean())
    return result


def train(cfg: TrainConfig, *, resume: bool = False, stop_at: int | None = None,
          stream=None) -> TrainResult:
    """Train ``TabularModel`` as ``cfg`` says (see :func:`shardforge.training.trainer.train`)."""
    run = Run(cfg, unit="rows", stream=stream)
    schema = load_schema(cfg.mixture().sources[0].path)
    model = TabularModel(schema, TabularConfig(**coerce_fields(TabularConfig, cfg.model)))
    model = model.to(run.device)
    run.print_plan(model)
    model, optimizer = parallelize(model, cfg, run.dist, run.device)
    batches = Batches(make_loader(cfg, cfg.train_split, train=True))
    start = run.resume(model, optimizer, batches) if resume else 0
    run.begin(start, stop_at)
    if start == 0:
        run.record_eval(evaluate(model, run), step=0)

    model.train()
    for step in run.steps():
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        set_lr(optimizer, lr)
        step_loss, rows = 0.0, 0
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            with gradient_sync(model, micro == cfg.grad_accum - 1), run.autocast:
                loss, _, labels = tabular_forward(model, batch, cfg.label, run.device)
                (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
            rows += int(labels.shape[0])
        grad_norm = clip_and_step(model, optimizer, cfg.grad_clip)
        run.measure_memory(model, optimizer)  # after the first step: bytes held vs the plan
        optimizer.zero_grad(set_to_none=True)
        run.end_step(step + 1, step_loss, rows, time.perf_counter() - t0, lr, grad_norm)
        if run.eval_due():
            run.record_eval(evaluate(model, run))
        if run.checkpoint_due():
            run.save(model, optimizer, batches)
        if run.is_final:
            break
    return run.finish(model)
