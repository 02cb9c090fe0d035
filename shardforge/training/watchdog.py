"""A training rank dies with its launcher.

``torchrun`` starts every rank in a session of its own, so when torchrun itself is killed (even
its whole process group, with ``kill -9``) nothing reaches the ranks: they stay blocked in a
collective that never completes, or train on for a job nobody waits for. :func:`watch_launcher`,
which :class:`~shardforge.training.run.Run` calls in a process a launcher started, ends the
process when its parent is gone:

- on Linux the kernel sends it SIGTERM the moment its parent exits
  (``prctl(PR_SET_PDEATHSIG)``);
- on every platform a daemon thread polls ``os.getppid()``, which changes when the process is
  re-parented; it sends SIGTERM too, and SIGKILL after :data:`GRACE_SECONDS` if the process is
  still there (a SIGTERM handler that does not return, or a main thread blocked in a C call
  where a Python handler never runs).

A plain ``shardforge train`` (no launcher) is not watched: a run started under ``nohup`` or in a
terminal multiplexer is meant to outlive its shell. A launcher that dies before the watch starts
(while the rank imports torch) is not noticed: the parent it would see is already the new one.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

# set by torchrun (and torch.distributed.launch) in every rank it starts
LAUNCHER_ENV = "LOCAL_RANK"
POLL_SECONDS = 0.25
GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_lock = threading.Lock()
_thread: threading.Thread | None = None


def under_launcher() -> bool:
    """Whether a launcher (torchrun) started this process as one of its ranks."""
    return LAUNCHER_ENV in os.environ


def watch_launcher() -> bool:
    """End this process when its parent (the launcher) dies; idempotent. Returns whether the
    process is watched: only under a launcher (:func:`under_launcher`).

    Example:
        >>> watch_launcher()  # doctest: +SKIP
        True
    """
    global _thread
    if not under_launcher():
        return False
    with _lock:
        if _thread is None:
            parent = os.getppid()
            if sys.platform.startswith("linux"):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            _thread = threading.Thread(target=_watch, args=(parent,), daemon=True,
                                       name="shardforge-launcher-watchdog")
            _thread.start()
    return True


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)
