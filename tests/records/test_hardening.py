"""No input crashes the interpreter or returns another record's data: checked indexes, bounded
offsets, and a fast decoder that rejects or reads exactly what protobuf rejects or reads."""

import json
import os
import subprocess
import sys

import google_crc32c
import numpy as np
import pytest

from shardforge.protos import example_pb2
from shardforge.records import (
    ExampleDecodeError,
    FixedLen,
    IndexFileError,
    RecordBlock,
    RecordFile,
    TFRecordWriter,
    VarLen,
    decode_batch,
    decode_batch_reference,
    encode_example,
    index_path,
    load_index,
)
from shardforge.records import example as example_module
from shardforge.records.index import _HEADER

from . import fuzz
from .conftest import assert_batches_equal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDS = [f"rec-{i}-".encode() * (1 + i % 13) for i in range(128)]


# --- index files --------------------------------------------------------------------------------


def _write(path, records):
    with TFRecordWriter(path, index=True, flush_every=256) as w:
        w.write_block(RecordBlock.from_records(records))
    return path


def _relie(path, edit):
    """Rewrite the index's columns with ``edit(cols)`` under a valid checksum (a lying index)."""
    raw = open(index_path(path), "rb").read()
    magic, n, ncols, size, stream, checksum, _ = _HEADER.unpack_from(raw)
    wide = 2 if ncols == 3 else 4  # int64 columns; the uint32 tags and checks follow them
    cols = np.frombuffer(raw[_HEADER.size :], dtype="<i8", count=wide * n).reshape(wide, n).copy()
    edit(cols)
    data = cols.tobytes() + raw[_HEADER.size + wide * n * 8 :]
    open(index_path(path), "wb").write(
        _HEADER.pack(magic, n, ncols, size, stream, checksum, google_crc32c.value(data)) + data
    )


def _swap(c):
    c[0, [3, 7]] = c[0, [7, 3]]


def _shift(c):
    c[0, 5] += 16


def _grow(c):
    c[1, 5] += 1


def _shrink_last(c):
    c[1, 127] -= 1


@pytest.mark.parametrize("suffix", [".tfrecord", ".tfrecord.gz"])
@pytest.mark.parametrize("edit,reason", [
    (_swap, "back to back"), (_shift, "back to back"), (_grow, "back to back"),
    (_shrink_last, "records end at byte"),
])
def test_lying_index_is_an_error_naming_the_file(tmp_path, suffix, edit, reason):
    """Swapped, shifted or resized entries (with a valid checksum) never make rf[i] record j."""
    path = _write(str(tmp_path / f"a{suffix}"), RECORDS)
    _relie(path, edit)
    with pytest.raises(IndexFileError, match=reason) as err:
        RecordFile(path)
    assert index_path(path) in str(err.value) and "shardforge index" in str(err.value)


def test_a_shard_rewritten_under_its_old_index_is_stale(tmp_path):
    """The issue's case: a gzip shard rewritten with 128 records under its 64-record index."""
    path = _write(str(tmp_path / "a.tfrecord.gz"), RECORDS[:64])
    old = open(index_path(path), "rb").read()
    _write(path, RECORDS)
    open(index_path(path), "wb").write(old)
    with pytest.raises(IndexFileError, match="stale"):
        RecordFile(path)


@pytest.mark.parametrize("suffix", [".tfrecord", ".tfrecord.gz"])
def test_damaged_index_files_are_errors_not_crashes(tmp_path, suffix):
    path = _write(str(tmp_path / f"a{suffix}"), RECORDS)
    raw = open(index_path(path), "rb").read()
    rng = np.random.default_rng(0)
    for _ in range(60):
        b = bytearray(raw)
        b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        open(index_path(path), "wb").write(bytes(b))
        with pytest.raises(IndexFileError):
            RecordFile(path)
    for cut in (0, 7, 30, len(raw) - 8):
        open(index_path(path), "wb").write(raw[:cut])
        with pytest.raises(IndexFileError):
            RecordFile(path)
    open(index_path(path), "wb").write(b"SFIDX001" + raw[8:])
    with pytest.raises(IndexFileError, match="version 001 is not supported"):
        load_index(path)


def test_length_header_is_checked_without_verify(tmp_path):
    """verify=False skips data CRCs, not the check that a record sits where the index says."""
    path = _write(str(tmp_path / "a.tfrecord"), RECORDS)
    idx = load_index(path)
    data = bytearray(open(path, "rb").read())
    o = int(idx.offsets[9])
    data[o] ^= 1  # record 9's length field (its header checksum no longer matches)
    open(path, "wb").write(bytes(data))
    from shardforge.records.index import write_index

    write_index(path, idx)
    rf = RecordFile(path, verify=False)
    assert rf[8] == RECORDS[8]
    with pytest.raises(ValueError, match="record 9 .*length checksum"):
        rf[9]


def test_out_of_range_block_offsets_into_decode_batch():
    block = RecordBlock.from_records([encode_example({"a": 1})] * 3)
    spec = {"a": FixedLen("int64")}
    for offsets, lengths in (([0, 5, 2**40], [5, 5, 5]), ([0, -3, 10], [5, 5, 5]),
                             ([0, 5, 10], [5, 5, 2**63 - 1])):
        with pytest.raises(ValueError, match="record 1|record 2"):
            decode_batch(RecordBlock(block.buf, np.array(offsets), np.array(lengths)), spec)


# --- the decoder against protobuf ------------------------------------------------------------


def _entry(key: bytes, feature: bytes) -> bytes:
    e = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(feature)]) + feature
    return b"\x0a" + bytes([len(e)]) + e


def _example(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return b"\x0a" + bytes([len(body)]) + body if len(body) < 128 else \
        b"\x0a" + bytes([len(body) & 0x7F | 0x80, len(body) >> 7]) + body


def _both(records, spec):
    """decode_batch and the protobuf reference agree; returns the batch or "rejected"."""
    out = []
    for decode in (decode_batch, decode_batch_reference):
        try:
            out.append(decode(records, spec))
        except ExampleDecodeError:
            out.append("rejected")
    fast, ref = out
    if isinstance(fast, str) or isinstance(ref, str):
        assert fast == ref, (fast, ref)
    else:
        assert_batches_equal(fast, ref)
    return fast


@pytest.fixture
def no_fallback(monkeypatch):
    """Fail if decode_batch hands the batch to the reference parser: the compiled code decides."""
    def fail(*_):
        raise AssertionError("fell back to the reference parser")

    monkeypatch.setattr(example_module, "decode_batch_reference", fail)
    yield
    monkeypatch.undo()


def test_eleven_byte_varint_scalar_is_rejected(no_fallback):
    rec = _example(_entry(b"n", b"\x1a\x0d\x0a\x0b" + b"\x80" * 10 + b"\x01"))
    with pytest.raises(ExampleDecodeError, match="too long"):
        decode_batch([rec], {"n": FixedLen("int64")})
    ten = _example(_entry(b"n", b"\x1a\x0c\x0a\x0a" + b"\xff" * 9 + b"\x01"))
    assert decode_batch([ten], {"n": FixedLen("int64")})["n"].tolist() == [-1]


def _int_entry(key: bytes, payload: bytes) -> bytes:
    """A map entry whose Feature holds one packed int64 run of ``payload`` bytes."""
    return _entry(key, b"\x1a" + bytes([len(payload) + 2]) + b"\x0a" + bytes([len(payload)])
                  + payload)


@pytest.mark.parametrize("second,ok", [
    (b"\xac\x02", True),  # another 2-byte value: the shortcut through the first record's bytes
    (b"\x01\x02", False),  # two values in as many bytes: 2 values for a scalar
    (b"\x81\x81", False),  # a value that runs past its list
    (b"\x80\x00", True),  # a non-minimal zero
])
def test_records_alike_but_for_their_values(second, ok, no_fallback):
    # record 1 has record 0's bytes but for the value: the decoder must still read the value as
    # protobuf does, however it found the feature
    x = _entry(b"x", b"\x12\x06\x0a\x04" + bytes(4))
    first, rec = (_example(_int_entry(b"n", value), x) for value in (b"\xac\x02", second))
    spec = {"n": FixedLen("int64"), "x": FixedLen("float32")}
    try:
        got = decode_batch([first, rec, first], spec)
    except ExampleDecodeError as err:
        assert not ok and err.index == 1, err
        assert _both([first, rec], spec) == "rejected"
        return
    assert ok
    assert got["n"].tolist() == [300, 300 if second == b"\xac\x02" else 0, 300]
    _both([first, rec, first], spec)


def test_non_minimal_lengths_read_as_protobuf_reads_them():
    # the FloatList: a packed run whose length is 0x80 0x00 (zero), then 25 unpacked
    # floats and an unknown field: 130 bytes, so the old one-byte shortcut read 32 values
    floats = np.arange(25, dtype="<f4")
    flist = b"\x0a\x80\x00" + b"".join(b"\x0d" + f.tobytes() for f in floats) + b"\x10\x01"
    assert len(flist) == 130
    feature = b"\x12\x82\x01" + flist
    e = b"\x0a\x01x\x12" + bytes([len(feature) & 0x7F | 0x80, len(feature) >> 7]) + feature
    rec = b"\x0a" + bytes([(len(e) + 3) & 0x7F | 0x80, (len(e) + 3) >> 7]) + \
        b"\x0a" + bytes([len(e) & 0x7F | 0x80, len(e) >> 7]) + e
    assert list(example_pb2.Example.FromString(rec).features.feature["x"].float_list.value) == \
        floats.tolist()
    got = _both([rec], {"x": VarLen("float32")})
    assert got["x"].values.tolist() == floats.tolist()
    # non-minimal lengths at every level: entry, key, value, list, packed run, and values
    def ld(tag: int, payload: bytes) -> bytes:  # a length as two bytes: 0x80 | n, 0x00
        assert len(payload) < 128
        return bytes([tag, 0x80 | len(payload), 0]) + payload

    nm = ld(0x0A, ld(0x0A, ld(0x0A, b"k") + ld(0x12, ld(0x1A, ld(0x0A, b"\x85\x00")))))
    assert _both([nm], {"k": FixedLen("int64")})["k"].tolist() == [5]


@pytest.mark.parametrize("feature,ok", [
    (b"\x12\x03\x0a\x01\x05", False),  # packed floats not a multiple of 4
    (b"\x1a\x0d\x0a\x0b" + b"\x80" * 10 + b"\x01", False),  # an 11-byte varint
    (b"\x1a\x03\x0a\x01\x85", False),  # a packed run ending inside a varint
    (b"\x1a\x03\x0a\x01\x05", True),
])
def test_features_not_in_the_spec_are_checked_like_protobuf(feature, ok, no_fallback):
    rec = _example(_entry(b"a", b"\x1a\x03\x0a\x01\x07"), _entry(b"other", feature))
    got = _both([rec], {"a": FixedLen("int64")})
    assert (got != "rejected") == ok


@pytest.mark.parametrize("key,ok", [
    ("é".encode(), True), ("€𝄞".encode(), True), (b"\xff", False), (b"\xc0\x80", False),
    (b"\xed\xa0\x80", False), (b"\xf4\x90\x80\x80", False), (b"\xe2\x82", False),
])
def test_keys_must_be_utf8_as_protobuf_requires(key, ok, no_fallback):
    rec = _example(_entry(b"a", b"\x1a\x03\x0a\x01\x07"), _entry(key, b"\x12\x00"))
    assert (_both([rec], {"a": FixedLen("int64")}) != "rejected") == ok


@pytest.mark.parametrize("first,last,ok", [
    (b"\xff", b"a", False), (b"\xff", b"other", False), (b"a", b"\xed\xa0\x80", False),
    (b"\xc0\x80", b"", False), (b"other", b"a", True), ("é".encode(), b"other", True),
])
def test_every_key_field_of_an_entry_must_be_utf8(first, last, ok):
    """An entry with two key fields: protobuf checks both and keeps the last."""
    value = b"\x12\x05\x1a\x03\x0a\x01\x07"
    e = b"".join(b"\x0a" + bytes([len(k)]) + k for k in (first, last)) + value
    rec = _example(b"\x0a" + bytes([len(e)]) + e)
    for spec in ({"a": FixedLen("int64", default=-1)}, {}):
        assert (_both([rec], spec) != "rejected") == ok


def test_keys_anywhere_agree_with_protobuf():
    """tests/records/fuzz.py's key family: invalid UTF-8 (overlong forms, surrogates, past
    U+10FFFF, cut sequences) anywhere a map key can be, decoded like protobuf decodes it."""
    rng = np.random.default_rng(25)
    for _ in range(2000):
        fuzz.key_case(rng, decode_batch_reference)


@pytest.mark.parametrize("tail,ok", [
    (b"\x90\x80\x80\x80\x00\x01", True),  # a 5-byte tag: fine
    (b"\x90\x80\x80\x80\x80\x00\x01", False),  # a 6-byte tag
    (b"\x88\x80\x80\x80\x70\x01", False),  # a tag beyond 32 bits
    (b"\x13\x08\x01\x14", True),  # an unknown group: skipped
    (b"\x14", False),  # an end-group tag without its start
    (b"\x07", False),  # wire type 7
])
def test_tags_and_groups(tail, ok):
    rec = _example(_entry(b"a", b"\x1a\x03\x0a\x01\x07")) + tail
    assert (_both([rec], {"a": FixedLen("int64", default=0)}) != "rejected") == ok


def test_map_entry_with_unknown_field_is_dropped_like_protobuf():
    # protobuf puts an entry with an unknown field among the unknown fields: the key is absent
    e = b"\x0a\x01a\x18\x01\x12\x05\x1a\x03\x0a\x01\x07"
    rec = _example(b"\x0a" + bytes([len(e)]) + e)
    assert _both([rec], {"a": FixedLen("int64", default=-1)})["a"].tolist() == [-1]


def test_fuzz_the_compiled_code_in_a_subprocess():
    """tests/records/fuzz.py for a few seconds (SHARDFORGE_FUZZ_SECONDS for longer) in a child
    process, so that a segfault is a failed test; it reports how many cases it ran."""
    seconds = os.environ.get("SHARDFORGE_FUZZ_SECONDS", "4")
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "records", "fuzz.py"),
                           "--seconds", seconds], capture_output=True, text=True, env=env,
                          timeout=float(seconds) + 300)
    assert proc.returncode == 0, f"fuzz exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    print("fuzz cases:", counts)
    assert counts["decoder_compiled"] > 0 and counts["index"] > 0 and counts["block"] > 0


def test_ragged_splits_that_decrease_are_refused_before_compiled_code():
    from shardforge.records import Ragged, encode_batch

    values = np.array([b"a", b"b", b"c"], dtype=object)
    with pytest.raises(ValueError, match="row 1 ends at 2 before it starts at 5"):
        encode_batch({"s": Ragged(values, [0, 5, 2, 3])})
    with pytest.raises(ValueError, match="must not decrease"):
        Ragged(np.arange(3), [0, 2, 1, 3])
