"""Checkpoint files: atomic, and loaded without running code.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python data (dicts,
lists, tuples, str, int, float, bool, None): the model's and the optimizer's whole state keyed
by parameter name (gathered from every rank, whatever the ZeRO stage, so a run resumes on any
number of ranks and at any stage), the step, the scheduler position, every rank's loader state
and RNG states (numpy's as a dict of ints), and the config. ``load_checkpoint`` reads it with
``torch.load(weights_only=True)``, which refuses any pickle that would construct another
object or call a function: a planted file fails with :class:`CheckpointError` naming it, and
no code in it runs.

Writes go through ``records.layout.atomic_write`` (a temporary file in the same directory,
fsync, rename): a crash mid-write leaves the previous checkpoint intact, and the temporary file of a
killed save is removed by the next save or resume (:func:`remove_temporaries`).
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shardforge.records.layout import TMP_PREFIX, atomic_write

_NAME = re.compile(r"step-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely (not ours, corrupt, or planted)."""


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed saves left in ``directory`` (one writer per run
    dir: rank 0 of the one job that owns it)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.name.startswith(TMP_PREFIX)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(directory: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``directory/step-{step:06d}.pt`` atomically; keep only the newest ``keep`` files.

    Example:
        >>> save_checkpoint(tmp, 10, {"step": 10, "w": torch.ones(2)})  # doctest: +SKIP
        PosixPath('.../step-000010.pt')
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_temporaries(directory)
    path = Path(atomic_write(directory / f"step-{step:06d}.pt", lambda f: torch.save(state, f)))
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Finished checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state saved in ``path``; only tensors and plain data are read (no code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message: the advice to retry with weights_only=False, then the reason
        found = re.search(r"(?:unsupported )?GLOBAL [\w.]+", str(err))
        if found:
            raise CheckpointError(
                f"{path}: refused to load: it asks to run {found.group(0).split()[-1]} (a pickle "
                f"that constructs objects or calls functions), so it is not a shardforge "
                f"checkpoint. Delete it or move it out of the run dir.") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not written by "
                              f"torch.save)") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint: {err}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a shardforge checkpoint (no step in it)")
    return state


def rng_state() -> dict[str, Any]:
    """Python's, numpy's, torch's (and CUDA's) RNG states, as tensors and plain data."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {**numpy_state, "state": {"key": numpy_state["state"]["key"].tolist(),
                                           "pos": int(numpy_state["state"]["pos"])}},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    key = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state({**numpy_state, "state": {**numpy_state["state"], "key": key}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
