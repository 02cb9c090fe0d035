"""Columnar batches <-> Apache Arrow, and TFRecord shards <-> Parquet.

Dense columns map to Arrow arrays (``[n, *shape]`` columns to fixed-size lists, with the shape in
the field's metadata), :class:`Ragged` to ``large_list`` (its int64 row splits are the offsets,
no copy), bytes to ``binary``. Back from Arrow, integers and booleans become int64, floating
point float32 and strings UTF-8 bytes: the three types a tf.Example holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardforge.records.example import decode_batch, encode_batch, infer_spec
from shardforge.records.framing import Paths, expand_paths, read_blocks, read_records
from shardforge.records.sharded import ShardedWriter
from shardforge.records.spec import Batch, Ragged, Spec

_SHAPE = b"shardforge.shape"


def _array(values: np.ndarray) -> pa.Array:
    if values.dtype == object:
        return pa.array(values, type=pa.binary())
    return pa.array(values)


def batch_to_arrow(batch: Batch) -> pa.RecordBatch:
    """A columnar batch as a ``pyarrow.RecordBatch``.

    >>> rb = batch_to_arrow({"id": np.arange(2), "tok": Ragged.from_rows([[1], [2, 3]])})
    >>> rb.schema.field("tok").type
    LargeListType(large_list<item: int64>)
    """
    arrays, fields = [], []
    for name, col in batch.items():
        if isinstance(col, Ragged):
            arr = pa.LargeListArray.from_arrays(pa.array(col.row_splits), _array(col.values))
            meta = None
        elif col.ndim == 1:
            arr, meta = _array(col), None
        else:
            inner = col.shape[1:]
            flat = _array(np.ascontiguousarray(col).reshape(-1))
            arr = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(inner)))
            meta = {_SHAPE: json.dumps(list(inner)).encode()}
        arrays.append(arr)
        fields.append(pa.field(name, arr.type, metadata=meta))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _numpy(arr: pa.Array) -> np.ndarray:
    t = arr.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t) or (
        pa.types.is_large_string(t)
    ):
        values = [v if isinstance(v, bytes) else (b"" if v is None else v.encode())
                  for v in arr.to_pylist()]
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if pa.types.is_floating(t):
        return arr.fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    raise TypeError(f"cannot convert Arrow type {t} to a tf.Example feature")


def arrow_to_batch(rb: pa.RecordBatch | pa.Table) -> Batch:
    """A ``RecordBatch`` (or Table) back to a columnar batch; list columns become Ragged."""
    if isinstance(rb, pa.Table):
        rb = rb.combine_chunks().to_batches()[0] if rb.num_rows else pa.RecordBatch.from_pylist(
            [], schema=rb.schema
        )
    out: Batch = {}
    for field, arr in zip(rb.schema, rb.columns):
        t = arr.type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            offsets = arr.offsets.to_numpy().astype(np.int64)
            values = _numpy(arr.values.slice(offsets[0], offsets[-1] - offsets[0]))
            out[field.name] = Ragged(values, offsets - offsets[0])
        elif pa.types.is_fixed_size_list(t):
            meta = field.metadata or {}
            shape = tuple(json.loads(meta[_SHAPE])) if _SHAPE in meta else (t.list_size,)
            out[field.name] = _numpy(arr.flatten()).reshape((len(arr), *shape))
        else:
            out[field.name] = _numpy(arr)
    return out


def shards_to_parquet(
    paths_or_glob: Paths, out_path: str | os.PathLike, *, spec: Spec | None = None,
) -> int:
    """Write the Examples of TFRecord shards to one Parquet file; returns the row count.

    Without ``spec`` one is inferred from all records first (an extra pass).
    """
    paths = expand_paths(paths_or_glob)
    spec = spec if spec is not None else infer_spec(read_records(paths))
    rows = 0
    writer = None
    try:
        for block in read_blocks(paths):
            rb = batch_to_arrow(decode_batch(block, spec))
            writer = writer or pq.ParquetWriter(os.fspath(out_path), rb.schema)
            writer.write_batch(rb)
            rows += rb.num_rows
        if writer is None:  # no records: still a file with the spec's columns
            rb = batch_to_arrow(decode_batch([], spec))
            pq.write_table(pa.Table.from_batches([rb]), os.fspath(out_path))
    finally:
        if writer is not None:
            writer.close()
    return rows


def parquet_to_shards(
    parquet_paths: str | os.PathLike | Sequence[str | os.PathLike], directory: str | os.PathLike,
    *, batch_rows: int = 8192, **writer_kwargs,
) -> list[str]:
    """Write the rows of Parquet files as tf.Example shards (``writer_kwargs`` go to
    :class:`ShardedWriter`: prefix, num_shards, shard_size, compression); returns the paths."""
    with ShardedWriter(directory, **writer_kwargs) as w:
        for path in expand_paths(parquet_paths):
            for rb in pq.ParquetFile(os.fspath(path)).iter_batches(batch_size=batch_rows):
                for record in encode_batch(arrow_to_batch(rb)):
                    w.write(record)
    return w.paths
