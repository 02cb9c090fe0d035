"""The one filesystem layer: local paths and object-store URLs (``gs://``, ``s3://``) alike.

Every reader in ``records/`` and ``training/`` and the commit of a job's output go through
these functions, so a path may be ``out/train``, ``gs://bucket/out/train`` or
``s3://bucket/out/train``. Local paths use the OS directly (``pread``, ``os.link``, atomic
rename); URLs use fsspec with gcsfs / s3fs (chosen over obstore because Beam's and the
ecosystem's readers already speak fsspec, its exclusive-create maps onto both stores'
preconditions, and it is pure Python: nothing to build).

Remote reads are ranged: :func:`read_range` is one ``GET`` with a ``Range`` header, retried with
backoff on throttling (429), server errors (5xx) and dropped connections; the retry asks again
for the whole range, so a read is whole or raises. :data:`STATS` counts requests and bytes per
process (what ``benchmarks/remote_bench.py`` reports).

Credentials the ecosystem's usual way: ``GOOGLE_APPLICATION_CREDENTIALS`` / ADC for ``gs://``
(``STORAGE_EMULATOR_HOST`` for an emulator, then anonymous), the AWS environment and profile
chain for ``s3://`` (``AWS_ENDPOINT_URL`` for an emulator or another S3).

>>> read_range("gs://bucket/out/train/part-00000-of-00002.tfrecord", 0, 12)  # doctest: +SKIP
b'...'
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import BinaryIO

import google_crc32c

REMOTE_SCHEMES = ("gs", "gcs", "s3")
RETRIES = 8  # attempts for one request (backoff doubles from RETRY_DELAY up to RETRY_MAX_DELAY)
RETRY_DELAY = 0.05
RETRY_MAX_DELAY = 4.0
READ_CHUNK = 8 << 20  # bytes per request when a remote file is read front to back


class RemoteAccessError(OSError):
    """An object store refused us for want of credentials (the message says how to give some)."""


@dataclasses.dataclass
class Stats:
    """Remote data requests (ranged or whole ``GET`` s) and the bytes they returned, metadata
queries, and retries, by this process (not retries inside the client library),
    and reads a :class:`BlockCache` answered (``cache_hits``) or refused as damaged
    (``cache_refused``). Safe to update from read-ahead threads."""

    requests: int = 0
    bytes: int = 0
    metadata: int = 0  # existence, size and listing queries (gcsfs may answer some from memory)
    retries: int = 0
    cache_hits: int = 0
    cache_refused: int = 0

    def add(self, **counts: int) -> None:
        with _STATS_LOCK:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def reset(self) -> None:
        with _STATS_LOCK:
            for f in dataclasses.fields(self):
                setattr(self, f.name, 0)


_STATS_LOCK = threading.Lock()
STATS = Stats()


def scheme(path: str | os.PathLike) -> str:
    """``"gs"``, ``"s3"``… for a URL, ``""`` for a local path (``file://`` is local)."""
    p = os.fspath(path)
    return p.split("://", 1)[0].lower() if "://" in p and not p.startswith("file://") else ""


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an object-store URL."""
    return scheme(path) != ""


def _local(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    return p[len("file://"):] if p.startswith("file://") else p


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/…``: ``/`` for URLs, ``os.path.join`` for local paths."""
    b = os.fspath(base)
    if not is_remote(b):
        return os.path.join(_local(b), *parts)
    return "/".join([b.rstrip("/"), *(p.strip("/") for p in parts)])


def dirname(path: str | os.PathLike) -> str:
    """The folder ``path`` is in (a URL keeps its scheme and bucket)."""
    p = os.fspath(path)
    return p.rstrip("/").rsplit("/", 1)[0] if is_remote(p) else os.path.dirname(_local(p))


def basename(path: str | os.PathLike) -> str:
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1]


def absolute(path: str | os.PathLike) -> str:
    """A local path made absolute; a URL without a trailing ``/``."""
    p = os.fspath(path)
    return p.rstrip("/") if is_remote(p) else os.path.abspath(_local(p))


def relative(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root``, POSIX separators (how a manifest names files)."""
    p, r = absolute(path), absolute(root)
    if is_remote(p):
        return p[len(r):].lstrip("/")
    return os.path.relpath(p, r).replace(os.sep, "/")


# ---------------------------------------------------------------------------------------------
# The remote filesystems


_FILESYSTEMS: dict[tuple[int, str], object] = {}


def filesystem(path: str | os.PathLike):
    """The fsspec filesystem of a URL (one per scheme and process: clients do not survive a
    fork)."""
    s = scheme(path)
    key = (os.getpid(), s)
    fs = _FILESYSTEMS.get(key)
    if fs is None:
        import fsspec

        if s in ("gs", "gcs"):
            # gcsfs >= 2026.1 first asks the bucket's layout over gRPC, which emulators do not
            # serve (it retries for minutes): the JSON API alone, unless a user asks otherwise
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
            # an emulator needs no credentials; else ADC / GOOGLE_APPLICATION_CREDENTIALS
            anon = os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default")
            fs = fsspec.filesystem("gcs", token="anon" if anon else None, skip_instance_cache=True)
        elif s == "s3":
            fs = fsspec.filesystem("s3", skip_instance_cache=True)
        else:
            raise ValueError(f"{path}: unsupported scheme {s!r}: expected a local path, gs:// "
                             "or s3://")
        _FILESYSTEMS[key] = fs
    return fs


def _credentials_error(path: str, err: BaseException) -> RemoteAccessError:
    how = ("run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS "
           "(STORAGE_EMULATOR_HOST for an emulator)" if scheme(path) in ("gs", "gcs") else
           "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE (AWS_ENDPOINT_URL for "
           "an emulator or another S3)")
    return RemoteAccessError(f"{path}: no credentials that work ({err}); {how}")


def _transient(err: BaseException) -> bool:
    """429, 5xx, timeouts and dropped connections: worth asking again."""
    if isinstance(err, (FileNotFoundError, FileExistsError, IsADirectoryError, ValueError,
                        RemoteAccessError)):
        return False
    code = getattr(err, "code", None) or getattr(err, "status", None)
    if isinstance(code, int):
        return code == 429 or code >= 500 or code == 408
    status = getattr(getattr(err, "response", None), "get", lambda *_: None)(
        "ResponseMetadata") or {}
    if isinstance(status, dict) and status.get("HTTPStatusCode"):
        c = int(status["HTTPStatusCode"])
        return c == 429 or c >= 500
    return isinstance(err, (OSError, ConnectionError, TimeoutError)) or any(
        k in type(err).__name__ for k in ("Connection", "Timeout", "Payload", "Disconnect",
                                          "Protocol", "EndpointConnection", "ClientError"))


def _call(path: str, fn: Callable[[], object]) -> object:
    """``fn()`` retried with exponential backoff and jitter on transient errors."""
    delay = RETRY_DELAY
    for attempt in range(RETRIES):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - sorted by _transient
            if "Credentials" in type(err).__name__ or "credentials" in str(err).lower():
                raise _credentials_error(path, err) from err
            if attempt + 1 == RETRIES or not _transient(err):
                raise
            STATS.add(retries=1)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, RETRY_MAX_DELAY)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Queries


def _meta(path: str, fn: Callable[[], object]) -> object:
    STATS.add(metadata=1)
    return _call(path, fn)


def stat(path: str | os.PathLike) -> tuple[int, str]:
    """``(size, version)`` of a file: the version changes whenever the object is rewritten (GCS's
    generation, S3's ETag; locally the modification time in ns and the inode). One query."""
    p = os.fspath(path)
    if not is_remote(p):
        st = os.stat(_local(p))
        return st.st_size, f"{st.st_mtime_ns}-{st.st_ino}"
    info = _meta(p, lambda: filesystem(p).info(p))
    version = next((str(info[k]) for k in ("generation", "ETag", "etag", "mtime", "updated")
                    if info.get(k)), "")
    return int(info["size"]), version


def exists(path: str | os.PathLike) -> bool:
    """Whether a file (or, remotely, an object or a prefix) is at ``path``."""
    p = os.fspath(path)
    if not is_remote(p):
        return os.path.exists(_local(p))
    return bool(_meta(p, lambda: filesystem(p).exists(p)))


def isfile(path: str | os.PathLike) -> bool:
    p = os.fspath(path)
    if not is_remote(p):
        return os.path.isfile(_local(p))
    return bool(_meta(p, lambda: filesystem(p).isfile(p)))


def isdir(path: str | os.PathLike) -> bool:
    """A local directory, or a prefix that holds objects."""
    p = os.fspath(path)
    if not is_remote(p):
        return os.path.isdir(_local(p))
    return bool(_meta(p, lambda: filesystem(p).isdir(p)))


def size(path: str | os.PathLike) -> int:
    """Bytes in the file (FileNotFoundError when there is none)."""
    p = os.fspath(path)
    if not is_remote(p):
        return os.path.getsize(_local(p))
    return int(_meta(p, lambda: filesystem(p).size(p)))


def listdir(path: str | os.PathLike) -> list[str]:
    """Sorted names of the files and folders directly in ``path`` (none when it is absent)."""
    p = os.fspath(path)
    if not is_remote(p):
        return sorted(os.listdir(_local(p))) if os.path.isdir(_local(p)) else []
    fs = filesystem(p)
    try:
        entries = _meta(p, lambda: fs.ls(p, detail=False, refresh=True))
    except FileNotFoundError:
        return []
    return sorted({basename(e) for e in entries if e.rstrip("/") != p.split("://", 1)[1]})


def files(path: str | os.PathLike) -> list[str]:
    """Sorted names of the files (not folders) directly in ``path``: one listing request for a
    URL."""
    p = os.fspath(path)
    if not is_remote(p):
        return [n for n in listdir(p) if os.path.isfile(os.path.join(_local(p), n))]
    fs = filesystem(p)
    try:
        entries = _meta(p, lambda: fs.ls(p, detail=True, refresh=True))
    except FileNotFoundError:
        return []
    return sorted(basename(e["name"]) for e in entries if e.get("type") == "file")


def walk(root: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of every file under ``root``."""
    r = os.fspath(root)
    if not is_remote(r):
        out = []
        for dirpath, _, filenames in os.walk(_local(r)):
            out += [relative(os.path.join(dirpath, n), r) for n in filenames]
        return sorted(out)
    fs = filesystem(r)
    bare = r.split("://", 1)[1].rstrip("/")
    try:
        found = _meta(r, lambda: fs.find(r, withdirs=False))
    except FileNotFoundError:
        return []
    return sorted(f[len(bare) + 1:] for f in found if f.startswith(bare + "/"))


# ---------------------------------------------------------------------------------------------
# Reads


def read_range(path: str | os.PathLike, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a file (fewer at its end): one request for a URL."""
    p = os.fspath(path)
    if not is_remote(p):
        with open(_local(p), "rb") as f:
            return os.pread(f.fileno(), end - start, start)
    if end <= start:
        return b""
    data = _call(p, lambda: filesystem(p).cat_file(p, start=start, end=end))
    STATS.add(requests=1, bytes=len(data))
    return data


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file."""
    p = os.fspath(path)
    if not is_remote(p):
        with open(_local(p), "rb") as f:
            return f.read()
    data = _call(p, lambda: filesystem(p).cat_file(p))
    STATS.add(requests=1, bytes=len(data))
    return data


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


class Ranges:
    """Positional reads of one file: ``pread(n, pos)``. Local files keep one descriptor; a URL
    makes one ranged request per call, less what :meth:`keep` holds (the ends of a shard its
    index check read: never asked for twice) and what ``cache`` (a :class:`BlockCache`) has.
    Picklable (a descriptor reopens lazily; kept bytes are dropped). Thread-safe."""

    def __init__(self, path: str | os.PathLike, cache: BlockCache | None = None) -> None:
        self.path = os.fspath(path)
        self.cache = cache if is_remote(self.path) else None
        self._fd: int | None = None
        self._stat: tuple[int, str] | None = None
        self._kept: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size_version()[0]

    def _size_version(self) -> tuple[int, str]:
        if self._stat is None:
            if is_remote(self.path):
                self._stat = stat(self.path)
            else:
                self._stat = (os.fstat(self._local_fd()).st_size, "")
        return self._stat

    def _local_fd(self) -> int:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(_local(self.path), os.O_RDONLY)
            return self._fd

    def keep(self, pos: int, data: bytes) -> None:
        """Hold ``data`` (the file's bytes at ``pos``) to answer later reads of them (remote
        only: a local read costs no request)."""
        if is_remote(self.path) and data:
            self._kept.append((pos, data))

    def pread(self, n: int, pos: int) -> bytes:
        if n <= 0:
            return b""
        if not is_remote(self.path):
            return os.pread(self._local_fd(), n, pos)
        n = min(n, self.size - pos)  # a range past the end is an error to a store
        if n <= 0:
            return b""
        lo, hi = pos, pos + n
        head = tail = b""
        for at, data in self._kept:  # answer the ends that are kept; read only the middle
            a, b = max(lo, at), min(hi, at + len(data))
            if a < b and a == lo:
                head, lo = head + data[a - at : b - at], b
            elif a < b and b == hi:
                tail, hi = data[a - at : b - at] + tail, a
        return head + (self._fetch(lo, hi) if lo < hi else b"") + tail

    def _fetch(self, start: int, end: int) -> bytes:
        if self.cache is None:
            return read_range(self.path, start, end)
        key = (self.path, *self._size_version(), start, end)
        data = self.cache.get(key)
        if data is None:
            data = read_range(self.path, start, end)
            self.cache.put(key, data)
        return data

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_kept": [], "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def __enter__(self) -> Ranges:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _touch(path: str) -> None:
    """Mark a cache entry used now (to the ns: a file system's own clock ticks coarser)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


class BlockCache:
    """A bounded local cache of remote byte ranges (blocks of records), shared by the processes
    that name the same ``directory``: at most ``max_bytes`` of entries, least recently used
    evicted first. Entries are written atomically and carry their CRC-32C: a damaged entry is
    refused (deleted, counted in ``STATS.cache_refused``) and the block read from the store
    again; the records' own CRCs are checked after, as for any read. An entry is keyed by the
    URL, the object's size and version (a rewritten object is never answered from the cache)
    and the byte range.

    >>> cache = BlockCache("/mnt/ssd/sf-cache", max_bytes=50 << 30)   # doctest: +SKIP
    >>> ShardDataset("gs://bkt/out/train", batch_size=256, cache=cache)  # doctest: +SKIP
    """

    SUFFIX = ".blk"

    def __init__(self, directory: str | os.PathLike, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"a cache needs max_bytes > 0, got {max_bytes}")
        self.directory, self.max_bytes = os.path.abspath(os.fspath(directory)), int(max_bytes)
        os.makedirs(self.directory, exist_ok=True)

    def path_of(self, key: tuple) -> str:
        name = hashlib.sha256(repr(key).encode()).hexdigest()[:40]
        return os.path.join(self.directory, name + self.SUFFIX)

    def get(self, key: tuple) -> bytes | None:
        """The cached bytes of ``key``, or None (absent, or damaged and now deleted)."""
        path = self.path_of(key)
        try:
            with open(path, "rb") as f:
                raw = f.read()
            _touch(path)
        except FileNotFoundError:  # absent, or evicted by another process meanwhile
            return None
        data, crc = raw[:-4], raw[-4:]
        if len(raw) < 4 or google_crc32c.value(data) != int.from_bytes(crc, "little"):
            STATS.add(cache_refused=1)
            delete(path)
            return None
        STATS.add(cache_hits=1)
        return data

    def put(self, key: tuple, data: bytes) -> None:
        """Store ``data`` under ``key`` (if it fits at all), evicting the least recently used."""
        if len(data) + 4 > self.max_bytes:
            return
        crc = google_crc32c.value(data).to_bytes(4, "little")
        _touch(atomic_write(self.path_of(key), [data, crc]))
        self._evict()

    def _evict(self) -> None:
        entries = []
        for e in os.scandir(self.directory):
            if e.name.endswith(self.SUFFIX) and not e.name.startswith(TMP_PREFIX):
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime_ns, st.st_size, e.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            delete(path)
            total -= size

    def __reduce__(self):
        return BlockCache, (self.directory, self.max_bytes)


class _RangeIO(io.RawIOBase):
    def __init__(self, ranges: Ranges) -> None:
        self._r, self._pos = ranges, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._r.pread(len(b), self._pos)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._r.close()
        super().close()


def open_read(path: str | os.PathLike) -> io.BufferedIOBase:
    """A binary file read front to back (remotely in ``READ_CHUNK`` requests)."""
    p = os.fspath(path)
    if not is_remote(p):
        return open(_local(p), "rb")
    return io.BufferedReader(_RangeIO(Ranges(p)), buffer_size=READ_CHUNK)


# ---------------------------------------------------------------------------------------------
# Writes

# The prefix of atomic_write's temporary files (a killed writer's are safe to delete).
TMP_PREFIX = ".tmp-"

def fsync_dir(directory: str) -> None:
    """Make the renames inside ``directory`` durable (a crash after it keeps them)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike,
                 data: bytes | str | Iterable[bytes] | Callable[[BinaryIO], None]) -> str:
    """Write ``path`` so that readers see the old file or the whole new one, never a part, even
    across a crash: a temporary name in the same directory, fsync, rename, fsync the directory.
    ``data``: bytes, text (UTF-8), buffers written one after the other, or a function that
    writes to the open binary file. The directory must exist; returns the path.

    >>> atomic_write("out/stats.json", b"{}")                # doctest: +SKIP
    'out/stats.json'
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    # a fresh name (not mkstemp: its 0600 mode would outlive the rename) that no other writer uses
    tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{os.path.basename(path)}")
    if isinstance(data, str):
        data = data.encode()
    try:
        with open(tmp, "xb") as f:
            if callable(data):
                data(f)
            elif isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                for part in data:
                    f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
            raise no_space(path, size) from None
        raise
    fsync_dir(directory)
    return path


def no_space(path: str, needed: int | None = None) -> OSError:
    """The error of a write that found the device full, naming the file, the bytes it needed
    (when known) and the space left: ``OSError(ENOSPC)``, so handlers of full disks still
    catch it.

    >>> no_space("/full/out/stats.json", 2048).strerror            # doctest: +SKIP
    'no space left on device writing /full/out/stats.json: 2048 bytes needed, 0 bytes free …'
    """
    where = os.path.abspath(path)
    while not os.path.isdir(where):  # the file, or a folder not made yet: the nearest that is
        where = os.path.dirname(where)
    free = shutil.disk_usage(where).free
    needed_text = f"{needed} bytes needed, " if needed is not None else ""
    return OSError(errno.ENOSPC, f"no space left on device writing {path}: {needed_text}{free} "
                   "bytes free (free space there, or write the output elsewhere)")


def write_bytes(path: str | os.PathLike, data: bytes, *, if_absent: bool = False) -> str:
    """Write a whole file: readers see the old one or the new one. ``if_absent=True`` creates it
    only where none exists (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``, a hard link
    locally) and raises FileExistsError otherwise: two writers cannot both succeed."""
    p = os.fspath(path)
    if not is_remote(p):
        if not if_absent:
            return atomic_write(_local(p), data)
        local = _local(p)
        tmp = atomic_write(f"{local}.{uuid.uuid4().hex[:12]}.new", data)
        try:
            os.link(tmp, local)  # atomic; fails if a file is there
        finally:
            os.remove(tmp)
        return p
    fs = filesystem(p)
    mode = "create" if if_absent else "overwrite"
    try:
        _call(p, lambda: fs.pipe_file(p, data, mode=mode))
    except FileExistsError:
        raise
    except Exception as err:
        if if_absent and getattr(err, "code", None) == 412:
            raise FileExistsError(p) from None
        raise
    return p


def delete(path: str | os.PathLike) -> None:
    """Remove a file; nothing when it is already gone."""
    p = os.fspath(path)
    if not is_remote(p):
        try:
            os.remove(_local(p))
        except FileNotFoundError:
            pass
        return
    try:
        _call(p, lambda: filesystem(p).rm_file(p))
    except FileNotFoundError:
        pass


def copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file within one store (server-side for a bucket)."""
    s, d = os.fspath(src), os.fspath(dst)
    if not is_remote(s):
        import shutil

        os.makedirs(os.path.dirname(_local(d)) or ".", exist_ok=True)
        shutil.copyfile(_local(s), _local(d))
        return
    _call(s, lambda: filesystem(s).copy(s, d))


# ---------------------------------------------------------------------------------------------
# Conditional replacement (the commit on object stores: no rename, so preconditions)


class PreconditionFailed(FileExistsError):
    """A conditional write found the object changed (or gone) since its version was read."""


def version(path: str | os.PathLike) -> str | None:
    """The store's version of the object at a URL (GCS generation, S3 ETag), ``None`` when
    there is none: what :func:`replace_bytes` matches."""
    p = os.fspath(path)
    fs = filesystem(p)
    fs.invalidate_cache(p)
    try:
        info = _call(p, lambda: fs.info(p))
    except FileNotFoundError:
        return None
    found = info.get("generation") if scheme(p) in ("gs", "gcs") else info.get("ETag")
    return None if found is None else str(found)


def replace_bytes(path: str | os.PathLike, data: bytes, if_version: str) -> str:
    """Overwrite the object at a URL only if it still is at version ``if_version`` (GCS
    ``ifGenerationMatch``, S3 ``If-Match`` on the ETag), in one request; returns the new
    version. Raises :class:`PreconditionFailed` when another writer replaced or deleted it
    meanwhile: of two writers holding the same version, one wins. (A request retried after a
    dropped answer finds its own bytes in place: that counts as done.)"""
    p = os.fspath(path)
    fs = filesystem(p)
    bucket, key = p.split("://", 1)[1].split("/", 1)

    def attempt() -> str:
        try:
            if scheme(p) in ("gs", "gcs"):
                from urllib.parse import quote

                out = fs.call("POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
                              uploadType="media", name=key, ifGenerationMatch=if_version,
                              data=data, headers={"Content-Type": "application/octet-stream"},
                              json_out=True)
                return str(out["generation"])
            return str(fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data,
                                  IfMatch=if_version)["ETag"])
        except (FileNotFoundError, FileExistsError):  # 404; gcsfs's name for 412
            raise PreconditionFailed(errno.ESTALE, f"{p} was replaced or deleted by another "
                                     f"writer (expected version {if_version})") from None
        except OSError as err:
            if "precondition" in str(err).lower().replace("-", ""):  # s3fs's 412
                raise PreconditionFailed(errno.ESTALE, f"{p} was replaced by another writer "
                                         f"(expected version {if_version})") from None
            raise

    try:
        new = str(_call(p, attempt))
    except PreconditionFailed:
        fs.invalidate_cache(p)
        with contextlib.suppress(FileNotFoundError):
            if read_bytes(p) == data:
                return str(version(p))
        raise
    fs.invalidate_cache(p)
    return new


def check_credentials(path: str | os.PathLike) -> None:
    """Fail before any work when a URL's store has no credentials that work, with one error
    (:class:`RemoteAccessError`) saying what to set: ``gs://`` looks up Application Default
    Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``,
    the metadata server) unless ``STORAGE_EMULATOR_HOST`` names an emulator; ``s3://`` the AWS
    chain (environment, ``AWS_PROFILE`` and its files, the instance role). Local paths pass."""
    p = os.fspath(path)
    if scheme(p) in ("gs", "gcs"):
        if os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default"):
            return
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            google.auth.default()
        except DefaultCredentialsError as err:
            raise _credentials_error(p, err) from None
    elif scheme(p) == "s3":
        import botocore.session
        from botocore.exceptions import BotoCoreError

        try:
            found = botocore.session.get_session().get_credentials()
        except BotoCoreError as err:
            raise _credentials_error(p, err) from None
        if found is None:
            raise _credentials_error(p, "none found in the environment, the profile files "
                                        "or an instance role")
