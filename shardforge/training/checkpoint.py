"""Checkpoint files: atomic, verified before they are read, and loaded without running code.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python data (dicts,
lists, tuples, str, int, float, bool, None): the model's and the optimizer's whole state keyed
by parameter name (gathered from every rank, whatever the ZeRO stage, so a run resumes on any
number of ranks and at any stage), the step, the scheduler position, every rank's loader state
and RNG states (numpy's as a dict of ints), and the config. ``load_checkpoint`` reads it with
``torch.load(weights_only=True)``, which refuses any pickle that would construct another
object or call a function: a planted file fails with :class:`CheckpointError` naming it, and
no code in it runs.

The file is a zip archive in which every record (the pickle, each tensor's bytes) carries the
CRC-32 of its contents. ``torch.load`` does not check them; :func:`load_checkpoint` does, before
it unpickles anything, so a flipped bit or a torn copy is a :class:`CorruptCheckpoint` naming
the record, never a resume from wrong weights. :func:`load_latest` then falls back to the
previous checkpoint and says so. The checkpoint's config is checked against the resuming one
(:func:`check_resume_config`): what would change the math is refused, naming the fields.

Writes go through ``records.layout.atomic_write`` (a temporary file in the same directory,
fsync, rename): a crash mid-write leaves the previous checkpoint intact, and the temporary file
of a killed save is removed by the next save or resume (:func:`remove_temporaries`).
"""

from __future__ import annotations

import pickle
import random
import re
import zipfile
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shardforge.records.layout import TMP_PREFIX, atomic_write

_NAME = re.compile(r"step-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely (not ours, corrupt, or planted), or one a
    run cannot continue from (its config differs in what changes the math)."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint whose bytes are not the ones written: a checksum mismatch, a truncated or
    unreadable archive. Resume falls back to the previous checkpoint."""


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
    # torch >= 2.6 lets a process turn the records' CRC-32 off; a checkpoint always has them
    crc32_was_on = getattr(torch.serialization, "get_crc32_options", lambda: True)()
    if not crc32_was_on:
        torch.serialization.set_crc32_options(True)
    try:
        path = Path(atomic_write(directory / f"step-{step:06d}.pt",
                                 lambda f: torch.save(state, f)))
    finally:
        if not crc32_was_on:
            torch.serialization.set_crc32_options(False)
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


def verify_checksums(path: str | Path) -> None:
    """Read every record of the checkpoint archive ``path`` against the CRC-32 stored beside it;
    :class:`CorruptCheckpoint` names the first that differs (or what makes the archive
    unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as record:
                    try:
                        while record.read(1 << 20):
                            pass
                    except zipfile.BadZipFile:
                        raise CorruptCheckpoint(f"{path} is corrupt (checksum mismatch in its "
                                                f"record {info.filename})") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint (corrupt or not written by "
                                f"torch.save: {err})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state saved in ``path``, once its checksums match (:func:`verify_checksums`); only
    tensors and plain data are read (no code runs)."""
    verify_checksums(path)
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
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint (corrupt or not written by "
                                f"torch.save)") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint: {err}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a shardforge checkpoint (no step in it)")
    return state


def load_latest(directory: str | Path,
                log: Callable[[str], None]) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact checkpoint in ``directory`` and its state (``None``: there is none).
    Corrupt ones are skipped and ``log`` says so, naming the one resumed from; if every one is
    corrupt, :class:`CorruptCheckpoint` lists them. Anything else wrong with the newest (a
    planted pickle, a file that is not a checkpoint) fails as :class:`CheckpointError`."""
    skipped: list[str] = []
    for path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path)
        except CorruptCheckpoint as err:
            skipped.append(str(err))
            continue
        if skipped:
            log(f"{'; '.join(skipped)}; resuming from {path.name}")
        return path, state
    if skipped:
        raise CorruptCheckpoint(f"no intact checkpoint in {directory}: {'; '.join(skipped)}. "
                                "Restore one from a copy, or start afresh with --overwrite")
    return None


# Config fields a resumed run may change: where it writes, how often it logs, evaluates and
# saves, how long it may run, and how it is laid out on the machine (a checkpoint is the same
# whatever the device, threads, ZeRO stage, recomputation or loader workers). ``max_steps``
# moves the end of the learning-rate schedule (to continue a finished run); ``data`` is a path,
# and an output may be moved or copied. Every other field changes the model, the data or its
# order, or the optimizer and its schedule, and must be the checkpoint's.
RESUME_MAY_CHANGE = frozenset({
    "out_dir", "data", "eval_split", "eval_every", "eval_batches", "log_every", "ckpt_every",
    "keep_checkpoints", "time_limit_s", "max_steps", "device", "threads", "zero_stage",
    "activation_checkpointing", "num_workers", "tensorboard", "plot",
})


def check_resume_config(state: dict[str, Any], cfg: Any, world_size: int,
                        path: str | Path) -> list[str]:
    """The changes from the config of checkpoint ``state`` (read from ``path``) to the dataclass
    ``cfg`` on ``world_size`` ranks that a resume allows, e.g. ``["max_steps 200 -> 400"]``.
    :class:`CheckpointError` names the others: a field outside :data:`RESUME_MAY_CHANGE`, a key
    of ``model`` (compared as given: a key spelled out on one side only is a change), or the
    micro-batches of a step over all ranks (``grad_accum`` may change with the world size)."""
    defaults = {f.name: f.default_factory() if f.default is MISSING else f.default
                for f in fields(cfg)}
    # a field added since the checkpoint was saved: its default; one since removed: ignored
    saved = {**defaults, **{k: v for k, v in state["config"].items() if k in defaults}}
    before = _flat(saved, state["world_size"])
    after = _flat(cfg.to_dict(), world_size)
    allowed, refused = [], []
    for key in sorted(after.keys() | before.keys()):
        old, new = before.get(key, "(default)"), after.get(key, "(default)")
        if old != new:
            (allowed if key in RESUME_MAY_CHANGE else refused).append(f"{key} {old!r} -> {new!r}")
    if refused:
        raise CheckpointError(
            f"{path} was saved with another config: {', '.join(refused)}. These change the model, "
            "the data or the optimizer, so the run would not continue the one saved: resume "
            "with the checkpoint's values (the run dir's config.json has them), or start a new "
            "run (another --out, or --overwrite)")
    return allowed


def _flat(config: dict[str, Any], world_size: int) -> dict[str, Any]:
    """``config`` with its ``model`` mapping spread into ``model.<key>`` entries, and
    ``grad_accum`` as the micro-batches of a step over ``world_size`` ranks."""
    flat = {k: v for k, v in config.items() if k not in ("model", "grad_accum")}
    flat["grad_accum x ranks"] = config["grad_accum"] * world_size
    flat.update({f"model.{k}": v for k, v in (config.get("model") or {}).items()})
    return flat


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
