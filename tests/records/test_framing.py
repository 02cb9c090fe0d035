"""TFRecord framing: round trips, TensorFlow as oracle both ways, corrupt and truncated files."""

import gzip
import logging
import os
import struct

import pytest

from shardforge.records import CorruptRecordError, TFRecordWriter, read_blocks, read_records
from shardforge.records.framing import frame, resolve_compression

from .conftest import COMPRESSIONS

RECORDS = [os.urandom(n) for n in (0, 1, 7, 100, 5000, 3)] + [b"x" * 70_000]


def _write(path, records=RECORDS, **kw):
    with TFRecordWriter(path, **kw) as w:
        for r in records:
            w.write(r)
    return path


@pytest.mark.parametrize("comp,suffix,tf_type", COMPRESSIONS)
def test_tensorflow_reads_ours(tmp_path, tf, comp, suffix, tf_type):
    path = _write(str(tmp_path / f"a{suffix}"), flush_every=1000)
    got = [x.numpy() for x in tf.data.TFRecordDataset(path, compression_type=tf_type)]
    assert got == RECORDS
    assert list(read_records(path)) == RECORDS


@pytest.mark.parametrize("comp,suffix,tf_type", COMPRESSIONS)
def test_we_read_tensorflows(tmp_path, tf, comp, suffix, tf_type):
    path = str(tmp_path / f"tf{suffix}")
    with tf.io.TFRecordWriter(path, options=tf_type or None) as w:
        for r in RECORDS:
            w.write(r)
    assert list(read_records(path)) == RECORDS
    assert list(read_records(path, compression=comp)) == RECORDS


def test_compression_explicit_or_by_suffix(tmp_path):
    assert resolve_compression("a.tfrecord.gz") == "gzip"
    assert resolve_compression("a.zz") == resolve_compression("a.zlib") == "zlib"
    assert resolve_compression("a.tfrecord") is None
    assert resolve_compression("a.tfrecord", "GZIP") == "gzip"
    with pytest.raises(ValueError, match="compression"):
        resolve_compression("a", "lz4")
    path = _write(str(tmp_path / "plain_name"), compression="gzip")
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    assert list(read_records(path, compression="gzip")) == RECORDS


def test_files_lists_and_globs(tmp_path):
    a = _write(str(tmp_path / "a.tfrecord"), RECORDS[:3], index=True)
    b = _write(str(tmp_path / "b.tfrecord.gz"), RECORDS[3:])
    assert list(read_records([a, b])) == RECORDS
    assert list(read_records(str(tmp_path / "*.tfrecord*"))) == RECORDS  # .idx files ignored
    assert list(read_records(tmp_path)) == RECORDS  # a directory: its shards
    assert [r for blk in read_blocks([a, b]) for r in blk] == RECORDS
    with pytest.raises(FileNotFoundError):
        read_records(str(tmp_path / "nope*.tfrecord"))


def _corrupt(path, offset):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x40
    open(path, "wb").write(bytes(data))


def _offset_of(i):
    return sum(len(frame(r)) for r in RECORDS[:i])


def test_data_crc_mismatch_names_file_index_offset(tmp_path):
    path = _write(str(tmp_path / "a.tfrecord"))
    _corrupt(path, _offset_of(3) + 12 + 5)
    with pytest.raises(CorruptRecordError) as err:
        list(read_records(path))
    e = err.value
    assert (e.file, e.index, e.offset) == (path, 3, _offset_of(3))
    assert "data checksum" in e.reason and path in str(e) and "record 3" in str(e)
    assert len(list(read_records(path, verify=False))) == len(RECORDS)


def test_skip_reports_count_and_offsets(tmp_path, caplog):
    path = _write(str(tmp_path / "a.tfrecord"))
    _corrupt(path, _offset_of(2) + 12 + 1)  # data of record 2
    _corrupt(path, _offset_of(4) + 3)  # length of record 4: resync to record 5
    reader = read_records(path, on_corrupt="skip")
    with caplog.at_level(logging.WARNING, logger="shardforge.records"):
        got = list(reader)
    assert got == [r for i, r in enumerate(RECORDS) if i not in (2, 4)]
    assert reader.report.skipped == 2
    assert reader.report.skipped_offsets == [(path, _offset_of(2)), (path, _offset_of(4))]
    assert [p.index for p in reader.report.problems] == [2, 4]
    assert "length checksum" in reader.report.problems[1].reason
    assert reader.report.records == len(RECORDS) - 2
    assert sum("skipping corrupt data" in r.message for r in caplog.records) == 2


@pytest.mark.parametrize("cut", [5, 12 + 3])
def test_truncated_last_record_says_so(tmp_path, cut):
    path = _write(str(tmp_path / "a.tfrecord"))
    size = _offset_of(len(RECORDS) - 1) + cut
    os.truncate(path, size)
    with pytest.raises(CorruptRecordError, match="truncated") as err:
        list(read_records(path))
    assert err.value.index == len(RECORDS) - 1 and err.value.offset == _offset_of(len(RECORDS) - 1)
    reader = read_records(path, on_corrupt="skip")
    assert list(reader) == RECORDS[:-1]
    assert reader.report.skipped == 1 and "truncated" in reader.report.problems[0].reason


def test_corrupt_and_truncated_gzip(tmp_path):
    path = _write(str(tmp_path / "a.tfrecord.gz"))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(CorruptRecordError):
        list(read_records(path))
    reader = read_records(path, on_corrupt="skip")
    got = list(reader)
    assert got == RECORDS[: len(got)] and reader.report.skipped >= 1
    bad = bytearray(data)
    bad[len(bad) // 2 : len(bad) // 2 + 64] = b"\0" * 64
    open(path, "wb").write(bytes(bad))
    with pytest.raises(CorruptRecordError):
        list(read_records(path))


def test_multi_member_gzip(tmp_path):
    path = str(tmp_path / "m.tfrecord.gz")
    with open(path, "wb") as f:
        for r in RECORDS:
            f.write(gzip.compress(frame(r)))
    assert list(read_records(path)) == RECORDS


def test_huge_length_without_verify_is_truncation_not_allocation(tmp_path):
    path = str(tmp_path / "a.tfrecord")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 1 << 60) + b"\0" * 20)
    with pytest.raises(CorruptRecordError, match="truncated"):
        list(read_records(path, verify=False))
    with pytest.raises(CorruptRecordError, match="length checksum"):
        list(read_records(path))


def test_table_crc_fallback_matches_native(tmp_path, monkeypatch):
    import google_crc32c
    import numpy as np

    from shardforge.records import _kernels as K

    data = os.urandom(1001)
    buf = np.frombuffer(data, dtype=np.uint8)
    assert K.crc32c(buf, 3, 1000, K.CRC_TABLES) == google_crc32c.value(data[3:1000])
    path = _write(str(tmp_path / "a.tfrecord"))
    _corrupt(path, _offset_of(5) + 12 + 2)
    monkeypatch.setattr(K, "CRC_FN", 0)  # as on a platform without the native library
    reader = read_records(path, on_corrupt="skip")
    assert list(reader) == RECORDS[:5] + RECORDS[6:]
    assert reader.report.skipped_offsets == [(path, _offset_of(5))]
