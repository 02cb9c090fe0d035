"""The LM recipe: packed, padding-free token batches -> ``PackedLM`` -> AdamW, next-token loss.

    shardforge train --config shardforge/examples/lm.yaml --data out/ max_steps=300
"""

from __future__ import annotations

import time

import torch

from shardforge.training.config import TrainConfig, coerce_fields, did_you_mean
from shardforge.training.models.lm import LMConfig, PackedLM
from shardforge.training.packing import shift_labels
from shardforge.training.parallel import clip_and_step, gradient_sync, parallelize
from shardforge.training.progress import SourceTally, eval_by_source
from shardforge.training.run import (
    Batches,
    Run,
    TrainResult,
    eval_batches,
    load_schema,
    reduce_sum,
)
from shardforge.training.schedule import lr_at, set_lr

Settings = LMConfig  # what cfg.model sets


def check_schema(cfg: TrainConfig, schema) -> None:
    """The data has the token feature (tabular data gets a hint to the tabular task)."""
    names = [f.name for f in schema.features]
    if cfg.token_feature not in names:
        hint = did_you_mean(cfg.token_feature, names)
        if cfg.label in names:  # a labelled, token-less output: the tabular task's data
            hint = (f"; this looks like tabular data (it has the label {cfg.label!r}): give "
                    f"--config tabular (or task=tabular)")
        raise ValueError(f"the data has no token feature {cfg.token_feature!r}{hint}")


def build_model(cfg: TrainConfig, schema) -> PackedLM:
    """``PackedLM`` from ``cfg.model``; the vocabulary size defaults to the schema's."""
    model_cfg = dict(cfg.model)
    if "vocab_size" not in model_cfg:
        vocab = vocab_size_from_schema(schema, cfg.token_feature) if schema else None
        if vocab is None:
            raise ValueError(f"set model.vocab_size: the schema gives no vocabulary size "
                             f"for {cfg.token_feature!r}")
        model_cfg["vocab_size"] = vocab
    return PackedLM(LMConfig(**coerce_fields(LMConfig, model_cfg)))


def vocab_size_from_schema(schema, token_feature: str) -> int | None:
    """The token feature's number of ids as the pipeline recorded it in the schema."""
    for feature in schema.features:
        if feature.name == token_feature and feature.num_buckets:
            return int(feature.num_buckets)
    return None


def make_loader(cfg: TrainConfig, split: str, *, train: bool, only: str | None = None):
    """Packed batches of ``packing_length`` tokens: shuffled, equal work per rank for training
    (the remainder that does not divide over ranks is dropped); in order and complete for eval.
    ``only``: of that one source of the data's mixture."""
    from shardforge.training import packed_loader

    return packed_loader(cfg.mixture(split, only), packing_length=cfg.packing_length,
                         token_feature=cfg.token_feature,
                         num_workers=cfg.num_workers if train else 0, shuffle=train,
                         seed=cfg.seed, remainder="drop" if train else "keep",
                         **cfg.cache_settings())


def lm_forward(model, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(loss with z-loss, cross-entropy, number of targets) of one packed batch."""
    input_ids = batch["input_ids"].to(device, non_blocking=True)
    targets = shift_labels(batch["labels"]).to(device, non_blocking=True)
    out = model(input_ids, batch["position_ids"].to(device), batch["cu_seqlens"].to(device),
                int(batch["max_seqlen"]), targets=targets)
    return out.loss, out.ce, int((targets != -100).sum())


@torch.no_grad()
def evaluate(model, run: Run) -> dict:
    """Token-weighted mean cross-entropy over the first ``eval_batches`` batches of the eval
    split on every rank; for a mixture, of each source's eval split (``eval_loss/<name>``),
    and ``eval_loss`` over all of them."""
    cfg = run.cfg

    def part(name: str | None) -> list[float]:
        total, count = 0.0, 0

        def spare():
            return next(iter(make_loader(cfg, cfg.train_split, train=False, only=name)))

        loader = make_loader(cfg, cfg.eval_split, train=False, only=name)
        for batch, counted in eval_batches(loader, run, spare):
            with run.autocast:
                _, ce, n = lm_forward(model, batch, run.device)
            if counted:
                total += float(ce) * n
                count += n
        return reduce_sum([total, count], run)

    model.eval()
    metrics = eval_by_source(cfg.mixture().names, part)
    model.train()
    return metrics


def train(cfg: TrainConfig, *, resume: bool = False, stop_at: int | None = None,
          stream=None) -> TrainResult:
    """Train ``PackedLM`` as ``cfg`` says (see :func:`shardforge.training.trainer.train`)."""
    run = Run(cfg, unit="tok", stream=stream)
    model = build_model(cfg, load_schema(cfg.mixture().sources[0].path)).to(run.device)
    run.print_plan(model, seq_len=cfg.packing_length, micro_batch=1, layers=model.cfg.n_layer,
                   hidden=model.cfg.d_model, vocab=model.cfg.vocab_size)
    model, optimizer = parallelize(model, cfg, run.dist, run.device)
    batches = Batches(make_loader(cfg, cfg.train_split, train=True))
    tally = SourceTally(batches.loader.dataset, run.meter)  # a mixture's sources
    start = run.resume(model, optimizer, batches) if resume else 0
    run.begin(start, stop_at)
    if start == 0:
        run.record_eval(evaluate(model, run), step=0)

    model.train()
    for step in run.steps():
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        set_lr(optimizer, lr)
        step_loss, tokens, packing = 0.0, 0, []
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            tally.add(batch)
            with gradient_sync(model, micro == cfg.grad_accum - 1), run.autocast:
                loss, _, _ = lm_forward(model, batch, run.device)
                (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
            tokens += int(batch["input_ids"].numel())
            packing.append(float(batch.get("packing_efficiency", 1.0)))
        tally.end_step(lambda values: reduce_sum(values, run))
        grad_norm = clip_and_step(model, optimizer, cfg.grad_clip)
        run.measure_memory(model, optimizer)  # after the first step: bytes held vs the plan
        optimizer.zero_grad(set_to_none=True)
        run.end_step(step + 1, step_loss, tokens, time.perf_counter() - t0, lr, grad_norm,
                     packing)
        if run.eval_due():
            run.record_eval(evaluate(model, run))
        if run.checkpoint_due():
            run.save(model, optimizer, batches)
        if run.is_final:
            break
    return run.finish(model)
