"""Writing whole RecordBlocks (compiled framing) and where index files live."""

import glob
import os

import numpy as np
import pytest

from shardforge.records import (
    RecordBlock,
    RecordFile,
    ShardedWriter,
    TFRecordWriter,
    frame_block,
    index_path,
    list_shards,
    load_index,
    read_records,
)
from shardforge.records.framing import frame

from .conftest import COMPRESSIONS

RNG = np.random.default_rng(3)
RECORDS = [RNG.bytes(int(n)) for n in RNG.integers(0, 3000, size=700)] + [b""]


def _files(paths):
    return [open(p, "rb").read() for p in paths], [open(index_path(p), "rb").read() for p in paths]


def test_frame_block_is_tfrecord_framing(tf):
    block = RecordBlock.from_records(RECORDS)
    framed = frame_block(block)
    assert framed.tobytes() == b"".join(map(frame, RECORDS))
    sub = block[3::7]  # strided offsets into the same buffer
    assert frame_block(sub).tobytes() == b"".join(map(frame, RECORDS[3::7]))
    for comp, _, tf_comp in COMPRESSIONS[1:]:
        data = frame_block(block, comp)
        path = f"{os.environ.get('TMPDIR', '/tmp')}/sf-frame-{os.getpid()}.{comp}"
        open(path, "wb").write(data)
        try:
            got = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=tf_comp)]
        finally:
            os.remove(path)
        assert got == RECORDS


def test_frame_block_rejects_spans_outside_the_buffer():
    block = RecordBlock.from_records([b"abc", b"de"])
    for offsets, lengths in (([0, 4], [3, 2]), ([0, -1], [3, 2]), ([0, 3], [3, -2]),
                             ([0, 2**62], [3, 2**62])):
        bad = RecordBlock(block.buf, np.array(offsets), np.array(lengths))
        with pytest.raises(ValueError, match="record 1: offset"):
            frame_block(bad)
    with pytest.raises(TypeError, match="uint8"):
        frame_block(RecordBlock(block.buf.astype(np.int64), block.offsets, block.lengths))


@pytest.mark.parametrize("comp,suffix,tf_comp", COMPRESSIONS)
def test_write_block_writes_what_write_writes(tmp_path, comp, suffix, tf_comp, tf):
    """Same file bytes and same index, flush points included, as writing record by record."""
    paths = []
    for mode in ("rows", "block"):
        path = str(tmp_path / f"{mode}{suffix}")
        with TFRecordWriter(path, index=True, flush_every=4096) as w:
            if mode == "rows":
                for r in RECORDS:
                    w.write(r)
            else:
                w.write(RECORDS[0])
                w.write_block(RecordBlock.from_records(RECORDS[1:400]))
                w.write_block(RecordBlock.from_records([]))
                w.write_block(RecordBlock.from_records(RECORDS[400:]))
        paths.append(path)
    (rows, block), _ = _files(paths)
    assert rows == block
    a, b = load_index(paths[0]), load_index(paths[1])
    for col in ("offsets", "lengths", "block_offsets", "block_stream_offsets"):
        x, y = getattr(a, col), getattr(b, col)
        assert (x is None and y is None) or (x == y).all(), col
    got = [r.numpy() for r in tf.data.TFRecordDataset(paths[1], compression_type=tf_comp)]
    assert got == RECORDS
    assert RecordFile(paths[1]).read_range(390, 410) == RECORDS[390:410]


@pytest.mark.parametrize("comp", [None, "gzip"])
def test_sharded_write_block_deals_like_write(tmp_path, comp):
    out = {}
    for mode in ("rows", "block"):
        with ShardedWriter(tmp_path / mode, num_shards=3, compression=comp) as w:
            w.write(RECORDS[0])  # the block then starts dealing at shard 1
            if mode == "rows":
                for r in RECORDS[1:]:
                    w.write(r)
            else:
                w.write_block(RecordBlock.from_records(RECORDS[1:]))
        assert w.records == len(RECORDS)
        out[mode] = _files(w.paths)
    assert out["rows"] == out["block"]


def test_sharded_write_block_by_size(tmp_path):
    sizes = {}
    for mode in ("rows", "block"):
        with ShardedWriter(tmp_path / mode, shard_size=100_000) as w:
            if mode == "rows":
                for r in RECORDS:
                    w.write(r)
            else:
                w.write_block(RecordBlock.from_records(RECORDS))
        sizes[mode] = _files(w.paths)
    assert sizes["rows"] == sizes["block"]  # plain shards: exactly the same cut points
    with ShardedWriter(tmp_path / "gz", shard_size=100_000, compression="gzip") as w:
        w.write_block(RecordBlock.from_records(RECORDS))
    assert len(w.paths) > 1
    assert list(read_records(w.paths)) == RECORDS


@pytest.mark.parametrize("comp", [None, "gzip"])
def test_no_usual_glob_matches_an_index(tmp_path, comp, tf):
    """``train/*``, ``train/part-*`` and ``train/*.tfrecord*`` give the shards and nothing else
    with Python's, TensorFlow's and Beam's matchers, and TFRecordDataset reads what they give."""
    from apache_beam.io.filesystems import FileSystems

    train = tmp_path / "out" / "train"
    with ShardedWriter(train, num_shards=2, compression=comp) as w:
        w.write_block(RecordBlock.from_records(RECORDS))
    shards = sorted(w.paths)
    assert all(os.path.exists(index_path(p)) for p in shards)
    for pattern in ("*", "part-*", "*.tfrecord*"):
        pat = str(train / pattern)
        assert sorted(glob.glob(pat)) == shards, pattern
        assert sorted(tf.io.gfile.glob(pat)) == shards, pattern
        assert sorted(m.path for m in FileSystems.match([pat])[0].metadata_list) == shards
    ds = tf.data.TFRecordDataset(tf.io.gfile.glob(str(train / "*")),
                                 compression_type="GZIP" if comp else "")
    assert sorted(r.numpy() for r in ds) == sorted(RECORDS)
    assert list_shards(train) == shards


def test_index_path_layout():
    assert index_path("/d/out/train/part-0.tfrecord") == "/d/out/.index/train/part-0.tfrecord.idx"
    assert index_path("gs://b/out/train/x.tfrecord.gz") == "gs://b/out/.index/train/x.tfrecord.gz.idx"
    assert index_path("gs://b/x.tfrecord") == "gs://b/.index/x.tfrecord.idx"
    assert index_path("x.tfrecord") == index_path(os.path.abspath("x.tfrecord"))


def test_legacy_index_beside_the_shard_is_ignored(tmp_path, caplog):
    path = str(tmp_path / "a.tfrecord")
    with TFRecordWriter(path, index=True) as w:
        w.write_block(RecordBlock.from_records(RECORDS[:20]))
    os.replace(index_path(path), path + ".idx")  # where shardforge < index format 2 wrote it
    assert list_shards(tmp_path) == [path]
    with caplog.at_level("WARNING", logger="shardforge.records"):
        assert RecordFile(path)[5] == RECORDS[5]  # scanned
    assert "shardforge index" in caplog.text and path + ".idx" in caplog.text
