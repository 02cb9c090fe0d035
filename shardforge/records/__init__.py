"""TFRecord framing, tf.Example codec, parse specs, index files and Arrow conversion.

Imports neither TensorFlow nor torch; pyarrow only when an Arrow function is called.
"""

from shardforge.records.errors import (
    CorruptRecordError,
    ExampleDecodeError,
    IndexFileError,
    ReadReport,
)
from shardforge.records.example import (
    decode_batch,
    decode_batch_reference,
    decode_example,
    decode_sequence_example,
    encode_batch,
    encode_example,
    encode_sequence_example,
    infer_spec,
    malformed_examples,
    summarize_features,
)
from shardforge.records.framing import (
    RecordBlock,
    RecordReader,
    frame_block,
    list_shards,
    masked_crc32c,
    read_blocks,
    read_records,
)
from shardforge.records.index import (
    RecordFile,
    build_index,
    load_index,
    read_index,
)
from shardforge.records.layout import index_path
from shardforge.records.sharded import ShardedWriter
from shardforge.records.spec import (
    Batch,
    FixedLen,
    Ragged,
    Spec,
    VarLen,
    batch_size,
    take_rows,
)
from shardforge.records.writer import TFRecordWriter

__all__ = [
    "Batch", "CorruptRecordError", "ExampleDecodeError", "FixedLen", "IndexFileError", "Ragged",
    "ReadReport",
    "RecordBlock", "RecordFile", "RecordReader", "ShardedWriter", "Spec", "TFRecordWriter",
    "VarLen", "arrow_to_batch", "batch_size", "batch_to_arrow", "build_index", "decode_batch",
    "decode_batch_reference", "decode_example", "decode_sequence_example", "encode_batch",
    "encode_example", "encode_sequence_example", "frame_block", "index_path", "infer_spec",
    "list_shards", "load_index", "malformed_examples",
    "masked_crc32c", "parquet_to_shards", "read_blocks", "read_index", "read_records",
    "shards_to_parquet", "summarize_features", "take_rows",
]

_ARROW = {
    "arrow_to_batch", "batch_to_arrow", "parquet_to_shards", "shards_to_parquet",
}


def __getattr__(name: str):
    if name in _ARROW:  # keep pyarrow off the import path of training workers
        from shardforge.records import arrow

        return getattr(arrow, name)
    raise AttributeError(f"module 'shardforge.records' has no attribute {name!r}")
