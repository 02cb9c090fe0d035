"""Atomic checkpoints: written to a temporary file in the same directory, then renamed.

A crash mid-write leaves the previous checkpoint intact (``os.replace`` is atomic on POSIX), so
``latest_checkpoint`` never returns a half-written file. A checkpoint is a plain dict saved with
``torch.save``: model, optimizer, scheduler, loader state, RNG states, step, config.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

_NAME = re.compile(r"step-(\d+)\.pt$")
_TMP_PREFIX = ".tmp-"


def write_atomic(path: str | Path, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through a temporary file in the same directory (fsync, then rename), so
    readers see the old file or the new one, never half of one. ``data``: the bytes, or a
    function that writes them to the open file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(directory: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``directory/step-{step:06d}.pt`` atomically; keep only the newest ``keep`` files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = write_atomic(directory / f"step-{step:06d}.pt", lambda f: torch.save(state, f))
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
    # our own files: they hold numpy RNG state and plain python objects, not just tensors
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
