"""The compiled batch encoder: the same bytes as encode_example row by row, and TensorFlow reads
them back as the batch that went in."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardforge.records import (
    FixedLen,
    Ragged,
    TFRecordWriter,
    VarLen,
    decode_batch,
    decode_batch_reference,
    encode_batch,
    encode_example,
)

from .conftest import assert_batches_equal

SETTINGS = settings(max_examples=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _row_by_row(batch):
    n = len(next(iter(batch.values()))) if batch else 0
    return [encode_example({name: col[i] for name, col in batch.items()}) for i in range(n)]


# keys that are prefixes of each other, non-ASCII and empty: the map order protobuf picks
NAMES = ["a", "ab", "abc", "b", "B", "", "é", "a\x00", "age", "age_x_country", "~"]
SIGNALING_NAN = np.array([0x7F800001, 0xFFA00000], dtype=np.uint32).view(np.float32)

int64s = st.integers(-(2**63), 2**63 - 1)
float32s = st.floats(width=32, allow_nan=True) | st.sampled_from(SIGNALING_NAN.tolist())
texts = st.binary(max_size=6) | st.text(max_size=4)


@st.composite
def columns(draw, n):
    """One batch column of ``n`` rows, of any layout the encoder handles (and a few it hands to
    the per-row path)."""
    what = draw(st.sampled_from([
        "int64", "float32", "float64", "bool", "uint8", "bytes", "S", "U", "bytes_or_none",
        "dense", "ragged_int", "ragged_float", "ragged_bytes", "ragged_2d", "object_ints",
    ]))
    if what == "int64":
        return np.array(draw(st.lists(int64s, min_size=n, max_size=n)), dtype=np.int64)
    if what == "float32":
        return np.array(draw(st.lists(float32s, min_size=n, max_size=n)), dtype=np.float32)
    if what == "float64":
        return np.array(draw(st.lists(st.floats(), min_size=n, max_size=n)), dtype=np.float64)
    if what == "bool":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if what == "uint8":
        return np.array(draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)), np.uint8)
    if what in ("bytes", "bytes_or_none"):
        items = st.one_of(texts, st.none()) if what == "bytes_or_none" else texts
        out = np.empty(n, dtype=object)
        out[:] = draw(st.lists(items, min_size=n, max_size=n))
        return out
    if what == "S":
        return np.array(draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n)), "S4")
    if what == "U":
        return np.array(draw(st.lists(st.text(max_size=3), min_size=n, max_size=n)), "U3")
    if what == "dense":
        shape = (n, *draw(st.sampled_from([(0,), (1,), (3,), (2, 2)])))
        kind = draw(st.sampled_from(["int64", "float32", "bytes"]))
        size = int(np.prod(shape))
        if kind == "int64":
            return np.array(draw(st.lists(int64s, min_size=size, max_size=size)),
                            dtype=np.int64).reshape(shape)
        if kind == "float32":
            return np.array(draw(st.lists(float32s, min_size=size, max_size=size)),
                            dtype=np.float32).reshape(shape)
        out = np.empty(size, dtype=object)
        out[:] = draw(st.lists(st.binary(max_size=3), min_size=size, max_size=size))
        return out.reshape(shape)
    rows = draw(st.lists(st.lists(
        {"ragged_int": int64s, "ragged_float": float32s, "ragged_bytes": texts,
         "ragged_2d": st.integers(-3, 3), "object_ints": st.integers(-3, 3)}[what], max_size=4),
        min_size=n, max_size=n))
    if what == "object_ints":  # not strings: the per-row path
        out = np.empty(n, dtype=object)
        out[:] = [r[0] if r else 0 for r in rows]
        return out
    if what == "ragged_2d":  # values of shape [m, 2]: a row's values are flattened
        r = Ragged.from_rows(rows, dtype=np.int64)
        return Ragged(np.stack([r.values, -r.values], axis=1), r.row_splits)
    dtype = {"ragged_int": np.int64, "ragged_float": np.float32, "ragged_bytes": object}[what]
    return Ragged.from_rows(rows, dtype=dtype)


@st.composite
def batches(draw):
    n = draw(st.integers(0, 5))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    return {name: draw(columns(n)) for name in names}


@SETTINGS
@given(batches())
def test_same_bytes_as_encode_example_row_by_row(batch):
    assert encode_batch(batch) == _row_by_row(batch)


def test_unencodable_values_raise_like_encode_example():
    batch = {"id": np.array([1, 2**64 - 1], dtype=np.uint64), "x": np.zeros(2)}
    with pytest.raises(TypeError, match="'id'"):
        encode_batch(batch)
    bad = np.empty(2, dtype=object)
    bad[:] = [b"a", object()]
    with pytest.raises(TypeError, match="'s'"):
        encode_batch({"s": bad})
    assert encode_batch({}) == [] and encode_batch({"x": np.zeros(0)}) == []


def test_rows_without_features_are_empty_examples():
    names = np.empty(3, dtype=object)
    names[:] = [None, b"x", None]
    assert encode_batch({"name": names}) == [b"", encode_example({"name": b"x"}), b""]


BATCH = {
    "id": np.array([-(2**63), -1, 0, 2**63 - 1, 300], dtype=np.int64),
    "score": np.array([0.5, -2.0, np.inf, 1e-40, 3.25], dtype=np.float32),
    "vec": np.arange(30, dtype=np.float32).reshape(5, 2, 3),
    "tokens": Ragged.from_rows([[1, 127, 128], [], [2**40, -5], [0], list(range(300))]),
    "scores": Ragged.from_rows([[], [0.5], [1.5, 2.5], [], [-1.0]], dtype=np.float32),
    "words": Ragged.from_rows([[b"x", b""], [], ["é"], [b"a\0"], [b"y" * 200]], dtype=object),
    "label": np.array([b"lab\x00", b"", "héllo".encode(), b"\xff", b"z"], dtype=object),
    "label_x": np.array([1, 0, 1, 1, 0], dtype=bool),
}
SPEC = {
    "id": FixedLen("int64"), "score": FixedLen("float32"), "vec": FixedLen("float32", (2, 3)),
    "tokens": VarLen("int64"), "scores": VarLen("float32"), "words": VarLen("bytes"),
    "label": FixedLen("bytes"), "label_x": FixedLen("int64"),
}


def _expected(name):
    col = BATCH[name]
    if isinstance(col, Ragged):
        if col.values.dtype != object:
            return col
        values = np.empty(len(col.values), dtype=object)
        values[:] = [v.encode() if isinstance(v, str) else v for v in col.values]
        return Ragged(values, col.row_splits)
    return col.astype(np.int64) if col.dtype == bool else col


def test_tensorflow_parses_encoded_batches(tmp_path, tf):
    path = str(tmp_path / "a.tfrecord")
    records = encode_batch(BATCH)
    with TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    tf_spec = {
        name: tf.io.RaggedFeature(s.np_dtype if s.dtype != "bytes" else tf.string)
        if isinstance(s, VarLen) else
        tf.io.FixedLenFeature(s.shape, s.np_dtype if s.dtype != "bytes" else tf.string)
        for name, s in SPEC.items()
    }
    theirs = tf.io.parse_example(next(iter(tf.data.TFRecordDataset(path).batch(100))), tf_spec)
    for name in SPEC:
        want, got = _expected(name), theirs[name]
        if isinstance(want, Ragged):
            assert want.row_splits.tolist() == got.row_splits.numpy().tolist(), name
            want, got = want.values, got.values
        np.testing.assert_array_equal(got.numpy(), want, err_msg=name)
    expected = {name: _expected(name) for name in SPEC}
    assert_batches_equal(decode_batch(records, SPEC), expected)
    assert_batches_equal(decode_batch_reference(records, SPEC), expected)
