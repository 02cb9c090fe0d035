"""tf.Example codec and batch decoding, with TensorFlow's parse_example as the oracle."""

import numpy as np
import pytest

from shardforge.protos import example_pb2
from shardforge.records import (
    ExampleDecodeError,
    FixedLen,
    Ragged,
    TFRecordWriter,
    VarLen,
    decode_batch,
    decode_batch_reference,
    decode_example,
    decode_sequence_example,
    encode_example,
    encode_sequence_example,
    infer_spec,
    read_records,
)

from .conftest import COMPRESSIONS, assert_batches_equal

SPEC = {
    "id": FixedLen("int64"),
    "score": FixedLen("float32"),
    "vec": FixedLen("float32", shape=(2, 3)),
    "label": FixedLen("bytes", default="none"),
    "weight": FixedLen("float32", default=1.5),
    "tokens": VarLen("int64"),
    "words": VarLen("bytes"),
    "scores": VarLen("float32"),
}


def _rows(n=40):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        row = {
            "id": int(rng.integers(-(2**63), 2**63 - 1)),
            "score": float(rng.standard_normal()),
            "vec": rng.standard_normal((2, 3)).astype(np.float32),
            "tokens": rng.integers(-5, 1 << 40, size=int(rng.integers(0, 9))),
            "words": [f"w{j}é".encode() for j in range(i % 3)],
            "scores": rng.standard_normal(i % 4).astype(np.float32),
            "unused": "ignored",
        }
        if i % 3:
            row["label"] = f"lab\0{i}"  # embedded and trailing NULs survive
        if i % 4 == 0:
            row["weight"] = 0.25
        rows.append(row)
    return rows


def _tf_spec(tf):
    return {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "score": tf.io.FixedLenFeature([], tf.float32),
        "vec": tf.io.FixedLenFeature([2, 3], tf.float32),
        "label": tf.io.FixedLenFeature([], tf.string, default_value="none"),
        "weight": tf.io.FixedLenFeature([], tf.float32, default_value=1.5),
        "tokens": tf.io.RaggedFeature(tf.int64),
        "words": tf.io.RaggedFeature(tf.string),
        "scores": tf.io.RaggedFeature(tf.float32),
    }


def _assert_batch_equals_tf(ours, theirs):
    for name, col in ours.items():
        t = theirs[name]
        if isinstance(col, Ragged):
            assert col.row_splits.tolist() == t.row_splits.numpy().tolist(), name
            np.testing.assert_array_equal(col.values, t.values.numpy(), err_msg=name)
        else:
            np.testing.assert_array_equal(col, t.numpy(), err_msg=name)
            assert col.dtype == (object if t.dtype.name == "string" else t.numpy().dtype)


@pytest.mark.parametrize("comp,suffix,tf_type", COMPRESSIONS)
def test_tensorflow_parses_what_we_write(tmp_path, tf, comp, suffix, tf_type):
    path = str(tmp_path / f"a{suffix}")
    serialized = [encode_example(r) for r in _rows()]
    with TFRecordWriter(path) as w:
        for s in serialized:
            w.write(s)
    ds = tf.data.TFRecordDataset(path, compression_type=tf_type).batch(1000)
    theirs = tf.io.parse_example(next(iter(ds)), _tf_spec(tf))
    ours = decode_batch(list(read_records(path)), SPEC)
    _assert_batch_equals_tf(ours, theirs)
    assert_batches_equal(ours, decode_batch_reference(serialized, SPEC))


def test_we_parse_what_tensorflow_writes(tf):
    def feature(v):
        v = np.asarray(v)
        if v.dtype.kind == "f":
            return tf.train.Feature(float_list=tf.train.FloatList(value=v.ravel()))
        if v.dtype.kind in "SO":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(v.ravel())))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v.ravel()))

    serialized = []
    for row in _rows():
        row.pop("unused")
        row = {k: (np.array([v.encode()], dtype=object) if isinstance(v, str) else v)
               for k, v in row.items()}
        if row["words"]:
            row["words"] = np.array(row["words"], dtype=object)
        else:
            del row["words"]  # missing: an empty row, like an empty list would be for TF
        feats = {k: feature(v) for k, v in row.items()}
        serialized.append(tf.train.Example(features=tf.train.Features(feature=feats))
                          .SerializeToString())
    theirs = tf.io.parse_example(serialized, _tf_spec(tf))
    _assert_batch_equals_tf(decode_batch(serialized, SPEC), theirs)
    assert decode_example(serialized[1])["label"].tolist() == [b"lab\x001"]


def test_encode_decode_example_types():
    data = encode_example({
        "i": 3, "b": True, "f": 0.5, "s": "héllo", "raw": b"\x00\xff", "ints": [1, 2],
        "floats": (1.0, 2.5), "strs": ["a", b"b"], "arr": np.arange(6).reshape(2, 3),
        "farr": np.ones(2, np.float16), "empty": [], "none": None,
    })
    ex = decode_example(data)
    assert ex["i"].tolist() == [3] and ex["i"].dtype == np.int64
    assert ex["b"].tolist() == [1]
    assert ex["f"].tolist() == [0.5] and ex["f"].dtype == np.float32
    assert ex["s"].tolist() == ["héllo".encode()] and ex["raw"].tolist() == [b"\x00\xff"]
    assert ex["arr"].tolist() == list(range(6)) and ex["farr"].dtype == np.float32
    assert ex["strs"].tolist() == [b"a", b"b"] and ex["floats"].tolist() == [1.0, 2.5]
    assert len(ex["empty"]) == 0 and "none" not in ex
    with pytest.raises(TypeError, match="'bad'"):
        encode_example({"bad": [object()]})


def test_sequence_example_both_ways(tf):
    data = encode_sequence_example(
        {"length": 2, "name": "seq"},
        {"tokens": [[1, 2, 3], [4]], "probs": [np.array([0.5, 0.25], np.float32), [1.0]]},
    )
    ctx, seq = tf.io.parse_single_sequence_example(
        data,
        context_features={"length": tf.io.FixedLenFeature([], tf.int64),
                          "name": tf.io.FixedLenFeature([], tf.string)},
        sequence_features={"tokens": tf.io.RaggedFeature(tf.int64),
                           "probs": tf.io.RaggedFeature(tf.float32)},
    )
    assert int(ctx["length"]) == 2 and ctx["name"].numpy() == b"seq"
    assert seq["tokens"].to_list() == [[1, 2, 3], [4]]
    assert seq["probs"].to_list() == [[0.5, 0.25], [1.0]]
    theirs = tf.train.SequenceExample.FromString(data).SerializeToString()
    context, lists = decode_sequence_example(theirs)
    assert context["length"].tolist() == [2] and context["name"].tolist() == [b"seq"]
    assert [x.tolist() for x in lists["tokens"]] == [[1, 2, 3], [4]]
    with pytest.raises(ExampleDecodeError):
        decode_sequence_example(b"\xff\xff")


@pytest.mark.parametrize("decode", [decode_batch, decode_batch_reference])
def test_decode_errors_name_feature_record_and_types(decode):
    good = encode_example({"a": 1, "b": [1.0, 2.0]})
    spec = {"a": FixedLen("int64"), "b": FixedLen("float32", shape=(2,))}
    cases = [
        (encode_example({"a": "x", "b": [1.0, 2.0]}), "a", "int64", "bytes"),
        (encode_example({"a": 1, "b": [1.0]}), "b", "2 float32 values", "1 values"),
        (encode_example({"b": [1.0, 2.0]}), "a", "int64", "missing"),
        (encode_example({"a": 1.5, "b": [1.0, 2.0]}), "a", "int64", "float32"),
    ]
    for bad, feature, expected, actual in cases:
        with pytest.raises(ExampleDecodeError) as err:
            decode([good, good, bad], spec)
        e = err.value
        assert (e.feature, e.index) == (feature, 2)
        assert expected in e.expected and actual in e.actual
        assert f"feature {feature!r} of record 2" in str(e)
    with pytest.raises(ExampleDecodeError, match="record 1") as err:
        decode([good, b"\x0a\x05\x01"], spec)
    assert err.value.feature is None


@pytest.mark.parametrize("decode", [decode_batch, decode_batch_reference])
def test_decode_error_is_the_first_problem_by_feature_then_record(decode):
    spec = {"a": FixedLen("int64", shape=(2,)), "b": FixedLen("int64"), "c": VarLen("float32")}
    ok = {"a": [1, 2], "b": 3, "c": [0.5]}
    rows = [ok, {**ok, "c": "x"}, {**ok, "b": 1.5}, {**ok, "a": [1]}, {**ok, "b": None},
            {**ok, "a": "y"}]
    records = [encode_example(r) for r in rows]
    # feature a first: its wrong kind (record 5) before its wrong count (record 3)
    with pytest.raises(ExampleDecodeError) as err:
        decode(records, spec)
    assert (err.value.feature, err.value.index, err.value.actual) == ("a", 5, "bytes")
    with pytest.raises(ExampleDecodeError) as err:
        decode(records[:5], spec)
    assert (err.value.feature, err.value.index, err.value.actual) == ("a", 3, "1 values")
    # then b: its wrong kind (record 2) before its missing value (record 4)
    with pytest.raises(ExampleDecodeError) as err:
        decode(records[:3] + records[4:5], spec)
    assert (err.value.feature, err.value.index, err.value.actual) == ("b", 2, "float32")
    with pytest.raises(ExampleDecodeError) as err:
        decode(records[:2] + records[4:5], spec)
    assert (err.value.feature, err.value.index) == ("b", 2)
    assert "missing" in err.value.actual
    with pytest.raises(ExampleDecodeError) as err:
        decode(records[:2], spec)
    assert (err.value.feature, err.value.index, err.value.actual) == ("c", 1, "bytes")


def test_empty_list_is_present_empty_feature_is_missing(tf):
    empty_list = example_pb2.Example()
    empty_list.features.feature["a"].int64_list.SetInParent()
    no_kind = example_pb2.Example()
    no_kind.features.feature["a"].SetInParent()
    spec = {"a": FixedLen("int64", default=5)}
    with pytest.raises(ExampleDecodeError):
        decode_batch([empty_list.SerializeToString()], spec)
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.parse_example([empty_list.SerializeToString()],
                            {"a": tf.io.FixedLenFeature([], tf.int64, default_value=5)})
    assert decode_batch([no_kind.SerializeToString()], spec)["a"].tolist() == [5]
    varlen = decode_batch([no_kind.SerializeToString()], {"a": VarLen("float32")})
    assert varlen["a"].to_list() == [[]]


def test_unusual_but_legal_encodings_match_protobuf():
    # the same key twice (last wins), a Feature carrying two lists (oneof: last wins), unpacked
    # int64s and floats: the fast decoder must agree with protobuf's merge rules
    from shardforge.records.framing import RecordBlock

    ex = example_pb2.Example()
    ex.features.feature["a"].int64_list.value.extend([1, 2])
    first = ex.SerializeToString()
    ex2 = example_pb2.Example()
    ex2.features.feature["a"].float_list.value.append(9.0)
    two_keys = first + ex2.SerializeToString()  # concatenated messages merge
    # int64_list [7], then float_list [1.0] (unpacked)
    feat = b"\x1a\x02\x08\x07" + b"\x12\x05\x0d\x00\x00\x80\x3f"
    entry = b"\x0a\x01a" + b"\x12" + bytes([len(feat)]) + feat
    features = b"\x0a" + bytes([len(entry)]) + entry
    oneof = b"\x0a" + bytes([len(features)]) + features
    spec = {"a": VarLen("float32")}
    for data in (two_keys, oneof):
        assert decode_batch([data], spec)["a"] == decode_batch_reference([data], spec)["a"]
    unpacked_feat = b"\x1a\x04\x08\x05\x08\x06"  # int64_list with two unpacked values
    entry = b"\x0a\x01b\x12" + bytes([len(unpacked_feat)]) + unpacked_feat
    features = b"\x0a" + bytes([len(entry)]) + entry
    data = b"\x0a" + bytes([len(features)]) + features
    block = RecordBlock.from_records([data])
    assert decode_batch(block, {"b": VarLen("int64")})["b"].to_list() == [[5, 6]]


def test_infer_spec():
    serialized = [encode_example(r) for r in _rows(12)]
    spec = infer_spec(serialized)
    assert spec["id"] == FixedLen("int64") and spec["vec"] == FixedLen("float32", (6,))
    assert spec["tokens"] == VarLen("int64") and spec["label"] == VarLen("bytes")
    assert spec["unused"] == FixedLen("bytes")
    decode_batch(serialized, spec)
    with pytest.raises(ExampleDecodeError, match="'x'"):
        infer_spec([encode_example({"x": 1}), encode_example({"x": 1.0})])


def test_empty_batch():
    out = decode_batch([], SPEC)
    assert out["vec"].shape == (0, 2, 3) and len(out["tokens"]) == 0
