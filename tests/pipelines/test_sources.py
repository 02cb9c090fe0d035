"""The raw-format readers, in-process: values, missing values, row ids, unreadable records."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardforge.pipelines import sources


def _values(values, n):
    from shardforge.records.spec import Ragged

    if values is None:
        return [None] * n
    if isinstance(values, Ragged):
        return [r.tolist() or None for r in values]
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)


def _all(items):
    chunks = [i for i in items if isinstance(i, sources.RawChunk)]
    errors = [i for i in items if isinstance(i, sources.ReadError)]
    ids = [c.row_id(i) for c in chunks for i in range(c.count)]
    cols = {}
    for c in chunks:
        for name, values in c.columns.items():
            cols.setdefault(name, []).extend(_values(values, c.count))
    return ids, cols, errors


def test_csv_header_missing_and_line_numbers(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('x,y,unused\n1,a,q\n,"b\nc",q\n3,d\n4,,q\n')
    ids, cols, errors = _all(list(sources.read_csv(str(path), ["x", "y", "absent"], chunk_rows=2)))
    # fields stay bytes until coerced; an empty field is b""
    assert cols == {"x": [b"1", b"", b"4"], "y": [b"a", b"b\nc", b""], "absent": [None] * 3}
    # a quoted newline makes one record span lines 3-4; ids name the first line of a record
    assert ids == [f"{path}:2", f"{path}:3", f"{path}:6"]
    assert [e.source for e in errors] == [f"{path}:5"]
    assert "expected 3 fields" in errors[0].reason


def test_jsonl_bad_json_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"x": 1, "y": [1, 2]}\n{"x": \n[1]\n\n{"y": null}\n')
    ids, cols, errors = _all(list(sources.read_jsonl(str(path), ["x", "y"])))
    assert cols == {"x": [1, None], "y": [[1, 2], None]}
    assert ids == [f"{path}:1", f"{path}:5"]
    assert [e.source for e in errors] == [f"{path}:2", f"{path}:3"]
    assert errors[0].reason.startswith("invalid JSON")
    assert "expected a JSON object" in errors[1].reason


def test_parquet_batches_and_row_ids(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": [1.5, None, 3.0], "w": [["a"], [], ["b", "c"]]}), path)
    items = list(sources.read_parquet(str(path), ["x", "w", "absent"], chunk_rows=2))
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
    ids, cols, errors = _all(list(sources.read_file(str(path), "tfrecord", spec)))
    # every input comes as a value list; coercion checks the counts against the declarations
    assert cols == {"x": [[1], [2]], "w": [[b"a", b"b"], None]}
    assert ids == [f"{path}@0", f"{path}@{len(payloads[0]) + 16}"] and not errors


def test_text_is_one_record_per_file(tmp_path):
    (tmp_path / "m.py").write_text("print('hi')\n")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe not utf-8")
    _, cols, _ = _all(list(sources.read_text(str(tmp_path / "m.py"), ["text", "path"])))
    assert cols == {"text": ["print('hi')\n"], "path": [str(tmp_path / "m.py")]}
    _, cols, _ = _all(list(sources.read_text(str(tmp_path / "b.txt"), ["text"])))
    assert cols == {"text": [b"\xff\xfe not utf-8"]}


def test_gzip_csv_is_read_transparently(tmp_path):
    import gzip

    path = tmp_path / "a.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("x\n1\n2\n")
    assert sources.infer_format(str(path)) == "csv"
    assert _all(list(sources.read_csv(str(path), ["x"])))[1] == {"x": [b"1", b"2"]}


@pytest.mark.parametrize("name,fmt", [("a.csv", "csv"), ("d/*.jsonl", "jsonl"), ("x.parquet",
                         "parquet"), ("s.tfrecord.gz", "tfrecord"), ("f.txt", "text")])
def test_infer_format(name, fmt):
    assert sources.infer_format(name) == fmt


def test_infer_format_names_the_flag():
    with pytest.raises(ValueError, match="--format"):
        sources.infer_format("data.bin")


def test_missing_mask():
    import numpy as np

    assert sources.missing_mask(pa.array([b"1", b"", None]), 3).tolist() == [False, True, True]
    assert sources.missing_mask(pa.array([[1], [], None]), 3).tolist() == [False, True, True]
    assert sources.missing_mask(None, 2).tolist() == [True, True]
    assert sources.missing_mask([None, "", [], 0.0], 4).tolist() == [True, True, True, False]
    assert isinstance(sources.missing_mask(pa.array([1.0]), 1), np.ndarray)
    assert json.dumps(sources.ReadError("f:1", "bad").to_json())


def test_row_ids_are_built_from_the_chunk_source():
    import numpy as np

    chunk = sources.RawChunk("f.csv", 2, 3, {}, positions=np.array([2, 3, 7]))
    assert [chunk.row_id(i) for i in range(3)] == ["f.csv:2", "f.csv:3", "f.csv:7"]
    assert sources.RawChunk("f.pq", 10, 2, {}, kind="row").row_id(1) == "f.pq:row 11"
    tfr = sources.RawChunk("f.tfr", 0, 1, {}, np.array([16]), kind="offset")
    assert tfr.row_id(0) == "f.tfr@16"
