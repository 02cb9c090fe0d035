"""Sharded writing, index files and random access (uncompressed and compressed shards)."""

import os
import pickle

import numpy as np
import pytest

from shardforge.records import (
    CorruptRecordError,
    IndexFileError,
    RecordFile,
    ShardedWriter,
    TFRecordWriter,
    build_index,
    index_path,
    list_shards,
    load_index,
    read_index,
    read_records,
)
from shardforge.records.framing import frame
from shardforge.records.index import write_index

from .conftest import COMPRESSIONS

RECORDS = [f"record-{i}-".encode() * (1 + i % 37) for i in range(3000)]


def test_sharded_writer_count_names_and_contents(tmp_path):
    with ShardedWriter(tmp_path, num_shards=3) as w:
        for r in RECORDS:
            w.write(r)
    assert [os.path.basename(p) for p in w.paths] == [
        f"part-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(p) for p in w.paths]
    assert all(os.path.exists(index_path(p)) for p in w.paths)
    assert list_shards(tmp_path) == w.paths
    assert sorted(read_records(w.paths)) == sorted(RECORDS)
    assert [len(RecordFile(p)) for p in w.paths] == [1000, 1000, 1000]


def test_sharded_writer_size_target_gzip(tmp_path):
    with ShardedWriter(tmp_path, prefix="train", shard_size=3000, compression="gzip") as w:
        for r in RECORDS:
            w.write(r)
    n = len(w.paths)
    assert n > 2
    assert w.paths[-1].endswith(f"train-{n - 1:05d}-of-{n:05d}.tfrecord.gz")
    assert list(read_records(w.paths)) == RECORDS  # shard_size keeps the order


def test_sharded_writer_is_atomic(tmp_path):
    w = ShardedWriter(tmp_path, num_shards=2)
    w.write(b"a")
    assert list_shards(tmp_path) == []  # only hidden temporaries so far
    with pytest.raises(RuntimeError):
        with ShardedWriter(tmp_path / "crash", num_shards=2) as w2:
            w2.write(b"a")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path / "crash") == []
    w.close()
    assert len(list_shards(tmp_path)) == 2


@pytest.mark.parametrize("comp,suffix,_", COMPRESSIONS)
def test_random_access_matches_sequential(tmp_path, comp, suffix, _):
    path = str(tmp_path / f"a{suffix}")
    with TFRecordWriter(path, index=True, flush_every=4096) as w:
        for r in RECORDS:
            w.write(r)
    offsets, lengths = read_index(path)
    assert lengths.tolist() == [len(r) for r in RECORDS]
    assert offsets.tolist() == np.cumsum([0] + [len(frame(r)) for r in RECORDS[:-1]]).tolist()
    with RecordFile(path) as rf:
        assert len(rf) == len(RECORDS)
        for i in (0, 1, 1234, len(RECORDS) - 1, -1):
            assert rf[i] == RECORDS[i]
        assert rf.read_range(500, 1700) == RECORDS[500:1700]
        assert rf.read_range(2990, 5000) == RECORDS[2990:]
        assert rf.read_range(10, 10) == []
        with pytest.raises(IndexError):
            rf[len(RECORDS)]
        clone = pickle.loads(pickle.dumps(rf))
        assert clone[77] == RECORDS[77]


def test_compressed_index_seeks_to_a_flush_block(tmp_path):
    """Reading record i of a gzip shard decompresses from the flush point before it: the bytes
    before that point are never read (damaging them does not matter)."""
    path = str(tmp_path / "a.tfrecord.gz")
    with TFRecordWriter(path, index=True, flush_every=4096) as w:
        for r in RECORDS:
            w.write(r)
    idx = load_index(path)
    blocks = np.unique(idx.block_offsets)
    assert len(blocks) > 10 and (np.diff(idx.block_offsets) >= 0).all()
    assert (idx.block_stream_offsets <= idx.offsets).all()
    i = len(RECORDS) - 5
    data = bytearray(open(path, "rb").read())
    data[: int(idx.block_offsets[i])] = b"\xff" * int(idx.block_offsets[i])
    open(path, "wb").write(bytes(data))
    with pytest.raises(IndexFileError, match="stale"):
        RecordFile(path)
    write_index(path, idx)  # bind the index to the damaged file: only the seek can save us now
    assert RecordFile(path).read_range(i, i + 5) == RECORDS[i:]
    with pytest.raises(CorruptRecordError):
        RecordFile(path)[0]


def test_build_index_for_foreign_gzip_decompresses_from_start(tmp_path, tf):
    path = str(tmp_path / "tf.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for r in RECORDS[:500]:
            w.write(r)
    assert build_index(path) == index_path(path)
    idx = load_index(path)
    assert (idx.block_offsets == 0).all() and len(idx) == 500
    assert RecordFile(path).read_range(420, 430) == RECORDS[420:430]


def test_stale_or_damaged_index_is_an_error(tmp_path):
    path = str(tmp_path / "a.tfrecord")
    with TFRecordWriter(path, index=True) as w:
        for r in RECORDS[:100]:
            w.write(r)
    with open(path, "ab") as f:
        f.write(frame(b"one more"))
    with pytest.raises(ValueError, match="shardforge index"):
        RecordFile(path)
    build_index(path)
    assert RecordFile(path)[100] == b"one more"
    idx = load_index(path)
    data = bytearray(open(path, "rb").read())
    data[20] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(IndexFileError, match="stale: the shard's contents changed"):
        RecordFile(path)
    write_index(path, idx)  # an index bound to the damaged file: the record's CRC catches it
    with pytest.raises(CorruptRecordError, match="checksum") as err:
        RecordFile(path).read_range(0, 3)
    assert err.value.index == 0
    open(index_path(path), "wb").write(b"garbage")
    with pytest.raises(ValueError, match="index"):
        RecordFile(path)


def test_record_file_without_index_scans(tmp_path):
    path = str(tmp_path / "a.tfrecord")
    with TFRecordWriter(path) as w:
        for r in RECORDS[:50]:
            w.write(r)
    assert not os.path.exists(index_path(path))
    assert RecordFile(path).read_range(5, 8) == RECORDS[5:8]
