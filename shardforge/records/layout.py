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

import os
import re

import numpy as np

# the one atomic-write helper lives with the filesystem layer; the contract names it here
from shardforge.records.fs import TMP_PREFIX, atomic_write, fsync_dir, no_space  # noqa: F401

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


def job_shard_name(name: str, tag: str) -> str:
    """A shard's (or its index's) file name made unique to the job that published it, for
    object stores: a new job's shards land beside the ones a reader of the previous manifest
    is streaming instead of over them.

    >>> job_shard_name("part-00000-of-00004.tfrecord.gz", "3f2a9c01")
    'part-00000-of-00004-3f2a9c01.tfrecord.gz'
    """
    stem, dot, rest = name.partition(".tfrecord")
    if not dot:
        raise ValueError(f"{name!r} is not a shard name")
    return f"{stem}-{tag}{dot}{rest}"


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
    from shardforge.records import fs

    p = fs.absolute(path)
    candidates = [p] if fs.isdir(p) else []
    candidates += [fs.dirname(p), fs.dirname(fs.dirname(p))]
    for directory in candidates:
        schema = fs.join(directory, SCHEMA_FILE)
        if fs.isfile(schema):
            return schema
    return None
