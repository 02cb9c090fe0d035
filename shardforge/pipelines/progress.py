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
module starts nothing. The other way round, :class:`WorkerWatch` (part of
:class:`ProgressLine`) fails the launcher's job as soon as one of its local Beam worker processes
dies, naming the exit cause (a signal or an exit code), and kills the job's other workers; left
to itself Beam may wait for a dead worker forever.

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
import re
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
    global _thread, _dirty
    if _thread is not None or (_launcher() is None and not os.environ.get(PROGRESS_ENV)):
        return
    with _lock:
        if _thread is None:
            _dirty = True  # the first flush registers this worker with the launcher's watch
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


class WorkerDied(RuntimeError):
    """A Beam worker process of the job died (``returncode``: its shell's exit status, 128 + N
    for signal N, or ``-N``)."""

    def __init__(self, returncode: int) -> None:
        self.returncode = returncode
        super().__init__(f"a Beam worker process died ({describe_exit(returncode)}); the job "
                         "was stopped and its other workers killed. An OOM kill or someone's "
                         "kill is the usual cause; the output was not published")

    def __reduce__(self):
        return type(self), (self.returncode,)


def describe_exit(returncode: int) -> str:
    """An exit status in words: a signal's name (from ``-N`` or a shell's ``128 + N``) or the
    exit code.

    >>> describe_exit(137), describe_exit(-11), describe_exit(3)
    ('killed by SIGKILL', 'killed by SIGSEGV', 'exit code 3')
    """
    signum = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    try:
        return f"killed by {signal.Signals(signum).name}"
    except ValueError:
        return f"exit code {returncode}"


# Beam's local runner reports a worker's end only as this exception of the thread that started
# it (``SubprocessSdkWorker.run``), which nothing collects: the launcher would wait on.
_WORKER_EXIT = re.compile(r"Worker subprocess exited with return code (-?\d+)")


class _Stop(BaseException):
    """Raised in the launcher's main thread by the watch (not an ``Exception``: Beam's own
    handlers must not swallow it); :class:`WorkerWatch` turns it into :class:`WorkerDied`."""


class WorkerWatch:
    """In the launcher, around a job: when one of its local Beam worker processes dies, stop the
    job at once with :class:`WorkerDied` (its exit cause) and kill the job's other workers
    (those that flushed progress to ``directory``). A no-op outside the main thread.

    >>> with WorkerWatch("out/.shardforge/staging-x/.progress"):   # doctest: +SKIP
    ...     run_the_job()
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.died: WorkerDied | None = None
        self._active = False

    def _on_thread_error(self, args) -> None:
        found = _WORKER_EXIT.search(str(args.exc_value))
        if found is None or self.died is not None:
            self._previous_hook(args)
            return
        self.died = WorkerDied(int(found.group(1)))
        kill_workers(self.directory)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def _on_signal(self, signum, frame) -> None:
        if self.died is not None:
            raise _Stop()

    def __enter__(self) -> WorkerWatch:
        if threading.current_thread() is threading.main_thread():
            self._active = True
            self._previous_hook = threading.excepthook
            self._previous_signal = signal.signal(signal.SIGUSR1, self._on_signal)
            threading.excepthook = self._on_thread_error
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._active:
            threading.excepthook = self._previous_hook
            signal.signal(signal.SIGUSR1, self._previous_signal)
        if self.died is None or (exc_type is not None and issubclass(exc_type, KeyboardInterrupt)):
            return
        if self.died.returncode in (-signal.SIGINT, 128 + signal.SIGINT):
            raise KeyboardInterrupt  # Ctrl-C reached the workers (same process group) first
        raise self.died from None  # whatever the runner made of the stop


def kill_workers(directory: str) -> None:
    """SIGKILL every other live process of this host that flushed progress to ``directory``
    (the job's workers)."""
    prefix = f"{socket.gethostname()}-"
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):-len(".json")] if name.startswith(prefix) and name.endswith(
            ".json") else ""
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass  # gone already


class ProgressLine:
    """A thread that prints the job's progress: one line rewritten in place on a terminal, a
    plain line every ``interval`` seconds otherwise. It also watches the job's workers
    (:class:`WorkerWatch`), whether or not it prints.

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
        self.watch = WorkerWatch(directory)

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
        self.watch.__enter__()
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
        self.watch.__exit__(exc_type, *exc)
