"""``shardforge inspect`` and ``shardforge index``."""

import json
import os

from shardforge.cli import main
from shardforge.records import ShardedWriter, encode_example, index_path, read_index


def _shards(tmp_path, compression=None):
    with ShardedWriter(tmp_path, num_shards=2, compression=compression) as w:
        for i in range(10):
            w.write(encode_example({"id": i, "tok": list(range(i % 4)), "name": f"n{i}"}))
    return w.paths


def test_inspect_text(tmp_path, capsys):
    _shards(tmp_path, "gzip")
    assert main(["inspect", str(tmp_path), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "part-00000-of-00002.tfrecord.gz: 5 records (gzip), CRC ok" in out
    assert "total: 10 records in 2 files" in out
    assert "Example 1" in out and "Example 2" not in out
    assert "name: ['n0']" in out
    assert "tok" in out and "VarLen" in out and "values/record 0..3" in out


def test_inspect_json_and_corruption(tmp_path, capsys):
    paths = _shards(tmp_path)
    assert main(["inspect", str(tmp_path / "*.tfrecord"), "--json", "--limit", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [f["records"] for f in doc["files"]] == [5, 5]
    assert doc["examples"][0]["features"]["id"] == [0]
    assert doc["spec"]["id"] == {"dtype": "int64", "kind": "FixedLen", "min_count": 1,
                                 "max_count": 1, "present": 10}
    data = bytearray(open(paths[1], "rb").read())
    data[30] ^= 1
    open(paths[1], "wb").write(bytes(data))
    assert main(["inspect", paths[1], "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["files"][0]["corrupt"][0]["index"] == 0
    assert main(["inspect", str(tmp_path / "missing*")]) == 2


def test_index_rebuilds(tmp_path, capsys):
    paths = _shards(tmp_path, "zlib")
    for p in paths:
        os.remove(index_path(p))
    assert main(["index", str(tmp_path)]) == 0
    assert "indexed 2 of 2 shards" in capsys.readouterr().out
    assert [len(read_index(p)[0]) for p in paths] == [5, 5]
    assert main(["index", str(tmp_path / "nothing*.tfrecord")]) == 2


def test_inspect_lists_bad_records_and_keeps_going(tmp_path, capsys):
    from shardforge.records import TFRecordWriter
    from shardforge.records.framing import frame

    good = [encode_example({"id": i}) for i in range(6)]
    a = str(tmp_path / "a.tfrecord")
    with TFRecordWriter(a) as w:
        for i, r in enumerate(good):
            w.write(b"plain text, not an Example" if i == 3 else r)
    b = str(tmp_path / "b.tfrecord")
    data = b"".join(frame(r) for r in good)
    damaged = bytearray(data)
    damaged[len(frame(good[0])) + 14] ^= 0x10  # record 1's data
    open(b, "wb").write(bytes(damaged) + frame(b"\x0a\x03\x0a\x01\xff"))
    assert main(["inspect", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "a.tfrecord: 6 records (none), 1 NOT tf.Example" in out
    assert "  record 3: not a tf.Example: malformed protobuf" in out
    assert "b.tfrecord: 6 records (none), 1 CORRUPT, 1 NOT tf.Example" in out
    assert "  record 1 at byte" in out and "data checksum mismatch" in out
    assert "  record 6: not a tf.Example" in out
    assert "Inferred spec (10 records)" in out  # the good ones: 5 + 5
    assert main(["inspect", str(tmp_path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["files"][0]["not_examples"][0]["index"] == 3
    assert doc["files"][1]["corrupt"][0]["index"] == 1


def test_inspect_names_where_a_feature_changes_type(tmp_path, capsys):
    with ShardedWriter(tmp_path, num_shards=1) as w:
        for i in range(5):
            w.write(encode_example({"x": 1.0 if i == 4 else 1}))
    assert main(["inspect", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"no spec: {w.paths[0]}: feature 'x' of record 4: expected int64, got float32" in out
