"""TensorFlow interop (the ``tf`` extra): a job's shards as a ``tf.data.Dataset``.

    from shardforge.interop.tf import tf_dataset
    ds = tf_dataset("out/", batch_size=256)          # train split, parsed with the job's schema
    for batch in ds.take(1):
        batch["query"]                               # a tf.RaggedTensor (variable length)

The parse spec comes from ``schema.pbtxt`` (:func:`tf_feature_spec`): a fixed-length feature
becomes ``tf.io.FixedLenFeature`` of its shape, a variable-length one ``tf.io.RaggedFeature``
(a ``tf.RaggedTensor`` with int64 row splits, the same values and splits as shardforge's own
``Ragged``). Only shard files are read, never index or temporary files, and each file's
compression is detected from its bytes (GZIP and ZLIB shards need no ``compression_type`` by
hand). TensorFlow is imported only here.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from shardforge.features.state import Schema, load_schema
from shardforge.records import fs
from shardforge.records.framing import expand_paths, masked_crc32c, resolve_compression
from shardforge.records.layout import SCHEMA_FILE, find_schema
from shardforge.records.spec import FixedLen, Spec, VarLen

_TF_DTYPES = {"int64": "int64", "float32": "float32", "bytes": "string"}
_TF_COMPRESSION = {None: "", "gzip": "GZIP", "zlib": "ZLIB"}


def tf_feature_spec(schema: Schema | Spec, *, ragged: bool = True) -> dict[str, Any]:
    """The ``tf.io.parse_example`` spec of a job's output features.

    ``schema`` is a loaded :class:`~shardforge.features.Schema` (or its parse ``spec``).
    Variable-length features are ``tf.io.RaggedFeature`` (``ragged=False``:
    ``tf.io.VarLenFeature``, a ``tf.SparseTensor``).

    >>> spec = tf_feature_spec(load_schema("out/"))        # doctest: +SKIP
    >>> spec["price"], spec["query"]                       # doctest: +SKIP
    (FixedLenFeature(shape=(), dtype=tf.float32, default_value=None),
     RaggedFeature(dtype=tf.int64, value_key=None, partitions=(), row_splits_dtype=tf.int64, ...))
    """
    import tensorflow as tf

    spec = schema.spec if isinstance(schema, Schema) else schema
    out: dict[str, Any] = {}
    for name, s in spec.items():
        dtype = tf.as_dtype(_TF_DTYPES[s.dtype])
        if isinstance(s, FixedLen):
            out[name] = tf.io.FixedLenFeature(s.shape, dtype, default_value=s.default)
        elif isinstance(s, VarLen):
            out[name] = (tf.io.RaggedFeature(dtype, row_splits_dtype=tf.int64) if ragged
                         else tf.io.VarLenFeature(dtype))
        else:
            raise TypeError(f"feature {name!r}: no TensorFlow parse spec for {s!r}")
    return out


def detect_compression(path: str) -> str | None:
    """``None``, ``"gzip"`` or ``"zlib"`` for a TFRecord file, from its first bytes (an
    uncompressed file starts with a length whose masked CRC-32C follows it); an empty file is
    uncompressed; a file that is none of these falls back to its suffix."""
    head = fs.read_range(path, 0, 12)
    if not head:
        return None
    if len(head) == 12 and int.from_bytes(head[8:], "little") == masked_crc32c(head[:8]):
        return None
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 2 and (head[0] & 0x0F) == 8 and int.from_bytes(head[:2], "big") % 31 == 0:
        try:
            zlib.decompressobj().decompress(head)
            return "zlib"
        except zlib.error:
            pass
    return resolve_compression(path, "auto")


def shard_files(path: str | Sequence[str], split: str = "train") -> list[str]:
    """The shard files of a job's output dir (its ``split``), a split dir, a glob or a list:
    never index files (``*.idx``) or temporary files."""
    if isinstance(path, (str, os.PathLike)) and fs.isfile(fs.join(path, SCHEMA_FILE)):
        path = fs.join(path, split)
    files = expand_paths(path)
    if not files:
        raise FileNotFoundError(f"no TFRecord shards in {path}")
    return files


def _find_schema(shard: str) -> Schema:
    """The schema of the job that wrote ``shard``: in its split dir's parent (or beside it)."""
    found = find_schema(shard)
    if found is None:
        raise FileNotFoundError(f"no {SCHEMA_FILE} for {shard} (looked in its split dir and the "
                                "one above): pass schema=load_schema(JOB_OUTPUT_DIR)")
    return load_schema(found)


def tf_dataset(path: str | Sequence[str], batch_size: int, *, split: str = "train",
               schema: Schema | None = None, ragged: bool = True, shuffle_files: bool = False,
               seed: int | None = None, drop_remainder: bool = False):
    """A ``tf.data.Dataset`` of parsed batches (``dict[str, tf.Tensor | tf.RaggedTensor]``).

    ``path`` is a job's output dir (reads ``split``), a split dir, a glob or a list of shards,
    local or ``gs://`` (TensorFlow reads those itself; ``s3://`` needs tensorflow-io);
    ``schema`` defaults to the ``schema.pbtxt`` of that output. Records come in file order
    (``shuffle_files`` shuffles the file order with ``seed``).

    >>> ds = tf_dataset("out/", batch_size=256, split="eval")   # doctest: +SKIP
    """
    import tensorflow as tf

    files = shard_files(path, split)
    spec = tf_feature_spec(schema or _find_schema(files[0]), ragged=ragged)
    if shuffle_files:
        files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
    # one TFRecordDataset per run of files with the same compression, in file order
    runs: list[tuple[str, list[str]]] = []
    for f in files:
        kind = _TF_COMPRESSION[detect_compression(f)]
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(f)
        else:
            runs.append((kind, [f]))
    records = None
    for kind, group in runs:
        ds = tf.data.TFRecordDataset(group, compression_type=kind)
        records = ds if records is None else records.concatenate(ds)
    return (records.batch(batch_size, drop_remainder=drop_remainder)
            .map(lambda serialized: tf.io.parse_example(serialized, spec),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))
