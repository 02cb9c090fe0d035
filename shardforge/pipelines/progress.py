"""Live progress of a job across Beam worker processes, and workers that die with their launcher.

Beam's local runner only reports metrics when the job is over, and its workers are separate
processes, so progress takes a side channel. The launcher sets two environment variables that
the workers inherit: the progress directory (inside the job's staging directory) and its own
identity. In a worker, :func:`add` counts in memory; a daemon thread rewrites the process's
cumulative totals to one small file ``<dir>/<host>-<pid>.json`` twice a second (a file per
process and whole-file rewrites: no locking, no growth). :class:`ProgressLine` in the launcher
sums those files and prints them. Counts are of work done, so a retried bundle counts twice; the
final figures come from the manifest, never from here.

The same thread is the workers' watchdog: when the launcher process is gone (``kill -9``, an OOM
kill) the worker kills itself within a quarter second, so no worker goes on writing after its
job is dead. A DoFn starts it in ``setup`` (:func:`attach`), before any work; importing this
module starts nothing.

DoFns call::

    from shardforge.pipelines import progress
    progress.attach()                          # in setup()
    progress.add("rows_read", len(chunk))      # also: files_read, records_written, errors

:func:`hook` marks a named point of the job (``staged``, ``write_stats``, ``publish_*``); it
calls whatever :func:`on_hook` registered in this process, nothing by default (the kill tests
register a pause there).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

from shardforge.records.layout import TMP_PREFIX, atomic_write

PROGRESS_ENV = "SHARDFORGE_PROGRESS_DIR"
LAUNCHER_ENV = "SHARDFORGE_LAUNCHER"  # "pid:start-time" of the launching process
COUNTERS = ("files_read", "rows_read", "records_written", "errors")
FLUSH_SECONDS = 0.5
WATCH_SECONDS = 0.25

_lock = threading.Lock()
_counts: dict[str, int] = {}
_dirty = False
_thread: threading.Thread | None = None


def add(name: str, n: int = 1) -> None:
    """Count ``n`` more of ``name`` in this process (cheap: a dict update under a lock)."""
    global _dirty
    if not n:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + int(n)
        _dirty = True
    attach()


def reset() -> None:
    """Forget this process's counts (a launcher running a new job in-process)."""
    global _dirty
    with _lock:
        _counts.clear()
        _dirty = False


_hooks: list = []


def on_hook(callback) -> None:
    """Call ``callback(stage)`` at every :func:`hook` of the job in this process."""
    _hooks.append(callback)


def hook(stage: str) -> None:
    """A named point of the job: counts so far are flushed, then each :func:`on_hook`
    callback runs."""
    if not _hooks:
        return
    attach()
    _flush()
    for callback in _hooks:
        callback(stage)


def _launcher() -> tuple[int, str] | None:
    value = os.environ.get(LAUNCHER_ENV, "")
    pid, _, start = value.partition(":")
    if not pid.isdigit() or int(pid) == os.getpid():
        return None
    return int(pid), start


def attach() -> None:
    """Start this worker's flush-and-watchdog thread (once per process; no-op in the launcher
    or outside a shardforge job)."""
    global _thread
    if _thread is not None or (_launcher() is None and not os.environ.get(PROGRESS_ENV)):
        return
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_loop, name="shardforge-progress", daemon=True)
            _thread.start()


def _launcher_alive(pid: int, start: str) -> bool:
    from shardforge.records.manifest import _alive

    return _alive(pid, start or None)


def _loop() -> None:
    launcher = _launcher()
    last_flush = 0.0
    while True:
        now = time.monotonic()
        if now - last_flush >= FLUSH_SECONDS:
            _flush()
            last_flush = now
        if launcher is not None and not _launcher_alive(*launcher):
            # The job is gone: stop now, before this worker writes anything more.
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(WATCH_SECONDS)


def _flush() -> None:
    global _dirty
    directory = os.environ.get(PROGRESS_ENV)
    if not directory or not _dirty:
        return
    with _lock:
        data = json.dumps(_counts)
        _dirty = False
    path = os.path.join(directory, f"{socket.gethostname()}-{os.getpid()}.json")
    try:
        atomic_write(path, data)
    except OSError:
        pass  # the staging directory is gone: the job ended; progress is best effort


def totals(directory: str) -> dict[str, int]:
    """The sum of every process's counts under ``directory``."""
    out = dict.fromkeys(COUNTERS, 0)
    try:
        names = [n for n in os.listdir(directory)
                 if n.endswith(".json") and not n.startswith(TMP_PREFIX)]
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(directory, name)) as f:
                for k, v in json.load(f).items():
                    out[k] = out.get(k, 0) + int(v)
        except (OSError, ValueError):
            continue  # being replaced right now: next tick
    return out


def launcher_env(directory: str) -> dict[str, str]:
    """The environment variables a launcher sets before starting workers."""
    from shardforge.records.manifest import _proc_start

    return {PROGRESS_ENV: directory,
            LAUNCHER_ENV: f"{os.getpid()}:{_proc_start(os.getpid()) or ''}"}


def format_line(counts: dict[str, int], seconds: float) -> str:
    rate = counts["rows_read"] / seconds if seconds > 0 else 0.0
    return (f"{counts['files_read']} files, {counts['rows_read']:,} rows read, "
            f"{counts['records_written']:,} records written, {counts['errors']:,} errors, "
            f"{rate:,.0f} rows/s, {seconds:.0f} s")


class ProgressLine:
    """A thread that prints the job's progress: one line rewritten in place on a terminal, a
    plain line every ``interval`` seconds otherwise.

    >>> with ProgressLine("out/.shardforge/staging-x/.progress"):   # doctest: +SKIP
    ...     run_the_job()
    """

    def __init__(self, directory: str, stream=None, interval: float | None = None,
                 enabled: bool = True) -> None:
        self.directory, self.stream = directory, stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 5.0)
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start = time.monotonic()

    def _print(self, final: bool = False) -> None:
        line = format_line(totals(self.directory), time.monotonic() - self.start)
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._print()

    def __enter__(self) -> ProgressLine:
        os.makedirs(self.directory, exist_ok=True)
        self.start = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="shardforge-progress-line",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self.tty:  # finish the line in place so the summary starts on a fresh one
                self._print(final=True)
