"""``train(cfg)``: the public entry point; it runs the recipe of ``cfg.task``.

There is no trainer class and no callbacks. Each task has its own recipe, a plain loop you can
read top to bottom and copy (``shardforge/training/recipes/lm.py``, ``tabular.py``, ``vlm.py``;
registered in :mod:`shardforge.training.recipes`), built from
small shared pieces: the schedule (:mod:`~shardforge.training.schedule`), data parallelism and
ZeRO (:mod:`~shardforge.training.parallel`), the run's bookkeeping — log lines, eval cadence,
checkpoints, the time limit (:mod:`~shardforge.training.run`), reporting
(:mod:`~shardforge.training.progress`) and checkpoint files
(:mod:`~shardforge.training.checkpoint`).

Under ``torchrun`` the same code runs data-parallel (NCCL on GPUs, gloo on CPU): every rank
reads its own disjoint part of the shards, gradients are averaged, and only rank 0 writes logs
and checkpoints; a rank ends when torchrun does (:mod:`~shardforge.training.watchdog`). A
checkpoint holds the model, optimizer, scheduler position, every rank's loader state and RNG
states, so ``resume=True`` continues exactly where the run stopped: from the newest checkpoint
whose checksums match, with a config that changes nothing of the math.
"""

from __future__ import annotations

from shardforge.training.config import TrainConfig
from shardforge.training.recipes import recipe_for
from shardforge.training.run import TrainResult

__all__ = ["TrainResult", "train"]


def train(cfg: TrainConfig, *, resume: bool = False, stop_at: int | None = None,
          stream=None) -> TrainResult:
    """Train as ``cfg`` says, with the recipe of ``cfg.task``.

    ``resume`` continues from the newest checkpoint in ``cfg.out_dir/checkpoints``; ``stop_at``
    ends after that step (with a checkpoint), as if the job had been preempted there.

    Example:
        >>> cfg = TrainConfig.load("shardforge/examples/lm.yaml",
        ...                        ["data=out/stdlib/data", "max_steps=20"])  # doctest: +SKIP
        >>> train(cfg).last_eval["eval_loss"]  # doctest: +SKIP
    """
    return recipe_for(cfg.task).train(cfg, resume=resume, stop_at=stop_at, stream=stream)
