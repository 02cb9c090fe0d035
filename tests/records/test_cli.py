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
