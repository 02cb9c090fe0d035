"""The output contract (records/layout.py): names, sizes, schema discovery, atomic writes."""

import os
import stat

import pytest

from shardforge.records import layout


def test_shard_names_for_every_compression():
    # the suffixes TensorFlow users and `shardforge inspect` expect for each compression
    assert [layout.shard_name(1, 4, c) for c in (None, "none", "gzip", "zlib", "ZLIB")] == [
        "part-00001-of-00004.tfrecord", "part-00001-of-00004.tfrecord",
        "part-00001-of-00004.tfrecord.gz", "part-00001-of-00004.tfrecord.zz",
        "part-00001-of-00004.tfrecord.zz"]
    with pytest.raises(ValueError, match="none, gzip, zlib"):
        layout.shard_name(0, 1, "snappy")


def test_parse_size_unit_rule():
    assert layout.parse_size("128MiB") == layout.parse_size("128M") == 128 * 2**20
    assert layout.parse_size("128MB") == 128 * 10**6 and layout.parse_size(" 1.5 gb ") == 1.5e9
    assert layout.parse_size("4096") == 4096 and layout.parse_size("80", bare=10**9) == 80e9
    for bad in ("eighty", "12 parsecs", ""):
        with pytest.raises(ValueError, match="128MiB"):
            layout.parse_size(bad)


def test_find_schema_from_output_split_or_shard(tmp_path):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    shard = out / "train" / "part-00000-of-00001.tfrecord"
    shard.write_bytes(b"")
    assert layout.find_schema(out) is None
    (out / layout.SCHEMA_FILE).write_text("")
    want = str(out / layout.SCHEMA_FILE)
    assert layout.find_schema(out) == layout.find_schema(out / "train") == want
    assert layout.find_schema(shard) == want


def test_atomic_write_replaces_whole_files_with_the_usual_mode(tmp_path):
    path = tmp_path / "sub" / "f.json"
    path.parent.mkdir()
    layout.atomic_write(path, b"old")
    layout.atomic_write(path, [b"n", b"ew"])
    assert path.read_bytes() == b"new"
    layout.atomic_write(path, "text")
    assert path.read_text() == "text"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        layout.atomic_write(path, lambda f: (f.write(b"half"), (_ for _ in ()).throw(
            RuntimeError("disk gone"))))
    assert path.read_text() == "text" and os.listdir(path.parent) == ["f.json"]
