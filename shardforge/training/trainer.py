"""The training recipe: shards -> loader -> model -> optimizer, as one loop you can read and copy.

There is no trainer class and no callbacks: :func:`train` builds its pieces with small functions
(``build_model``, ``build_optimizer``, ``make_loader``) and then runs a plain loop:

    for step in range(start, max_steps):
        lr = lr_at(step)                       # linear warmup, then cosine to min_lr
        for micro in range(grad_accum):        # gradient accumulation (no DDP sync until the last)
            loss = forward(model, next(batches)) / grad_accum
            loss.backward()
        clip_grad_norm_(...); optimizer.step(); optimizer.zero_grad()
        log / eval / checkpoint every N steps

Under ``torchrun`` the same code runs DDP (NCCL on GPUs, gloo on CPU): every rank reads its own
disjoint part of the shards, gradients are averaged, and only rank 0 writes logs and
checkpoints. A checkpoint holds the model, optimizer, scheduler position, every rank's loader
state and RNG states, so ``resume=True`` continues exactly where the run stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from shardforge.training import checkpoint as ckpt
from shardforge.training.config import TrainConfig, coerce_fields
from shardforge.training.memory import format_plan, plan_memory

# --------------------------------------------------------------------------------------------
# Small builders
# --------------------------------------------------------------------------------------------


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


def pick_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    if cfg.device == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        name = cfg.device
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but torch sees no CUDA GPU")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay from ``lr`` to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)


def load_schema(data_dir: str):
    import shardforge.features as sf

    return sf.load_schema(data_dir)


def vocab_size_from_schema(schema, token_feature: str) -> int | None:
    """The token feature's number of ids as the pipeline recorded it in the schema."""
    for feature in schema.features:
        if feature.name == token_feature and feature.num_buckets:
            return int(feature.num_buckets)
    return None


def build_model(cfg: TrainConfig, schema) -> torch.nn.Module:
    if cfg.task == "lm":
        from shardforge.training.models.lm import LMConfig, PackedLM

        model_cfg = dict(cfg.model)
        if "vocab_size" not in model_cfg:
            vocab = vocab_size_from_schema(schema, cfg.token_feature) if schema else None
            if vocab is None:
                raise ValueError(f"set model.vocab_size: the schema gives no vocabulary size "
                                 f"for {cfg.token_feature!r}")
            model_cfg["vocab_size"] = vocab
        return PackedLM(LMConfig(**coerce_fields(LMConfig, model_cfg)))
    from shardforge.training.models.tabular import TabularConfig, TabularModel

    return TabularModel(schema, TabularConfig(**coerce_fields(TabularConfig, cfg.model)))


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


def memory_plan_for(model: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                    world_size: int):
    n_params = sum(p.numel() for p in model.parameters())
    # the weights stay fp32 (autocast computes in bf16 on the GPU), so the model states are fp32
    kwargs: dict[str, Any] = dict(precision="fp32", optimizer="adamw", gpus=world_size)
    model_cfg = getattr(model, "cfg", None)
    if cfg.task == "lm" and model_cfg is not None:
        kwargs.update(seq_len=cfg.packing_length, micro_batch=1, layers=model_cfg.n_layer,
                      hidden=model_cfg.d_model, vocab=model_cfg.vocab_size)
    if device.type == "cuda":
        kwargs["gpu_memory"] = torch.cuda.get_device_properties(device).total_memory
    return plan_memory(n_params, **kwargs)


# --------------------------------------------------------------------------------------------
# Data: one loader per split; batches as an endless stream over epochs
# --------------------------------------------------------------------------------------------


def make_loader(cfg: TrainConfig, split: str, *, train: bool):
    """The split's loader: shuffled, equal work per rank for training (the remainder that does
    not divide over ranks is dropped); in order and complete for evaluation."""
    path = str(Path(cfg.data) / split)
    common = dict(num_workers=cfg.num_workers if train else 0, shuffle=train, seed=cfg.seed,
                  remainder="drop" if train else "keep")
    if cfg.task == "lm":
        from shardforge.training import packed_loader

        return packed_loader(path, packing_length=cfg.packing_length,
                             token_feature=cfg.token_feature, **common)
    from shardforge.training import shard_loader

    return shard_loader(path, batch_size=cfg.batch_size, **common)


class Batches:
    """An endless stream over a resumable loader: when an epoch ends the next one starts.

    One ``iter(loader)`` is one epoch and the loader itself knows the epoch and its exact
    position in it, so ``state_dict()`` is just the loader's and a restored stream yields exactly
    the batches the original would have. Ranks can run out of packed batches a step apart (their
    documents differ in length), which is why the loop runs a fixed number of steps over this
    stream instead of ``for batch in loader``.
    """

    def __init__(self, loader) -> None:
        self.loader = loader
        self._it: Iterator | None = None

    def __next__(self):
        for _ in range(2):
            if self._it is None:
                self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise RuntimeError("the training split yields no batches: is it empty?")

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict | list[dict]) -> None:
        self.loader.load_state_dict(state)
        self._it = None


# --------------------------------------------------------------------------------------------
# Forward passes: (loss, items counted, extra metrics)
# --------------------------------------------------------------------------------------------


def lm_forward(model, batch: dict, device: torch.device) -> tuple[torch.Tensor, int, dict]:
    from shardforge.training.packing import shift_labels

    input_ids = batch["input_ids"].to(device, non_blocking=True)
    targets = shift_labels(batch["labels"]).to(device, non_blocking=True)
    out = model(input_ids, batch["position_ids"].to(device), batch["cu_seqlens"].to(device),
                int(batch["max_seqlen"]), targets=targets)
    n_targets = int((targets != -100).sum())
    return out.loss, n_targets, {"ce": out.ce.detach(), "tokens": int(input_ids.numel()),
                                 "packing_efficiency": float(batch.get("packing_efficiency", 1.0))}


def tabular_forward(model, batch: dict, device: torch.device, label: str
                    ) -> tuple[torch.Tensor, int, dict]:
    # the FeatureLayer takes the columnar numpy batch as is and moves it to its own device
    inputs = dict(batch)
    labels = torch.as_tensor(np.asarray(inputs.pop(label))).to(device)
    logits = model(inputs)
    loss = getattr(model, "module", model).loss(logits, labels)  # DDP wraps the model
    return loss, int(labels.shape[0]), {"ce": loss.detach(), "tokens": int(labels.shape[0]),
                                        "logits": logits.detach(), "labels": labels.detach()}


@torch.no_grad()
def evaluate(model, cfg: TrainConfig, device: torch.device, d: Dist, autocast) -> dict:
    """Mean loss over the first ``eval_batches`` batches of the eval split on every rank
    (token-weighted for the LM), plus AUC / accuracy for tabular models."""
    from shardforge.training.models.tabular import roc_auc

    model.eval()
    loader = make_loader(cfg, cfg.eval_split, train=False)
    total, count = torch.zeros((), dtype=torch.float64), 0
    scores, labels = [], []
    for i, batch in enumerate(loader):
        if cfg.eval_batches and i >= cfg.eval_batches:
            break
        with autocast:
            if cfg.task == "lm":
                _, n, extra = lm_forward(model, batch, device)
            else:
                _, n, extra = tabular_forward(model, batch, device, cfg.label)
                base = getattr(model, "module", model)
                scores.append(base.predict(extra["logits"].float()).cpu())
                labels.append(extra["labels"].cpu())
        total += extra["ce"].double().cpu() * n
        count += n
    totals = torch.tensor([float(total), float(count)], dtype=torch.float64)
    if d.world_size > 1:
        dist.all_reduce(totals)
    result = {"eval_loss": float(totals[0] / max(totals[1], 1)), "eval_items": int(totals[1])}
    if scores:
        probs, y = torch.cat(scores).numpy(), torch.cat(labels).numpy().reshape(-1)
        if probs.ndim == 1:
            result["eval_auc"] = roc_auc(y, probs)
        else:
            result["eval_accuracy"] = float((probs.argmax(-1) == y).mean())
    model.train()
    return result


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


class ProgressLine:
    """One status line, redrawn in place on a terminal and printed every ``log_every`` steps
    otherwise (logs, CI): step, loss, throughput, packing efficiency, ETA."""

    def __init__(self, total: int, unit: str, stream=None) -> None:
        self.total, self.unit = total, unit
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()

    def update(self, step: int, loss: float, rate: float, eta_s: float,
               packing: float | None = None, lr: float | None = None) -> None:
        width = 24
        done = int(width * step / self.total)
        bar = "#" * done + "-" * (width - done)
        parts = [f"[{bar}] step {step}/{self.total}", f"loss {loss:.4f}",
                 f"{rate:,.0f} {self.unit}/s"]
        if packing is not None:
            parts.append(f"packing {packing:.1%}")
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        parts.append(f"ETA {int(eta_s) // 60}:{int(eta_s) % 60:02d}")
        line = "  ".join(parts)
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            if step >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()


def plot_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """Training loss and eval loss against step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def open_tensorboard(cfg: TrainConfig, out_dir: Path, log: Callable[[str], None]):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("tensorboard=true but the tensorboard package is not installed: skipping it")
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    first_eval: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)
    train_loss: float = float("nan")
    packing_efficiency: float | None = None
    throughput: float = 0.0  # tokens/s (lm) or rows/s (tabular), all ranks
    checkpoint: Path | None = None
    metrics: Path | None = None
    plot: Path | None = None
    losses: list[float] = field(default_factory=list)  # training loss of every step
    model: torch.nn.Module | None = None  # the trained model (not the DDP wrapper)


def train(cfg: TrainConfig, *, resume: bool = False, stop_at: int | None = None,
          stream=None) -> TrainResult:
    """Train as ``cfg`` says; ``resume`` continues from the newest checkpoint in
    ``cfg.out_dir/checkpoints``; ``stop_at`` ends after that step (with a checkpoint), as if the
    job had been preempted there."""
    stream = stream or sys.stdout
    device_type = "cuda" if cfg.device == "cuda" or (
        cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    d = setup_distributed(device_type)
    device = pick_device(cfg, d.local_rank)
    out_dir = Path(cfg.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    progress = ProgressLine(cfg.max_steps, "tok" if cfg.task == "lm" else "rows", stream)
    log = progress.message if d.is_main else (lambda text: None)

    threads_before = torch.get_num_threads()
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    np.random.seed(cfg.seed + d.rank)
    schema = load_schema(cfg.data)
    model = build_model(cfg, schema).to(device)
    optimizer = build_optimizer(model, cfg, device)
    batches = Batches(make_loader(cfg, cfg.train_split, train=True))
    plan = memory_plan_for(model, cfg, device, d.world_size)
    log(format_plan(plan))

    start = 0
    if resume and (path := ckpt.latest_checkpoint(ckpt_dir)) is not None:
        state = ckpt.load_checkpoint(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        # all ranks' loader states: the loader also resumes on a different number of ranks
        batches.load_state_dict(state["loader"])
        same_world = len(state["rng"]) == d.world_size
        ckpt.set_rng_state(state["rng"][d.rank if same_world else 0])
        start = state["step"]
        log(f"resumed from {path} at step {start}")
    elif resume:
        log(f"--resume: no checkpoint in {ckpt_dir}, starting from scratch")

    train_model = model
    if d.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    def forward(batch):
        if cfg.task == "lm":
            return lm_forward(train_model, batch, device)
        return tabular_forward(train_model, batch, device, cfg.label)

    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    metrics_path = out_dir / "metrics.jsonl"
    metrics_file = open(metrics_path, "a" if start else "w") if d.is_main else None  # noqa: SIM115
    tb = open_tensorboard(cfg, out_dir, log) if d.is_main else None

    def record(row: dict) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
        if tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    tb.add_scalar(key, value, row["step"])

    def save(step: int) -> Path | None:
        states = [batches.state_dict()], [ckpt.rng_state()]
        if d.world_size > 1:
            gathered: tuple[list, list] = ([None] * d.world_size, [None] * d.world_size)
            dist.all_gather_object(gathered[0], states[0][0])
            dist.all_gather_object(gathered[1], states[1][0])
            states = gathered
        if not d.is_main:
            return None
        return ckpt.save_checkpoint(ckpt_dir, step, {
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            # the schedule is a pure function of the step: the step is its whole state
            "scheduler": {"step": step, "lr": lr_at(step, cfg)},
            "loader": states[0], "rng": states[1], "config": cfg.to_dict(),
            "world_size": d.world_size,
        }, keep=cfg.keep_checkpoints)

    result = TrainResult(out_dir=out_dir, steps=start, metrics=metrics_path, model=model)
    if start == 0:
        result.first_eval = evaluate(model, cfg, device, d, autocast)
        record({"step": 0, **result.first_eval})
        log(f"step 0: eval loss {result.first_eval['eval_loss']:.4f}" + _eval_suffix(
            result.first_eval))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    last = stop_at if stop_at is not None else cfg.max_steps
    window_items, window_time, window_packing, window_losses = 0, 0.0, [], []
    step_times: list[float] = []
    checkpoint_path = None
    t_train = time.perf_counter()
    model.train()
    for step in range(start, min(last, cfg.max_steps)):
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss, items = 0.0, 0
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            # DDP: all-reduce the gradients only on the last micro-batch of the step
            sync = micro == cfg.grad_accum - 1 or d.world_size == 1
            with (contextlib.nullcontext() if sync else train_model.no_sync()), autocast:
                loss, _, extra = forward(batch)
                (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
            items += extra["tokens"]
            if "packing_efficiency" in extra:
                window_packing.append(extra["packing_efficiency"])
        grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
                     if cfg.grad_clip > 0 else float("nan"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_time = time.perf_counter() - t0
        step_times.append(step_time)
        window_items += items * d.world_size
        window_time += step_time
        result.losses.append(step_loss)
        window_losses.append(step_loss)
        done = step + 1
        result.steps = done
        out_of_time = time_is_up(cfg, time.perf_counter() - t_train, d, device)
        final = done == cfg.max_steps or out_of_time

        if done % cfg.log_every == 0 or final:
            rate = window_items / max(window_time, 1e-9)
            packing = float(np.mean(window_packing)) if window_packing else None
            eta = float(np.mean(step_times[-50:])) * (cfg.max_steps - done)
            loss_avg = float(np.mean(window_losses))  # over the steps since the last line
            row = {"step": done, "loss": loss_avg, "lr": lr, "grad_norm": grad_norm,
                   f"{progress.unit}_per_s": rate}
            if packing is not None:
                row["packing_efficiency"] = packing
                result.packing_efficiency = packing
            record(row)
            if d.is_main:
                progress.update(done, loss_avg, rate, eta, packing, lr)
            result.throughput = rate
            window_items, window_time, window_packing, window_losses = 0, 0.0, [], []
        if done % cfg.eval_every == 0 or final:
            result.last_eval = evaluate(model, cfg, device, d, autocast)
            record({"step": done, **result.last_eval})
            log(f"step {done}: eval loss {result.last_eval['eval_loss']:.4f}"
                + _eval_suffix(result.last_eval))
        if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or final or done == last:
            checkpoint_path = save(done)
        if out_of_time:
            log(f"time_limit_s={cfg.time_limit_s:g} reached: stopping at step {done}")
            break

    result.train_loss = result.losses[-1] if result.losses else float("nan")
    result.checkpoint = checkpoint_path or ckpt.latest_checkpoint(ckpt_dir)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        log(format_plan(plan, measured_peak=peak))
    if metrics_file is not None:
        metrics_file.close()
    if tb is not None:
        tb.close()
    if d.is_main and cfg.plot:
        result.plot = plot_curves(metrics_path, out_dir / "curves.png")
    if d.world_size > 1:
        dist.barrier()
    torch.set_num_threads(threads_before)
    return result


def time_is_up(cfg: TrainConfig, elapsed: float, d: Dist, device: torch.device) -> bool:
    """Whether ``time_limit_s`` has passed; under DDP every rank takes rank 0's answer, so
    they all stop at the same step."""
    if not cfg.time_limit_s:
        return False
    flag = torch.tensor([float(elapsed > cfg.time_limit_s)], device=device)  # NCCL: on the GPU
    if d.world_size > 1:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def _eval_suffix(ev: dict) -> str:
    if "eval_auc" in ev:
        return f", AUC {ev['eval_auc']:.4f}"
    if "eval_accuracy" in ev:
        return f", accuracy {ev['eval_accuracy']:.4f}"
    return ""
