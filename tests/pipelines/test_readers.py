"""The input-format readers, in-process: values, missing values, row ids, unreadable records."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardforge.pipelines import readers
from shardforge.pipelines.readers import base
from shardforge.pipelines.readers import parquet as parquet_reader


def _values(values, n):
    from shardforge.records.spec import Ragged

    if values is None:
        return [None] * n
    if isinstance(values, Ragged):
        return [r.tolist() or None for r in values]
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)


def _all(items):
    chunks = [i for i in items if isinstance(i, readers.RawChunk)]
    errors = [i for i in items if isinstance(i, readers.ReadError)]
    ids = [c.row_id(i) for c in chunks for i in range(c.count)]
    cols = {}
    for c in chunks:
        for name, values in c.columns.items():
            cols.setdefault(name, []).extend(_values(values, c.count))
    return ids, cols, errors


def test_csv_header_missing_and_line_numbers(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('x,y,unused\n1,a,q\n,"b\nc",q\n3,d\n4,,q\n')
    items = readers.read_file(str(path), "csv", ["x", "y", "absent"], chunk_rows=2)
    ids, cols, errors = _all(list(items))
    # fields stay bytes until coerced; an empty field is b""
    assert cols == {"x": [b"1", b"", b"4"], "y": [b"a", b"b\nc", b""], "absent": [None] * 3}
    # a quoted newline makes one record span lines 3-4; ids name the first line of a record
    assert ids == [f"{path}:2", f"{path}:3", f"{path}:6"]
    assert [e.source for e in errors] == [f"{path}:5"]
    assert "expected 3 fields" in errors[0].reason


def test_jsonl_bad_json_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"x": 1, "y": [1, 2]}\n{"x": \n[1]\n\n{"y": null}\n')
    ids, cols, errors = _all(list(readers.read_file(str(path), "jsonl", ["x", "y"])))
    assert cols == {"x": [1, None], "y": [[1, 2], None]}
    assert ids == [f"{path}:1", f"{path}:5"]
    assert [e.source for e in errors] == [f"{path}:2", f"{path}:3"]
    assert errors[0].reason.startswith("invalid JSON")
    assert "expected a JSON object" in errors[1].reason


def test_parquet_batches_and_row_ids(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": [1.5, None, 3.0], "w": [["a"], [], ["b", "c"]]}), path)
    items = list(readers.read_file(str(path), "parquet", ["x", "w", "absent"], chunk_rows=2))
    assert len(items) == 2
    ids, cols, errors = _all(items)
    assert cols == {"x": [1.5, None, 3.0], "w": [["a"], [], ["b", "c"]], "absent": [None] * 3}
    assert ids == [f"{path}:row {i}" for i in range(3)] and not errors


def test_tfrecord_offsets_and_values(tmp_path):
    from shardforge.records import TFRecordWriter, encode_example
    from shardforge.records.spec import FixedLen, VarLen

    path = tmp_path / "a.tfrecord"
    examples = [{"x": [1], "w": [b"a", b"b"]}, {"x": [2]}]
    payloads = [encode_example(e) for e in examples]
    with TFRecordWriter(str(path)) as w:
        for p in payloads:
            w.write(p)
    spec = {"x": FixedLen("int64"), "w": VarLen("bytes")}
    ids, cols, errors = _all(list(readers.read_file(str(path), "tfrecord", spec)))
    # every input comes as a value list; coercion checks the counts against the declarations
    assert cols == {"x": [[1], [2]], "w": [[b"a", b"b"], None]}
    assert ids == [f"{path}@0", f"{path}@{len(payloads[0]) + 16}"] and not errors


def test_text_is_one_record_per_file(tmp_path):
    (tmp_path / "m.py").write_text("print('hi')\n")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe not utf-8")
    _, cols, _ = _all(list(readers.read_file(str(tmp_path / "m.py"), "text", ["text", "path"])))
    assert cols == {"text": ["print('hi')\n"], "path": [str(tmp_path / "m.py")]}
    _, cols, _ = _all(list(readers.read_file(str(tmp_path / "b.txt"), "text", ["text"])))
    assert cols == {"text": [b"\xff\xfe not utf-8"]}


def test_gzip_csv_is_read_transparently(tmp_path):
    import gzip

    path = tmp_path / "a.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("x\n1\n2\n")
    assert readers.infer_format(str(path)) == "csv"
    assert _all(list(readers.read_file(str(path), "csv", ["x"])))[1] == {"x": [b"1", b"2"]}


@pytest.mark.parametrize("name,fmt", [("a.csv", "csv"), ("d/*.jsonl", "jsonl"), ("x.parquet",
                         "parquet"), ("s.tfrecord.gz", "tfrecord"), ("f.txt", "text")])
def test_infer_format(name, fmt):
    assert readers.infer_format(name) == fmt


def test_infer_format_names_the_flag():
    with pytest.raises(ValueError, match="--format"):
        readers.infer_format("data.bin")


def test_missing_mask():
    import numpy as np

    assert base.missing_mask(pa.array([b"1", b"", None]), 3).tolist() == [False, True, True]
    assert base.missing_mask(pa.array([[1], [], None]), 3).tolist() == [False, True, True]
    assert base.missing_mask(None, 2).tolist() == [True, True]
    assert base.missing_mask([None, "", [], 0.0], 4).tolist() == [True, True, True, False]
    assert isinstance(base.missing_mask(pa.array([1.0]), 1), np.ndarray)
    assert json.dumps(readers.ReadError("f:1", "bad").to_json())


def test_row_ids_are_built_from_the_chunk_source():
    import numpy as np

    chunk = readers.RawChunk("f.csv", 2, 3, {}, positions=np.array([2, 3, 7]))
    assert [chunk.row_id(i) for i in range(3)] == ["f.csv:2", "f.csv:3", "f.csv:7"]
    assert readers.RawChunk("f.pq", 10, 2, {}, kind="row").row_id(1) == "f.pq:row 11"
    tfr = readers.RawChunk("f.tfr", 0, 1, {}, np.array([16]), kind="offset")
    assert tfr.row_id(0) == "f.tfr@16"


def _read_splits(path, fmt, names, splits):
    items = [i for s in splits for i in readers.read_file(str(path), fmt, names, split=s)]
    return _all(items)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_splits_read_exactly_the_whole_file(tmp_path, fmt):
    # quoted newlines, escaped quotes and a bad row land near the cut points
    rows = []
    for i in range(3000):
        text = f'line {i}\nnext ""q""' if i % 97 == 0 else f"v{i}"
        rows.append((i, text))
    path = tmp_path / f"a.{fmt}"
    if fmt == "csv":
        body = "id,t\n" + "".join(f'{i},"{t}"\n' if "\n" in t else f"{i},{t}\n"
                                  for i, t in rows)
        body = body.replace("1500,v1500\n", "1500,v1500,extra\n")
        spec = ["id", "t"]
    else:
        body = "".join(json.dumps({"id": i, "t": t.replace('""', '"')}) + "\n" for i, t in rows)
        body = body.replace('{"id": 1500,', '{"id": 1500')
        from shardforge.records.spec import FixedLen

        spec = {"id": FixedLen("int64"), "t": FixedLen("bytes")}
    path.write_text(body)
    splits = readers.reader_for(fmt).split(str(path), 4096)
    assert len(splits) > 5
    assert splits[0].start == 0 and all(a.end == b.start for a, b in zip(splits, splits[1:]))
    whole = _read_splits(path, fmt, spec, [readers.Split(str(path), first=1)])
    parts = _read_splits(path, fmt, spec, splits)
    assert parts[0] == whole[0] and parts[1] == whole[1]
    assert [e.source for e in parts[2]] == [e.source for e in whole[2]]
    line = 1502 + sum(1 for i, t in rows[:1500] if "\n" in t) if fmt == "csv" else 1501
    assert [e.source for e in whole[2]] == [f"{path}:{line}"]
    assert len(whole[0]) == 2999


def test_parquet_splits_by_row_groups(tmp_path, monkeypatch):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), path, row_group_size=100)
    monkeypatch.setattr(parquet_reader, "SPLIT_ROWS", 250)
    splits = readers.reader_for("parquet").split(str(path), 4096)
    assert [(s.start, s.end, s.first) for s in splits] == [(0, 3, 0), (3, 6, 300), (6, 9, 600),
                                                           (9, None, 900)]
    ids, cols, _ = _read_splits(path, "parquet", ["x"], splits)
    assert cols["x"] == list(range(1000)) and ids[300] == f"{path}:row 300"
