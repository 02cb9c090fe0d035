"""The pieces every recipe shares: the run's context (:class:`Run`), the endless batch stream,
the step bookkeeping (log / eval / checkpoint / time limit) and the result.

A recipe (``shardforge/training/recipes/<task>.py``) is one ``train(cfg, ...)`` function that
reads top to bottom::

    run = Run(cfg, unit="tok", stream=stream)           # process group, device, seed
    model = build_model(...).to(run.device)
    run.print_plan(model, ...)                           # the memory plan it is about to run
    model, optimizer = parallelize(model, cfg, run.dist, run.device)   # DDP / ZeRO 1-3
    batches = Batches(make_loader(...))
    start = run.resume(model, optimizer, batches) if resume else 0
    run.begin(start, stop_at)                            # config.json, metrics.jsonl
    for step in run.steps():
        set_lr(optimizer, lr_at(step, cfg))
        ... forward, backward over grad_accum micro-batches ...
        grad_norm = clip_and_step(model, optimizer, cfg.grad_clip)
        run.measure_memory(model, optimizer)             # first step: bytes held vs the plan
        optimizer.zero_grad(set_to_none=True)
        run.end_step(step + 1, ...)                      # progress line, metrics.jsonl
        if run.eval_due(): run.record_eval(evaluate(model, run))   # over eval_batches(...)
        if run.checkpoint_due(): run.save(model, optimizer, batches)
        if run.is_final: break
    return run.finish(model)
"""

from __future__ import annotations

import itertools
import json
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
from shardforge.training.config import TrainConfig
from shardforge.training.memory import format_bytes, format_plan, plan_memory
from shardforge.training.parallel import (
    Dist,
    autocast_for,
    device_type_for,
    full_state_dicts,
    held_bytes,
    load_full_state_dicts,
    pick_device,
    setup_distributed,
    unwrap,
)
from shardforge.training.progress import Meter, MetricsLog, ProgressLine, eval_suffix, plot_curves
from shardforge.training.schedule import lr_at
from shardforge.training.watchdog import watch_launcher


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    first_eval: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)
    train_loss: float = float("nan")
    packing_efficiency: float | None = None
    throughput: float = 0.0  # the run's average tokens/s (lm) or rows/s (tabular), all ranks
    checkpoint: Path | None = None
    metrics: Path | None = None
    plot: Path | None = None
    losses: list[float] = field(default_factory=list)  # training loss of every step
    model: torch.nn.Module | None = None  # the trained model (not the DDP wrapper)
    # bytes this rank holds after the first optimizer step, and the plan's figures beside them
    memory: dict[str, dict[str, float]] = field(default_factory=dict)


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


def load_schema(data_dir: str):
    import shardforge.features as sf

    return sf.load_schema(data_dir)


class Run:
    """One training run's context and bookkeeping; see the module docstring for the loop."""

    def __init__(self, cfg: TrainConfig, unit: str, stream=None) -> None:
        watch_launcher()  # under torchrun: die with it, before joining the process group
        self.cfg = cfg
        self.dist: Dist = setup_distributed(device_type_for(cfg), cfg.zero_stage)
        self.device = pick_device(cfg, self.dist.local_rank)
        self.autocast = autocast_for(self.device)
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.progress = ProgressLine(cfg.max_steps, unit, stream or sys.stdout)
        self.meter = Meter(cfg.max_steps, cfg.time_limit_s)
        self.result = TrainResult(out_dir=self.out_dir, steps=0,
                                  metrics=self.out_dir / "metrics.jsonl")
        self.metrics: MetricsLog | None = None
        self.plan = None
        self.start = 0
        self.stop_at: int | None = None
        self._threads_before = torch.get_num_threads()
        if cfg.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        np.random.seed(cfg.seed + self.dist.rank)
        self._t_train = 0.0
        self._done = 0
        self._out_of_time = False

    def log(self, text: str) -> None:
        """A message line, from rank 0 only."""
        if self.dist.is_main:
            self.progress.message(text)

    def print_plan(self, model: torch.nn.Module, **model_shape: Any) -> None:
        """The memory plan of this model, precision and world size (``model_shape``: the
        planner's ``seq_len``/``layers``/``hidden``/``vocab`` where the recipe knows them)."""
        kwargs: dict[str, Any] = dict(
            precision="fp32", optimizer="adamw", zero_stage=self.cfg.zero_stage,
            gpus=self.dist.world_size,
            activation_checkpointing=self.cfg.activation_checkpointing, **model_shape)
        if self.device.type == "cuda":
            kwargs["gpu_memory"] = torch.cuda.get_device_properties(self.device).total_memory
        # the weights stay fp32 (autocast computes in bf16 on the GPU): fp32 model states
        self.plan = plan_memory(sum(p.numel() for p in unwrap(model).parameters()), **kwargs)
        self.log(format_plan(self.plan))

    # -- resume / start ---------------------------------------------------------------------

    def resume(self, model, optimizer, batches: Batches) -> int:
        """Restore the newest intact checkpoint of the run dir (a corrupt one is skipped, and
        said so); returns its step (0 if none). A config that changes the math is refused."""
        if self.dist.is_main:
            ckpt.remove_temporaries(self.ckpt_dir)  # of a save that was killed
        found = ckpt.load_latest(self.ckpt_dir, self.log)
        if found is None:
            self.log(f"--resume: no checkpoint in {self.ckpt_dir}, starting from scratch")
            return 0
        path, state = found
        changed = ckpt.check_resume_config(state, self.cfg, self.dist.world_size, path)
        load_full_state_dicts(model, optimizer, state["model"], state["optimizer"])
        # all ranks' loader states: the loader also resumes on a different number of ranks
        batches.load_state_dict(state["loader"])
        same_world = len(state["rng"]) == self.dist.world_size
        ckpt.set_rng_state(state["rng"][self.dist.rank if same_world else 0])
        self.log(f"resumed from {path} at step {state['step']}"
                 + (f" with {', '.join(changed)}" if changed else ""))
        return state["step"]

    def begin(self, start: int, stop_at: int | None) -> None:
        """Write config.json and open metrics.jsonl (continued after ``start`` on resume)."""
        self.start, self.stop_at = start, stop_at
        self.result.steps = start
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        self.metrics = MetricsLog(
            self.out_dir / "metrics.jsonl", enabled=self.dist.is_main, resume_step=start,
            tensorboard_dir=self.out_dir / "tensorboard" if self.cfg.tensorboard else None,
            log=self.log)

    def steps(self) -> range:
        """The optimizer steps this invocation runs (starts the training clock)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._t_train = time.perf_counter()
        last = self.stop_at if self.stop_at is not None else self.cfg.max_steps
        return range(self.start, min(last, self.cfg.max_steps))

    # -- per step ---------------------------------------------------------------------------

    def measure_memory(self, model, optimizer) -> None:
        """After the first optimizer step of the run (call before zeroing the gradients): the
        bytes this rank holds for weights, gradients and optimizer states beside the plan, and
        on a GPU the peak allocated beside the planned total with activations. Every rank
        prints its own line block."""
        if self.result.memory or self.plan is None:
            return
        measured: dict[str, float] = dict(held_bytes(model, optimizer))
        planned = {"weights": self.plan.weights, "gradients": self.plan.gradients,
                   "optimizer states": self.plan.optimizer_states,
                   "model states": self.plan.model_states}
        if self.device.type == "cuda":
            measured["peak allocated"] = torch.cuda.max_memory_allocated(self.device)
            planned["peak allocated"] = self.plan.total
        self.result.memory = {"planned": planned, "measured": measured}
        d = self.dist
        lines = [f"memory held by rank {d.rank} of {d.world_size} after the first step "
                 f"(ZeRO-{self.cfg.zero_stage}): planned vs measured"]
        for name, plan in planned.items():
            got = measured[name]
            label = "peak allocated (cuda)" if name == "peak allocated" else name
            note = "  (plan: model states + activations)" if name == "peak allocated" else ""
            lines.append(f"  {label:<22}{format_bytes(plan):>12}{format_bytes(got):>12}"
                         f"  {100 * (got - plan) / plan:+.2f}%{note}")
        text = "\n".join(lines)
        if d.world_size > 1:  # every rank's figures, printed in rank order by rank 0
            texts: list = [None] * d.world_size
            dist.all_gather_object(texts, text)
            text = "\n".join(texts)
        self.log(text)

    def end_step(self, step: int, loss: float, items: int, seconds: float, lr: float,
                 grad_norm: float, packing: list[float] = ()) -> None:
        """Book step ``step`` (1-based: the number of steps done): loss, items on this rank;
        every ``log_every`` steps a progress line and a metrics.jsonl row."""
        cfg = self.cfg
        self._done = step
        self.result.steps = step
        self.result.losses.append(loss)
        self.meter.add_step(loss, items * self.dist.world_size, seconds, packing)
        self._out_of_time = self._time_is_up()
        if step % cfg.log_every == 0 or self.is_final:
            window = self.meter.window()
            elapsed = time.perf_counter() - self._t_train
            row = {"step": step, "loss": window["loss"], "lr": lr, "grad_norm": grad_norm,
                   f"{self.progress.unit}_per_s": window["rate"]}
            if window["packing"] is not None:
                row["packing_efficiency"] = self.result.packing_efficiency = window["packing"]
            row.update(window["sources"])  # a mixture's documents and tokens per source
            self.metrics.record(row)
            if self.dist.is_main:
                self.progress.update(step, window["loss"], window["rate"],
                                     self.meter.eta(step, elapsed), window["packing"], lr,
                                     window["sources"])
        self.result.throughput = self.meter.average_rate

    @property
    def is_final(self) -> bool:
        """The last step of this invocation: max_steps, stop_at or the time limit."""
        return (self._done == self.cfg.max_steps or self._out_of_time
                or self._done == self.stop_at)

    def eval_due(self) -> bool:
        """Every ``eval_every`` steps, at ``max_steps`` and when the time limit ends the run."""
        return (self._done % self.cfg.eval_every == 0 or self._done == self.cfg.max_steps
                or self._out_of_time)

    def checkpoint_due(self) -> bool:
        """Every ``ckpt_every`` steps and at the last step of this invocation."""
        every = self.cfg.ckpt_every
        return bool(every and self._done % every == 0) or self.is_final

    def record_eval(self, metrics: dict, step: int | None = None) -> None:
        step = self._done if step is None else step
        if step == 0:
            self.result.first_eval = metrics
        self.result.last_eval = metrics
        self.metrics.record({"step": step, **metrics})
        self.log(f"step {step}: eval loss {metrics['eval_loss']:.4f}" + eval_suffix(metrics))

    def save(self, model, optimizer, batches: Batches) -> Path | None:
        """A checkpoint of step ``done``: every rank calls this (state is gathered), rank 0
        writes it."""
        step, d = self._done, self.dist
        model_state, optimizer_state = full_state_dicts(model, optimizer)
        states = [batches.state_dict()], [ckpt.rng_state()]
        if d.world_size > 1:
            gathered: tuple[list, list] = ([None] * d.world_size, [None] * d.world_size)
            dist.all_gather_object(gathered[0], states[0][0])
            dist.all_gather_object(gathered[1], states[1][0])
            states = gathered
        if not d.is_main:
            return None
        path = ckpt.save_checkpoint(self.ckpt_dir, step, {
            "step": step, "model": model_state, "optimizer": optimizer_state,
            # the schedule is a pure function of the step: the step is its whole state
            "scheduler": {"step": step, "lr": lr_at(step, self.cfg)},
            "loader": states[0], "rng": states[1], "config": self.cfg.to_dict(),
            "world_size": d.world_size,
        }, keep=self.cfg.keep_checkpoints)
        self.result.checkpoint = path
        return path

    def _time_is_up(self) -> bool:
        """Whether ``time_limit_s`` has passed; under DDP every rank takes rank 0's answer, so
        they all stop at the same step."""
        if not self.cfg.time_limit_s:
            return False
        elapsed = time.perf_counter() - self._t_train
        flag = torch.tensor([float(elapsed > self.cfg.time_limit_s)], device=self.device)
        if self.dist.world_size > 1:
            dist.broadcast(flag, src=0)  # NCCL: on the GPU
        return bool(flag.item())

    # -- the end ----------------------------------------------------------------------------

    def finish(self, model: torch.nn.Module) -> TrainResult:
        result = self.result
        if self._out_of_time:
            self.log(f"time_limit_s={self.cfg.time_limit_s:g} reached: stopping at step "
                     f"{result.steps}")
        result.train_loss = result.losses[-1] if result.losses else float("nan")
        result.checkpoint = result.checkpoint or ckpt.latest_checkpoint(self.ckpt_dir)
        result.model = unwrap(model)
        if self.device.type == "cuda" and self.plan is not None:
            self.log(format_plan(self.plan, measured_peak=torch.cuda.max_memory_allocated(
                self.device)))
        if self.metrics is not None:
            self.metrics.close()
        if self.dist.is_main and self.cfg.plot:
            result.plot = plot_curves(result.metrics, self.out_dir / "curves.png")
        if self.dist.world_size > 1:
            dist.barrier()
        torch.set_num_threads(self._threads_before)
        return result


def reduce_sum(values: list[float], run: Run) -> list[float]:
    """``values`` summed over ranks (float64), e.g. an eval's loss total and item count."""
    # NCCL reduces only GPU tensors
    totals = torch.tensor(values, dtype=torch.float64, device=run.device)
    if run.dist.world_size > 1:
        dist.all_reduce(totals)
    return totals.tolist()


def eval_batches(loader, run: Run, spare: Callable[[], Any]) -> Iterator[tuple[Any, bool]]:
    """``(batch, counted)`` for the first ``cfg.eval_batches`` batches of ``loader`` (all if 0),
    the same number on every rank: a rank whose part of the eval split ran out repeats its last
    batch (or ``spare()``, if it had none) with ``counted=False``, to run a forward that counts
    for nothing. So the collectives inside a forward (ZeRO-3 all-gathers its weights) are
    reached the same number of times on every rank; uneven eval splits cannot hang a run.

    A recipe's evaluation runs the forward of every batch and adds up only the counted ones::

        for batch, counted in eval_batches(make_loader(cfg, "eval"), run, spare):
            out = model(batch)
            if counted: total += ...
    """
    limit = run.cfg.eval_batches
    batches = iter(loader)
    last = None
    for _ in itertools.count() if not limit else range(limit):
        batch = next(batches, None)
        more = torch.tensor([float(batch is not None)], device=run.device)
        if run.dist.world_size > 1:  # does any rank have a batch left?
            dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if not more.item():
            return
        if batch is None:
            last = spare() if last is None else last
            yield last, False
        else:
            last = batch
            yield batch, True
