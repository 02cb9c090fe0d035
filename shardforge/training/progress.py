"""What a run reports: the progress line, ``metrics.jsonl`` (+ TensorBoard), the loss curves.

:class:`Meter` keeps the numbers behind them: the losses and items of the steps since the last
log line (the window) and of the whole run (the reported throughput is the run's average, not
the last window's), and the step times for the ETA, which honours ``time_limit_s``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class ProgressLine:
    """One status line, redrawn in place on a terminal and printed every ``log_every`` steps
    otherwise (logs, CI): step, loss, throughput, packing efficiency, ETA."""

    def __init__(self, total: int, unit: str, stream=None) -> None:
        self.total, self.unit = total, unit
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()

    def update(self, step: int, loss: float, rate: float, eta_s: float,
               packing: float | None = None, lr: float | None = None,
               sources: dict[str, int] | None = None) -> None:
        """Redraw the line; ``sources``: a mixture's ``docs/<name>`` counts of the window, shown
        as each source's share."""
        width = 24
        done = int(width * step / self.total)
        bar = "#" * done + "-" * (width - done)
        parts = [f"[{bar}] step {step}/{self.total}", f"loss {loss:.4f}",
                 f"{rate:,.0f} {self.unit}/s"]
        if packing is not None:
            parts.append(f"packing {packing:.1%}")
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        docs = {k.partition("/")[2]: v for k, v in (sources or {}).items()
                if k.startswith("docs/")}
        if len(docs) > 1:
            total = max(sum(docs.values()), 1)
            parts.append("mix " + " ".join(f"{n} {v / total:.0%}" for n, v in docs.items()))
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


class Meter:
    """Losses, items and times of the training steps (``items`` already summed over ranks).

    >>> m = Meter(max_steps=10)
    >>> m.add_step(loss=2.0, items=100, seconds=0.5)
    >>> m.window()["loss"], m.average_rate
    (2.0, 200.0)
    """

    def __init__(self, max_steps: int, time_limit_s: float = 0.0) -> None:
        self.max_steps, self.time_limit_s = max_steps, time_limit_s
        self.total_items, self.total_seconds = 0, 0.0
        self.step_times: list[float] = []
        self._reset_window()

    def _reset_window(self) -> None:
        self.w_items, self.w_seconds = 0, 0.0
        self.w_losses: list[float] = []
        self.w_packing: list[float] = []
        self.w_sources: dict[str, int] = {}

    def add_sources(self, names: list[str], docs: list[float], tokens: list[float]) -> None:
        """Documents begun and tokens read of each source of a mixture (all ranks) in a step."""
        for name, d, t in zip(names, docs, tokens):
            for key, value in ((f"docs/{name}", d), (f"tokens/{name}", t)):
                self.w_sources[key] = self.w_sources.get(key, 0) + int(value)

    def add_step(self, loss: float, items: int, seconds: float,
                 packing: list[float] = ()) -> None:
        self.w_losses.append(loss)
        self.w_items += items
        self.w_seconds += seconds
        self.w_packing += list(packing)
        self.total_items += items
        self.total_seconds += seconds
        self.step_times.append(seconds)

    @property
    def average_rate(self) -> float:
        """Items per second over all training steps of this run (evals and saves excluded)."""
        return self.total_items / max(self.total_seconds, 1e-9)

    def eta(self, done: int, elapsed_s: float) -> float:
        """Seconds left: the remaining steps at the recent step time, or the time limit's
        remainder when that comes first."""
        left = float(np.mean(self.step_times[-50:])) * (self.max_steps - done)
        if self.time_limit_s:
            left = min(left, max(0.0, self.time_limit_s - elapsed_s))
        return left

    def window(self) -> dict[str, Any]:
        """The steps since the last call: mean loss, rate, mean packing efficiency, and the
        documents and tokens of each source (``docs/<name>``, ``tokens/<name>``: counts of the
        window, so metrics.jsonl's rows add up to a run's totals across resumes)."""
        out = {"loss": float(np.mean(self.w_losses)),
               "rate": self.w_items / max(self.w_seconds, 1e-9),
               "packing": float(np.mean(self.w_packing)) if self.w_packing else None,
               "sources": self.w_sources}
        self._reset_window()
        return out


RESUMES_FILE = "resumes.json"  # beside metrics.jsonl: the steps a run was resumed at


def resume_steps(metrics_path: Path) -> list[int]:
    """The steps the run of ``metrics_path`` was resumed at."""
    path = metrics_path.with_name(RESUMES_FILE)
    return json.loads(path.read_text()) if path.exists() else []


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per log or eval line) and optional TensorBoard
    scalars, written by rank 0 only.

    On resume the file keeps exactly the rows up to the checkpoint's step (rows a killed run
    wrote after its last checkpoint are dropped, as is a torn last line), so it never repeats a
    step.
    """

    def __init__(self, path: Path, *, enabled: bool, resume_step: int = 0,
                 tensorboard_dir: Path | None = None, log: Callable[[str], None] = print):
        self.path = path
        self.file = None
        self.tb = None
        if not enabled:
            return
        if resume_step:
            self._truncate_after(resume_step)
        self.file = open(path, "a" if resume_step else "w")  # noqa: SIM115 - closed in close()
        if tensorboard_dir is not None:
            self.tb = open_tensorboard(tensorboard_dir, log)
        if resume_step:  # where the curves mark a resume (metrics.jsonl stays the rows alone)
            from shardforge.records.layout import atomic_write

            steps = [s for s in resume_steps(path) if s < resume_step] + [resume_step]
            atomic_write(path.with_name(RESUMES_FILE), json.dumps(steps).encode())

    def _truncate_after(self, step: int) -> None:
        from shardforge.records.layout import atomic_write

        kept = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the torn last line of a killed run
                if row.get("step", 0) <= step:
                    kept.append(line + "\n")
        atomic_write(self.path, "".join(kept).encode())

    def record(self, row: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


class SourceTally:
    """A mixture's documents and tokens per source, counted from the packed batches a step
    trains on and booked into the :class:`Meter` (nothing for a single source).

    >>> tally = SourceTally(loader.dataset, run.meter)     # doctest: +SKIP
    >>> tally.add(batch)                                   # each micro-batch  # doctest: +SKIP
    >>> tally.end_step(lambda v: reduce_sum(v, run))       # sums over ranks   # doctest: +SKIP
    """

    def __init__(self, dataset: Any, meter: Meter) -> None:
        self.dataset, self.meter = dataset, meter
        self.names = list(dataset.source_names)
        self.counts = np.zeros((2, len(self.names)))

    def add(self, batch: dict) -> None:
        if len(self.names) > 1:
            self.counts += np.stack(self.dataset.source_counts(batch))

    def end_step(self, all_ranks: Callable[[list[float]], list[float]]) -> None:
        """Book the step's counts, summed over ranks by ``all_ranks`` (every rank calls it)."""
        if len(self.names) > 1:
            docs_tokens = all_ranks(self.counts.ravel().tolist())
            n = len(self.names)
            self.meter.add_sources(self.names, docs_tokens[:n], docs_tokens[n:])
            self.counts[:] = 0


def eval_by_source(names: list[str], part: Callable[[str | None], tuple[float, float]]
                   ) -> dict[str, float]:
    """An eval's metrics for a mixture of sources ``names``: ``part(name)`` is one source's
    (loss total, count) summed over ranks; ``eval_loss`` pools them and ``eval_loss/<name>`` is
    each one's. A single source is ``part(None)`` alone."""
    out: dict[str, float] = {}
    total, count = 0.0, 0.0
    for name in names if len(names) > 1 else [None]:
        part_total, part_count = part(name)
        if name is not None:
            out[f"eval_loss/{name}"] = part_total / max(part_count, 1)
        total, count = total + part_total, count + part_count
    return {"eval_loss": total / max(count, 1), "eval_items": int(count), **out}


def open_tensorboard(directory: Path, log: Callable[[str], None]):
    """A ``SummaryWriter``, or ``None`` with a warning when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        text = ("tensorboard=true but the tensorboard package is not installed "
                "(pip install tensorboard): no TensorBoard scalars are written")
        warnings.warn(text, stacklevel=2)
        log("warning: " + text)
        return None
    return SummaryWriter(str(directory))


def plot_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """What a run is judged by, against step, from metrics.jsonl: training and eval loss (and
    each source's eval loss), the learning rate, throughput, AUC or accuracy where the eval has
    them, a mixture's realized share of documents per source; a resume is a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]

    def series(key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in rows if key in r]

    keys = list(dict.fromkeys(k for r in rows for k in r))
    losses = [(k, series(k)) for k in ("loss", "eval_loss") + tuple(
        k for k in keys if k.startswith("eval_loss/"))]
    panels = {"loss": [(k if k != "loss" else "train loss", s) for k, s in losses if s]}
    panels["learning rate"] = [("lr", series("lr"))]
    panels["throughput"] = [(k, series(k)) for k in keys if k.endswith("_per_s")]
    panels["eval"] = [(k, series(k)) for k in ("eval_auc", "eval_accuracy")]
    panels["realized mixture (documents, cumulative)"] = mixture_shares(rows)
    panels = {title: [(k, s) for k, s in lines if s] for title, lines in panels.items()}
    panels = {title: lines for title, lines in panels.items() if lines}
    if not panels.get("loss"):
        return None
    resumes = resume_steps(metrics_path)
    cols = min(2, len(panels))
    n_rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(6 * cols, 3.5 * n_rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for label, points in lines:
            style = "o-" if label.startswith("eval") and len(points) < 50 else "-"
            ax.plot(*zip(*points), style, label=label, markersize=3)
        for step in resumes:
            ax.axvline(step, color="gray", linestyle="--", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def mixture_shares(rows: list[dict]) -> list[tuple[str, list[tuple[int, float]]]]:
    """Each source's share of all documents read up to each logged step (``docs/<name>``
    counts of metrics.jsonl rows; none for a single source)."""
    names = list(dict.fromkeys(k.partition("/")[2] for r in rows for k in r
                               if k.startswith("docs/")))
    if len(names) < 2:
        return []
    totals = dict.fromkeys(names, 0)
    out: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    for row in rows:
        if not any(f"docs/{n}" in row for n in names):
            continue
        for name in names:
            totals[name] += row.get(f"docs/{name}", 0)
        all_docs = max(sum(totals.values()), 1)
        for name in names:
            out[name].append((row["step"], totals[name] / all_docs))
    return list(out.items())


def eval_suffix(ev: dict) -> str:
    if "eval_auc" in ev:
        return f", AUC {ev['eval_auc']:.4f}"
    if "eval_accuracy" in ev:
        return f", accuracy {ev['eval_accuracy']:.4f}"
    return ""

