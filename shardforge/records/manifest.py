"""A job's output commits or does not exist: staging, atomic publish, the manifest, the job lock.

A ``shardforge run`` writes everything into a staging directory inside the output
(``OUT/.shardforge/staging-<job>/``) while holding ``OUT/.shardforge/lock``. Only after the job
succeeded is the output published: the previous manifest is withdrawn, the files *it lists* are
deleted (a user's files stay), the new files are renamed into place, and ``OUT/manifest.json`` is
written last, atomically. The manifest is the commit point: a directory whose manifest is missing,
or that lists a shard that is gone or changed size, or that holds a shard the manifest does not
list, is refused by every reader (:func:`verify_output`, :func:`check_shards`), with a message that
says what happened. Every path a manifest lists is checked to lie inside the output
(:func:`entry_path`: relative, no ``..``, no symbolic link on the way), by readers and by the
publish step alike, before anything is read, withdrawn or deleted.

``manifest.json`` holds every file of the output (shards with their record count, byte size and
SHA-256; indexes, schema, stats and error files with size and SHA-256), the schema's SHA-256, rows
read / written / failed, the shardforge version and the command.

Pure Python (no Beam), local filesystems: the readers import it without paying for Beam.

>>> m = verify_output("out/")              # doctest: +SKIP
>>> m.splits["train"]["records"]            # doctest: +SKIP
17987
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import posixpath
import re
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from shardforge.records import fs
from shardforge.records.layout import (
    BUDGET_FILE,
    ERRORS_DIR,
    INDEX_DIR,
    INDEX_SUFFIX,
    SCHEMA_FILE,
    SHARD_SUFFIX,
    SPLITS,
    atomic_write,
    fsync_dir,
    job_shard_name,
)

MANIFEST = "manifest.json"
STATE_DIR = ".shardforge"  # lock, staging directories, the last failed job's errors
LOCK = "lock"
# A stale lock that other jobs are taking over at the same time: look again this many times,
# this many seconds apart, before giving up.
TAKEOVER_TRIES, TAKEOVER_WAIT = 200, 0.01
FORMAT = "shardforge-manifest/1"
# Files up to this size (schema, stats, small shards) are always checked against their SHA-256;
# larger ones by size unless ``checksums=True`` (reading every shard on open would cost a pass).
ALWAYS_HASHED = 1 << 20
JOB_TAG_CHARS = 8  # hex digits of a job's tag in the names of the shards it published remotely
SHARD_RE = re.compile(rf"part-\d{{5}}-of-\d{{5}}(-[0-9a-f]{{{JOB_TAG_CHARS}}})?("
                      + "|".join(map(re.escape, sorted(SHARD_SUFFIX.values(), key=len)[::-1]))
                      + ")$")
# Names a shardforge job writes; an output written before manifests existed is replaced by these.
OWN_NAMES = (SCHEMA_FILE, "stats.json", "stats.html", "train/part-*", "eval/part-*",
             f"{ERRORS_DIR}/errors-*", f"{ERRORS_DIR}/{BUDGET_FILE}", ".index/train/part-*",
             ".index/eval/part-*")
OWN_DIRS = sorted({posixpath.dirname(p) for p in OWN_NAMES} - {""})


class OutputError(Exception):
    """An output directory that cannot be read or written as asked (the message says why)."""


class OutputLocked(OutputError):
    """Another job holds the output's lock."""


@dataclass(frozen=True)
class FileEntry:
    """One file of an output: ``path`` relative to the output, POSIX separators."""

    path: str
    bytes: int
    sha256: str
    records: int | None = None  # shards only


@dataclass
class Manifest:
    files: list[FileEntry]
    schema_sha256: str
    rows_read: int
    rows_written: int
    rows_failed: int
    version: str
    command: str
    created: str
    job: str = ""
    format: str = FORMAT
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for f in self.files:
            _check_entry(f.path)
            if f.path in seen:
                raise ValueError(f"{f.path!r} is listed twice")
            seen.add(f.path)

    @property
    def shards(self) -> list[FileEntry]:
        return [f for f in self.files if f.records is not None]

    @property
    def splits(self) -> dict[str, dict[str, int]]:
        """``{split: {"shards": n, "records": n, "bytes": n}}``."""
        out: dict[str, dict[str, int]] = {}
        for f in self.shards:
            s = out.setdefault(f.path.split("/", 1)[0], {"shards": 0, "records": 0, "bytes": 0})
            s["shards"] += 1
            s["records"] += f.records
            s["bytes"] += f.bytes
        return out

    def to_json(self) -> str:
        doc = asdict(self)
        doc["splits"] = self.splits
        return json.dumps(doc, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        doc = json.loads(text)
        doc.pop("splits", None)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {doc.get('format')!r}")
        doc["files"] = [FileEntry(**f) for f in doc["files"]]
        return cls(**doc)


# ---------------------------------------------------------------------------------------------
# Entries lie inside the output


def _check_entry(rel: object) -> None:
    """``rel`` names a file inside an output: a relative, normalized POSIX path that is not the
    manifest and not in the job state directory (raises ``ValueError`` naming it)."""
    if (not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel
            or "\0" in rel or posixpath.normpath(rel) != rel or rel.split("/")[0] == ".."):
        raise ValueError(f"entry {rel!r} is not a relative, normalized path inside the output")
    if rel == MANIFEST or rel.split("/")[0] == STATE_DIR:
        raise ValueError(f"entry {rel!r} names the output's own {rel.split('/')[0]}")


def _locate(root: str, rel: str, *, folder: bool = False) -> tuple[str, str | None]:
    """The path of entry ``rel`` under ``root`` (a file; a directory with ``folder=True``), and
    what is wrong with it (``None``: nothing)."""
    try:
        _check_entry(rel)
    except ValueError as err:
        return "", str(err)
    path = root
    parts = rel.split("/")
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return os.path.join(root, *parts), None
        file = i == len(parts) - 1 and not folder
        if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) if file else stat.S_ISDIR(mode)):
            what = "a symbolic link" if stat.S_ISLNK(mode) else (
                "a directory" if stat.S_ISDIR(mode) else "not a regular file")
            where = "/".join(parts[: i + 1])
            return path, (f"entry {rel!r}: {where} is {what} where the output has a "
                          f"{'file' if file else 'directory'}")
    return path, None


def entry_path(root: str, rel: str, *, folder: bool = False) -> str:
    """The local path of the output entry ``rel`` (as a manifest lists it) under ``root``,
    checked to lie inside ``root``: no ``..``, not absolute, and no symbolic link on the way
    (an output directory that is a link would take its files elsewhere). The file (a directory
    with ``folder=True``), when it exists, is a regular file. Raises :class:`OutputError`
    naming the entry.

    >>> entry_path("out", "train/part-00000-of-00001.tfrecord")   # doctest: +SKIP
    'out/train/part-00000-of-00001.tfrecord'
    """
    path, problem = _locate(root, rel, folder=folder)
    if problem:
        raise OutputError(f"{root}: {problem}; refusing to touch it (an output's files lie "
                          "inside it, in real directories): move it away and rerun")
    return path


# ---------------------------------------------------------------------------------------------
# Building, writing and reading a manifest


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with fs.open_read(path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _walk(root: str) -> Iterable[str]:
    """Relative POSIX paths of the files under ``root``, skipping the state directory."""
    if fs.is_remote(root):
        yield from (rel for rel in fs.walk(root) if not rel.startswith((STATE_DIR + "/", ".tmp")))
        return
    for dirpath, dirnames, filenames in os.walk(root):
        # the state directory, and scratch a job's steps remove when they are done (".tmp-…")
        dirnames[:] = sorted(d for d in dirnames if d != STATE_DIR and not d.startswith(".tmp"))
        for name in sorted(filenames):
            yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


def is_shard(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 2 and parts[0] in SPLITS and bool(SHARD_RE.match(parts[1]))


def build_manifest(root: str, *, count_records: Callable[[str], int], rows_read: int,
                   rows_failed: int, command: str, job: str = "",
                   extra: dict | None = None) -> Manifest:
    """The manifest of every file under ``root`` (a finished job's staging directory).
    ``count_records``: a shard's record count (:func:`shardforge.records.index.index_records`),
    passed in because the readers of shards sit above this module (they ask it which shards
    an output lists)."""
    from shardforge import __version__

    files = []
    for rel in _walk(root):
        if rel == MANIFEST:
            continue
        path = fs.join(root, rel)
        records = count_records(path) if is_shard(rel) else None
        files.append(FileEntry(rel, fs.size(path), sha256_file(path), records))
    schema = next((f.sha256 for f in files if f.path == SCHEMA_FILE), "")
    return Manifest(
        files=files, schema_sha256=schema, rows_read=rows_read,
        rows_written=sum(f.records for f in files if f.records is not None),
        rows_failed=rows_failed, version=__version__, command=command,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), job=job,
        extra=dict(extra or {}),
    )


def write_manifest(root: str, manifest: Manifest) -> str:
    path = os.path.join(root, MANIFEST)
    atomic_write(path, manifest.to_json().encode())
    return path


def is_job_output(root: str) -> bool:
    """Whether ``root`` is (or was meant to be) a shardforge job's output: it has a manifest, a
    ``stats.json`` or the job state directory. Plain shard directories (``ShardedWriter``, a
    schema written by hand) are not, and are read without a manifest."""
    return any(fs.exists(fs.join(root, n)) for n in (MANIFEST, "stats.json", STATE_DIR))


def _why_no_manifest(root: str) -> str:
    lock = read_lock(root)
    if lock is not None:
        return (f"a job is writing it or was killed before it published (pid {lock['pid']} on "
                f"{lock['host']}, started {lock['started']}: {lock['command']})")
    if any(n.startswith("staging-") for n in fs.listdir(fs.join(root, STATE_DIR))):
        return "the job that wrote it was killed before it published its output"
    return ("no job published it: its manifest was deleted or never written (an interrupted "
            "publish, a partial copy, or shardforge < 0.2)")


def read_manifest(root: str) -> Manifest:
    path = fs.join(root, MANIFEST)
    try:
        text = fs.read_text(path)
    except FileNotFoundError:
        raise OutputError(
            f"{root} has no {MANIFEST}: {_why_no_manifest(root)}. Its files are not a complete "
            "output; rerun the job (with --overwrite)") from None
    try:
        return Manifest.from_json(text)
    except (ValueError, TypeError, KeyError) as err:
        raise OutputError(f"{path} is not a valid shardforge manifest ({err})") from None


def verify_output(root: str, *, checksums: bool = False) -> Manifest:
    """The manifest of the job output ``root``, after checking that it is complete: every file
    it lists exists with its size (and SHA-256: always for files up to ``ALWAYS_HASHED`` bytes,
    such as the schema, for all with ``checksums=True``), and no shard it does not list sits in
    a split directory. Raises :class:`OutputError` naming what is wrong.

    >>> verify_output("out/").rows_written        # doctest: +SKIP
    20000
    """
    root = fs.absolute(root)
    m = read_manifest(root)
    problems = []
    for f in m.files:
        path, problem = (fs.join(root, f.path), None) if fs.is_remote(root) else _locate(
            root, f.path)
        if problem:
            problems.append(problem)
            continue
        try:
            size = fs.size(path)
        except FileNotFoundError:
            problems.append(f"{f.path} is missing")
            continue
        if size != f.bytes:
            problems.append(f"{f.path} has {size} bytes, the manifest says {f.bytes}")
        elif (checksums or f.bytes <= ALWAYS_HASHED) and sha256_file(path) != f.sha256:
            problems.append(f"{f.path} does not match its SHA-256 in the manifest")
    listed = {f.path for f in m.files}
    # in a bucket the next job's shards sit beside these while it publishes (publish_remote)
    for split in () if fs.is_remote(root) else SPLITS:
        for name in fs.listdir(fs.join(root, split)):
            rel = f"{split}/{name}"
            if SHARD_RE.match(name) and rel not in listed:
                problems.append(f"{rel} is not in the manifest (left by another job?)")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise OutputError(f"{root} is not the output its {MANIFEST} describes: {shown}. "
                          "Rerun the job (with --overwrite)")
    return m


def output_root(path: str) -> str | None:
    """The job output a shard, split directory, schema file or output directory belongs to, if
    any. Paths inside a job's state directory (its staging) belong to none: the job itself reads
    them before it publishes."""
    path = fs.absolute(path)
    if STATE_DIR in path.replace(os.sep, "/").split("/"):
        return None
    d = path if fs.isdir(path) else fs.dirname(path)
    for candidate in (d, fs.dirname(d)):
        if is_job_output(candidate):
            return candidate
    return None


def check_readable(path: str) -> Manifest | None:
    """What every reader calls on the path it was given (an output directory, a split
    directory, a shard, ``schema.pbtxt``): if it is part of a job output, that output must pass
    :func:`verify_output` and a shard must be listed in its manifest. Returns the manifest, or
    ``None`` for paths outside any job output (plain shard directories, a hand-written schema).

    >>> check_readable("out/train")          # doctest: +SKIP
    Manifest(files=[...], ...)
    """
    root = output_root(path)
    if root is None:
        return None
    m = verify_output(root)
    rel = fs.relative(path, root)
    if is_shard(rel) and rel not in {f.path for f in m.files}:
        raise OutputError(f"{path} is not listed in {fs.join(root, MANIFEST)}: it is not "
                          "part of that output (left by another job or copied in)")
    return m


def listed_shards(directory: str) -> list[str] | None:
    """The shards of a split directory in a bucket as its output's manifest lists them (what
    readers read there: a listing also shows the shards of a job publishing over it), or
    ``None`` when ``directory`` is local, or not a split of a committed job output."""
    if not fs.is_remote(directory):
        return None
    directory = fs.absolute(directory)
    root = fs.dirname(directory)
    split = fs.basename(directory)
    if split not in SPLITS or not fs.exists(fs.join(root, MANIFEST)):
        return None
    try:
        m = read_manifest(root)
    except OutputError:
        return None  # the readers' own check says what is wrong
    return sorted(fs.join(root, f.path) for f in m.shards if f.path.split("/")[0] == split)


def check_shards(paths: Sequence[str]) -> None:
    """:func:`check_readable` for every shard of a reader (each output verified once, each
    folder's output looked up once: on a bucket every lookup is requests)."""
    verified: dict[str, set[str]] = {}
    roots: dict[str, str | None] = {}  # a shard's folder -> its output
    for p in paths:
        folder = fs.dirname(fs.absolute(p))
        if folder not in roots:
            roots[folder] = output_root(p)
        root = roots[folder]
        if root is None:
            continue
        if root not in verified:
            verified[root] = {f.path for f in verify_output(root).files}
        rel = fs.relative(p, root)
        if rel not in verified[root]:
            raise OutputError(f"{p} is not listed in {fs.join(root, MANIFEST)}: it is not "
                              "part of that output (left by another job or copied in)")


# ---------------------------------------------------------------------------------------------
# The job lock


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _proc_start(pid)
    return start is None or now is None or now == start


def read_lock(root: str) -> dict | None:
    try:
        return json.loads(fs.read_bytes(fs.join(root, STATE_DIR, LOCK)))
    except (OSError, ValueError):
        return None


class JobLock:
    """``OUT/.shardforge/lock``: the one job writing ``OUT``. A second job fails fast naming the
    first; a lock whose process is dead (same host) is stale and taken over, by one job only
    even when many race for it (a takeover never removes another job's fresh lock).

    >>> with JobLock("out/", "shardforge run ...") as lock:   # doctest: +SKIP
    ...     staging = lock.staging
    """

    def __init__(self, root: str, command: str) -> None:
        self.root, self.command = os.fspath(root), command
        self.path = os.path.join(self.root, STATE_DIR, LOCK)
        self.job = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        self.staging = os.path.join(self.root, STATE_DIR, f"staging-{self.job}")
        self._held = False

    def acquire(self) -> JobLock:
        state = os.path.dirname(self.path)
        if os.path.islink(state):
            raise OutputError(f"{state} is a symbolic link: a job's lock and staging lie inside "
                              "its output; remove the link and rerun")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "pid_start": _proc_start(os.getpid()), "job": self.job}
        tmp = f"{self.path}.{self.job}"
        while True:
            os.makedirs(state, exist_ok=True)
            try:
                with open(tmp, "x", encoding="utf-8") as f:
                    json.dump(info, f)
                break
            except FileNotFoundError:
                continue  # a job that just finished removed the empty state directory
        try:
            for _ in range(TAKEOVER_TRIES):
                try:
                    os.link(tmp, self.path)  # atomic, fails if a lock exists: never half-written
                    self._held = True
                    break
                except FileExistsError:
                    other = read_lock(self.root)
                    if other is None:
                        continue  # removed meanwhile: try again
                    if not self._is_stale(other):
                        raise OutputLocked(
                            f"{self.root} is being written by another job (pid "
                            f"{other.get('pid')} on {other.get('host')}, started "
                            f"{other.get('started')}: {other.get('command')}). Wait for it, or "
                            f"if it is gone, delete {self.path}") from None
                    self._remove_stale(other)
        finally:
            os.remove(tmp)
        if not self._held:
            raise OutputLocked(f"could not take {self.path}: other jobs are taking it over (if "
                               f"none is, delete {self.path} and {self.path}.takeover-*)")
        os.makedirs(self.staging)
        return self

    def _remove_stale(self, stale: dict) -> None:
        """Remove the lock file if it still is the dead job's ``stale`` lock, never another
        job's fresh one. The claim, a second name for whatever file the lock is right now,
        can be created by one job only, and only that job removes the stale lock: so between
        reading the claim and removing the lock nobody else can have replaced it."""
        claim = f"{self.path}.takeover-{stale.get('job') or stale.get('pid')}"
        try:
            os.link(self.path, claim)
        except FileNotFoundError:
            return  # removed meanwhile: try to take it
        except FileExistsError:
            time.sleep(TAKEOVER_WAIT)  # another job is taking it over right now
            return
        try:
            with open(claim, encoding="utf-8") as f:
                if json.load(f) != stale:
                    return  # another job's lock now: look again
            os.remove(self.path)
        finally:
            os.remove(claim)
        # the killed job's staging: never published, safe to drop
        shutil.rmtree(os.path.join(self.root, STATE_DIR, f"staging-{stale.get('job')}"),
                      ignore_errors=True)

    def _is_stale(self, other: dict) -> bool:
        if not other:  # unreadable: the lock was written whole (link), so it is being removed
            return False
        return other.get("host") == socket.gethostname() and not _alive(
            int(other["pid"]), other.get("pid_start"))

    def release(self) -> None:
        if self._held:
            shutil.rmtree(self.staging, ignore_errors=True)
            if (read_lock(self.root) or {}).get("job") == self.job:
                os.remove(self.path)
            with contextlib.suppress(OSError):  # not empty: another job is starting
                os.rmdir(os.path.dirname(self.path))
            self._held = False

    def publish(self, manifest: Manifest, *, hook=None) -> Published:
        """:func:`publish` this job's staging directory into its output."""
        return publish(self.staging, self.root, manifest, hook=hook)

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------
# Overwrite and publish


def previous_output(root: str) -> tuple[list[str], bool]:
    """Files of a previous job in ``root`` (relative paths) and whether a manifest listed them.
    Without a manifest (an older shardforge, an interrupted publish) shardforge's own file names
    count as the previous output. A manifest that cannot be read, or lists a path outside the
    output, is refused: the output it describes is not known."""
    if not fs.isdir(root):
        return [], False
    path = fs.join(root, MANIFEST)
    if fs.exists(path) if fs.is_remote(root) else os.path.lexists(path):
        try:
            return [f.path for f in read_manifest(root).files] + [MANIFEST], True
        except OutputError as err:
            raise OutputError(f"{err}; refusing to replace an output whose manifest cannot be "
                              f"trusted: delete {path} (then --overwrite replaces shardforge's "
                              "own file names only), or the output") from None
    own = [rel for rel in _walk(root)
           if any(fnmatch.fnmatchcase(rel, pat) for pat in OWN_NAMES) or rel == MANIFEST]
    return own, False


def _check_replaceable(root: str, old: Iterable[str], new: Iterable[str]) -> None:
    """Every file ``publish`` would delete (``old``) or put in place (``new``, and the folders
    a job writes) lies inside ``root``, through real directories: raises :class:`OutputError`
    naming the first that does not, before anything is touched."""
    for rel in [*old, *new]:
        if rel != MANIFEST:
            entry_path(root, rel)
    for folder in OWN_DIRS:
        entry_path(root, folder, folder=True)


def check_writable(root: str, overwrite: bool) -> None:
    """Refuse to write into a previous job's output unless ``overwrite``, and to write through
    a path that leaves the output (see :func:`entry_path`)."""
    files, listed = previous_output(root)
    _check_replaceable(root, files, ())
    if not listed and all(f.startswith("errors/") for f in files):
        return  # only the errors a failed job left for the user: replaced without asking
    if not overwrite:
        shown = ", ".join(sorted({f.split("/", 1)[0] for f in files}))
        raise OutputError(f"{root} already holds a job's output ({shown}); pass --overwrite "
                          "(overwrite=True) to replace it once the new job succeeds")


@dataclass
class Published:
    """What publishing changed: files replaced or removed from the previous output, and files
    in the output that no job wrote (kept)."""

    manifest: Manifest
    removed: list[str]
    kept: list[str]


def publish(staging: str, root: str, manifest: Manifest, *, hook=None) -> Published:
    """Move a finished job's ``staging`` directory into ``root`` and commit it.

    Order: withdraw the previous manifest (from here until the end readers refuse the output),
    delete only the files the previous output consists of, rename the new files in, write the
    new manifest last. ``hook(stage)`` is called between steps (tests pause there to kill).
    """
    hook = hook or (lambda stage: None)
    old, _ = previous_output(root)
    new = {f.path for f in manifest.files}
    _check_replaceable(root, old, new)
    for rel in new:
        src, problem = _locate(staging, rel)
        if problem or not os.path.exists(src):
            raise OutputError(f"{staging}: {problem or f'{rel} is missing'}; nothing was "
                              "published")
    old_manifest = os.path.join(root, MANIFEST)
    if os.path.exists(old_manifest):
        os.replace(old_manifest, os.path.join(staging, "previous-" + MANIFEST))
    hook("publish_withdrawn")
    for rel in old:
        if rel != MANIFEST and rel not in new:
            path = os.path.join(root, *rel.split("/"))
            if os.path.exists(path):
                os.remove(path)
    for rel in sorted(new):
        dst = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(os.path.join(staging, *rel.split("/")), dst)
    for d in {os.path.dirname(rel) for rel in old} - {os.path.dirname(rel) for rel in new} - {""}:
        path = os.path.join(root, *d.split("/"))
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    for d in {os.path.dirname(rel) for rel in new} | {""}:
        fsync_dir(os.path.join(root, *d.split("/")) if d else root)
    hook("publish_moved")
    write_manifest(root, manifest)
    kept = [rel for rel in _walk(root) if rel not in new and rel != MANIFEST]
    return Published(manifest, sorted(set(old) - new - {MANIFEST}), kept)


# ---------------------------------------------------------------------------------------------
# Object stores: no rename, so the commit is the manifest replaced with a precondition

# A remote job rewrites its lock every HEARTBEAT_SECONDS; a lock silent for LEASE_SECONDS (by
# the clock of the job that looks) is a dead job's and is taken over. Ten beats to a lease: a
# job whose beats fail for a while (a network outage) keeps its lock.
HEARTBEAT_SECONDS = 60
LEASE_SECONDS = 10 * 60


class RemoteJobLock:
    """``ROOT/.shardforge/lock`` on an object store: the one job writing ``ROOT``, as
    :class:`JobLock` is locally. Created only where none is (GCS ``ifGenerationMatch=0``, S3
    ``If-None-Match: *``); while the job runs a thread rewrites it every ``heartbeat`` seconds
    with a precondition on the version it wrote last, so a live job is never taken over. A lock
    whose last beat is older than ``lease`` seconds, or whose process is dead on this host, is
    taken over by one job only (a precondition on the stale lock's version); a job that finds
    its lock taken (its beats stopped for a lease) publishes nothing.

    >>> with RemoteJobLock("gs://b/out", "shardforge run ...") as lock:   # doctest: +SKIP
    ...     staging = lock.staging
    """

    def __init__(self, root: str, command: str, *, heartbeat: float = HEARTBEAT_SECONDS,
                 lease: float = LEASE_SECONDS) -> None:
        self.root, self.command = root, command
        self.path = fs.join(root, STATE_DIR, LOCK)
        host, pid = socket.gethostname(), os.getpid()
        self.job = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{host}-{pid}"
        self.staging = fs.join(root, STATE_DIR, f"staging-{self.job}")
        self.heartbeat, self.lease = heartbeat, lease
        self._info = {"pid": pid, "host": host, "command": command, "job": self.job,
                      "pid_start": _proc_start(pid), "lease_seconds": lease,
                      "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken_by: str | None = None  # the job that took this job's lock over

    def _beat_bytes(self) -> bytes:
        return json.dumps({**self._info, "beat": time.time()}).encode()

    def _is_stale(self, other: dict) -> bool:
        if other.get("host") == socket.gethostname() and not _alive(
                int(other.get("pid", 0)), other.get("pid_start")):
            return True
        # (a lock of shardforge before heartbeats has only the time it was taken)
        last = float(other.get("beat", other.get("taken", 0)))
        return time.time() - last > float(other.get("lease_seconds", self.lease))

    def acquire(self) -> RemoteJobLock:
        for _ in range(TAKEOVER_TRIES):
            try:
                fs.write_bytes(self.path, self._beat_bytes(), if_absent=True)
                self._version = fs.version(self.path)
                break
            except FileExistsError:
                seen = fs.version(self.path)  # before the content: a newer lock fails the take
                other = read_lock(self.root)
                if seen is None or other is None:
                    continue  # released meanwhile: create it
                if not self._is_stale(other):
                    last = time.strftime("%H:%M:%S UTC", time.gmtime(float(other.get("beat", 0))))
                    raise OutputLocked(
                        f"{self.root} is being written by another job ({other.get('job')}, pid "
                        f"{other.get('pid')} on {other.get('host')}, started "
                        f"{other.get('started')}: {other.get('command')}; last heartbeat "
                        f"{last}). Wait for it; a job silent for "
                        f"{int(other.get('lease_seconds', self.lease))} s is taken over") \
                        from None
                try:
                    self._version = fs.replace_bytes(self.path, self._beat_bytes(), seen)
                except fs.PreconditionFailed:
                    continue  # another job took it first, or it beat: look again
                self._clean_after(other.get("job", ""))
                break
        else:
            raise OutputLocked(f"could not take {self.path}: other jobs are taking it over")
        self._thread = threading.Thread(target=self._beat, name="shardforge-lock-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def _clean_after(self, dead: str) -> None:
        """Delete what the dead job ``dead`` left: the files only the manifest it replaced
        listed (when it died after its commit), the shards it copied in under its own names but
        never committed (no manifest lists them), and its staging objects."""
        staging = fs.join(self.root, STATE_DIR, f"staging-{dead}")
        current = read_manifest(self.root) if fs.exists(fs.join(self.root, MANIFEST)) else None
        listed = {f.path for f in current.files} if current else set()
        previous = fs.join(staging, "previous-" + MANIFEST)
        if current and current.job == dead and fs.exists(previous):
            # it committed and died before deleting what only the previous manifest listed
            for f in Manifest.from_json(fs.read_text(previous)).files:
                if f.path not in listed:
                    fs.delete(fs.join(self.root, f.path))
        for rel in fs.walk(staging):
            fs.delete(fs.join(staging, rel))
        tag = job_tag(dead)
        for folder in [*SPLITS, *(f"{INDEX_DIR}/{split}" for split in SPLITS)]:
            for name in fs.listdir(fs.join(self.root, folder)):
                rel = f"{folder}/{name}"
                if f"-{tag}." in name and published_path(rel.replace(f"-{tag}.", "."),
                                                          tag) == rel and rel not in listed:
                    fs.delete(fs.join(self.root, rel))

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._version = fs.replace_bytes(self.path, self._beat_bytes(), self._version)
            except fs.PreconditionFailed:
                self.taken_by = (read_lock(self.root) or {}).get("job", "another job")
                return
            except OSError:
                continue  # the store is unreachable past the retries: the next beat tries again

    def publish(self, manifest: Manifest, *, hook=None) -> Published:
        """:func:`publish_remote` this job's staging, unless its lock was taken over."""
        if self.taken_by:
            raise OutputLocked(f"{self.path} was taken over by {self.taken_by} (this job's "
                               f"heartbeats stopped for {int(self.lease)} s); nothing was "
                               "published: rerun the job")
        return publish_remote(self.staging, self.root, manifest, hook=hook)

    def release(self) -> None:
        """Stop the heartbeat; drop the job's staging objects and its lock (if still its)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        for rel in fs.walk(self.staging):
            fs.delete(fs.join(self.staging, rel))
        if not self.taken_by and fs.version(self.path) == self._version:
            fs.delete(self.path)

    def __enter__(self) -> RemoteJobLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def job_lock(root: str, command: str) -> JobLock | RemoteJobLock:
    """The lock of a job writing ``root``: :class:`RemoteJobLock` for a bucket URL, else
    :class:`JobLock`. Both give ``staging`` (where the job writes) and ``publish(manifest)``."""
    return RemoteJobLock(root, command) if fs.is_remote(root) else JobLock(root, command)


def job_tag(job: str) -> str:
    """The tag of a job's shard names in a remote output (hex, :data:`JOB_TAG_CHARS`)."""
    return hashlib.sha256(job.encode()).hexdigest()[:JOB_TAG_CHARS]


def published_path(rel: str, tag: str) -> str:
    """Where a staged file lands in a remote output: shards and their indexes under names
    unique to the job (``tag``), everything else under its own name."""
    parts = rel.split("/")
    if is_shard(rel) or (len(parts) == 3 and parts[0] == INDEX_DIR
                         and is_shard("/".join(parts[1:]).removesuffix(INDEX_SUFFIX))):
        return "/".join([*parts[:-1], job_shard_name(parts[-1], tag)])
    return rel


def publish_remote(staging: str, root: str, manifest: Manifest, *, hook=None) -> Published:
    """Commit a finished job's ``staging`` prefix into the bucket prefix ``root``, readable
    throughout as the previous output or the new one:

    1. copy the new shards and their indexes in (server-side) under names unique to the job
       (:func:`published_path`): nothing a reader of the previous manifest streams is touched;
    2. copy the small files (schema, stats, errors…) in under their own names;
    3. replace the manifest, with a precondition on the version read before step 1 (GCS
       ``ifGenerationMatch``, S3 ``If-Match`` on its ETag; created with ``ifGenerationMatch=0``
       / ``If-None-Match: *`` when there was none): a job that lost a race publishes nothing;
    4. delete what only the previous manifest listed.

    Step 2 replaces small files a reader of the previous manifest checks by SHA-256: a reader
    that opens the output during it, or a job killed in it, finds them changed and is refused
    (rerun with ``--overwrite``); readers that had opened the output keep streaming its shards.
    Readers that opened the previous output stream until step 4 deletes its shards.
    ``hook(stage)`` is called after each step (tests stop there)."""
    hook = hook or (lambda stage: None)
    path = fs.join(root, MANIFEST)
    old, _ = previous_output(root)
    old_version = fs.version(path)
    if old_version is not None:  # what step 4 deletes, for a taker if this job dies first
        fs.copy(path, fs.join(staging, "previous-" + MANIFEST))
    names = {f.path: published_path(f.path, job_tag(manifest.job)) for f in manifest.files}
    new = Manifest(**{**asdict(manifest), "files": [
        FileEntry(**{**asdict(f), "path": names[f.path]}) for f in manifest.files]})
    unique = sorted(rel for rel in names if names[rel] != rel)
    for rel in unique:
        fs.copy(fs.join(staging, rel), fs.join(root, names[rel]))
    hook("publish_copied")
    for rel in sorted(set(names) - set(unique)):
        fs.copy(fs.join(staging, rel), fs.join(root, rel))
    hook("publish_small")
    text = new.to_json().encode()
    try:
        if old_version is None:
            fs.write_bytes(path, text, if_absent=True)
        else:
            fs.replace_bytes(path, text, old_version)
    except FileExistsError:
        for rel in unique:
            fs.delete(fs.join(root, names[rel]))
        raise OutputError(f"{path} was replaced by another job while this one published (a "
                          "lock taken over?); nothing of this job's is listed: rerun it with "
                          "--overwrite") from None
    hook("publish_committed")
    gone = sorted(set(old) - set(names.values()) - {MANIFEST})
    for rel in gone:
        fs.delete(fs.join(root, rel))
    return Published(new, gone, [])
