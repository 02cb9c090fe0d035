"""TFRecord framing, tf.Example codec, parse specs, index files and Arrow conversion.

Imports neither TensorFlow nor torch. The exports below load on first use (PEP 562): importing
a light submodule (``records.layout``, ``records.spec``) runs this file first, and must not
pay for numba (``_kernels``), protobuf (``example``) or pyarrow (``arrow``).
"""

from __future__ import annotations

import importlib

# export → the submodule that defines it
_EXPORTS = {
    "errors": ("CorruptRecordError", "ExampleDecodeError", "IndexFileError", "ReadReport"),
    "example": (
        "decode_batch", "decode_batch_reference", "decode_example", "decode_sequence_example",
        "encode_batch", "encode_example", "encode_sequence_example", "infer_spec",
        "malformed_examples", "summarize_features",
    ),
    "framing": (
        "RecordBlock", "RecordReader", "frame_block", "list_shards", "masked_crc32c",
        "read_blocks", "read_records",
    ),
    "index": ("RecordFile", "build_index", "load_index", "read_index"),
    "layout": ("index_path",),
    "sharded": ("ShardedWriter",),
    "spec": ("Batch", "FixedLen", "Ragged", "Spec", "VarLen", "batch_size", "take_rows"),
    "writer": ("TFRecordWriter",),
    "arrow": ("arrow_to_batch", "batch_to_arrow", "parquet_to_shards", "shards_to_parquet"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'shardforge.records' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"shardforge.records.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
