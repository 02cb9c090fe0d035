"""The output contract of a job, in one place: what is where, under which name.

An output directory (local or a bucket prefix) holds::

    manifest.json          the commit (records/manifest.py)
    schema.pbtxt           SCHEMA_FILE: the analyzed state, what every reader needs first
    train/ eval/           SPLITS: shards named by shard_name(i, n, compression)
    .index/train/...       index_path(shard): one index file per shard
    stats.json errors/     statistics and dead letters (ERRORS_DIR)

A record's split is :func:`split_of` its row hash; its shard within the split is the range of
:func:`shard_bounds` its :func:`shard_keys` falls in, and the key orders it there. Everything
here is pure (stdlib and numpy), so the Beam job, the in-process writer, the loaders and
``inspect`` share it without importing Beam. Files are written through :func:`atomic_write`.

>>> shard_name(0, 4, "zlib")
'part-00000-of-00004.tfrecord.zz'
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from typing import BinaryIO

import numpy as np

SPLITS = ("train", "eval")
SCHEMA_FILE = "schema.pbtxt"
ERRORS_DIR = "errors"
# In ERRORS_DIR of a job the error budget failed: its verdict (rows failed, read, allowed).
BUDGET_FILE = "over-budget.json"
SHARD_PREFIX = "part"
# Compression as the CLI spells it → the suffix of its shards (TensorFlow's compression_type is
# the upper-cased name: "", "GZIP", "ZLIB").
SHARD_SUFFIX = {"none": ".tfrecord", "gzip": ".tfrecord.gz", "zlib": ".tfrecord.zz"}
COMPRESSIONS = tuple(SHARD_SUFFIX)
DEFAULT_SHARD_SIZE = 128 << 20
INDEX_DIR = ".index"
INDEX_SUFFIX = ".idx"
# The prefix of atomic_write's temporary files (a killed writer's are safe to delete).
TMP_PREFIX = ".tmp-"


# ---------------------------------------------------------------------------------------------
# Shard names and sizes


def compression_name(compression: str | None) -> str | None:
    """``None``, ``"gzip"`` or ``"zlib"`` from any spelling a user may pass (``None``,
    ``"none"``, ``""``, upper case)."""
    c = (compression or "none").lower()
    if c not in SHARD_SUFFIX:
        raise ValueError(f"compression {compression!r}: expected one of {', '.join(COMPRESSIONS)}")
    return None if c == "none" else c


def shard_name(i: int, n: int, compression: str | None = None, prefix: str = SHARD_PREFIX) -> str:
    """The file name of shard ``i`` of ``n`` (``part-00000-of-00004.tfrecord.gz``)."""
    return f"{prefix}-{i:05d}-of-{n:05d}{SHARD_SUFFIX[compression_name(compression) or 'none']}"


def num_shards_for(num_bytes: int, shard_size: int) -> int:
    """Shards of about ``shard_size`` bytes for ``num_bytes`` of records (at least one, so an
    empty split still has a shard)."""
    return max(1, -(-num_bytes // shard_size))


_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*")
_SIZE_UNITS = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
               "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_size(text: str | int | float, *, bare: int = 1) -> int:
    """A size in bytes from ``"128MiB"``, ``"64M"``, ``"1GB"`` or a number.

    The unit rule (IEC and SI, case-insensitive): ``K``/``M``/``G``/``T`` and ``KiB``/``MiB``/
    ``GiB``/``TiB`` are powers of 1024; ``KB``/``MB``/``GB``/``TB`` powers of 1000; ``B`` is a
    byte. A number without a unit counts ``bare`` bytes (1; the memory planner passes 10**9, so
    its ``80`` is 80 GB).

    >>> parse_size("128MiB") == 128 << 20, parse_size("80GB"), parse_size("2K")
    (True, 80000000000, 2048)
    """
    if isinstance(text, (int, float)):
        return int(text * bare)
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else None
    if unit is None or (unit and unit not in _SIZE_UNITS):
        raise ValueError(f"cannot read a size from {text!r}: write e.g. 128MiB (2^20 bytes), "
                         "128MB (10^6 bytes) or a number of bytes")
    return int(float(match.group(1)) * (_SIZE_UNITS[unit] if unit else bare))


# ---------------------------------------------------------------------------------------------
# Splits, shard keys and key ranges


_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHARD_SALT = np.uint64(0xD1B54A32D192ED03)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer over a ``uint64`` array (the arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def split_of(hashes: np.ndarray, eval_fraction: float) -> np.ndarray:
    """``True`` where a row goes to eval: the top 53 bits of its hash as a uniform in [0, 1)."""
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53) < eval_fraction


def shard_keys(row_hash: np.ndarray) -> np.ndarray:
    """The key that places a record in its split's shards (by range) and orders it there: a
    remix of its row hash, independent of the bits that chose the split."""
    return mix64(row_hash ^ _SHARD_SALT)


def shard_bounds(i: int, n: int) -> tuple[int, int | None]:
    """Keys ``[lo, hi)`` of shard ``i`` of ``n`` (``hi`` is ``None`` for the last)."""
    return -(-(i << 64) // n), None if i + 1 == n else -(-((i + 1) << 64) // n)


# ---------------------------------------------------------------------------------------------
# Index files and the schema


def index_path(shard_path: str | os.PathLike, *, mkdir: bool = False) -> str:
    """Where the index of ``shard_path`` lives (``mkdir=True`` creates its folder for a writer).

    >>> index_path("out/train/part-00000-of-00004.tfrecord")  # doctest: +SKIP
    '/abs/out/.index/train/part-00000-of-00004.tfrecord.idx'

    Local paths are made absolute (so a shard named without a folder still has a parent); URLs
    (``gs://bucket/out/train/x``) keep their scheme.
    """
    p = os.fspath(shard_path)
    remote = "://" in p
    if not remote:
        p = os.path.abspath(p)
    head, name = p.rsplit("/", 1)
    if "/" in head.split("://", 1)[-1]:
        parent, folder = head.rsplit("/", 1)
        out = f"{parent}/{INDEX_DIR}/{folder}/{name}{INDEX_SUFFIX}"
    else:  # a shard at the root of a filesystem or bucket
        out = f"{head}/{INDEX_DIR}/{name}{INDEX_SUFFIX}"
    if mkdir and not remote:
        os.makedirs(os.path.dirname(out), exist_ok=True)
    return out


def find_schema(path: str | os.PathLike) -> str | None:
    """The ``schema.pbtxt`` of the job output that ``path`` belongs to, or ``None``.

    ``path``: the output directory, a split directory or a shard. The nearest directory holding
    the schema wins: ``path`` itself (a directory), then its parent (a shard's split directory, a
    split's output), then the parent's parent (a shard's output).
    """
    p = os.path.abspath(os.fspath(path))
    candidates = [p] if os.path.isdir(p) else []
    candidates += [os.path.dirname(p), os.path.dirname(os.path.dirname(p))]
    for directory in candidates:
        schema = os.path.join(directory, SCHEMA_FILE)
        if os.path.isfile(schema):
            return schema
    return None


# ---------------------------------------------------------------------------------------------
# Atomic writes


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
