"""features.coerce: Arrow columns (compiled parsing) agree with the Python path, and the error
policy: non-finite numbers, lists where a scalar is declared, bytes that are not UTF-8."""

import numpy as np
import pyarrow as pa
import pytest

import shardforge.features as sf
from shardforge.features.coerce import coerce
from shardforge.records.spec import Ragged

FS = sf.FeatureSet(
    [sf.numeric("x", default=0.0), sf.numeric("n", dtype="int64", default=0),
     sf.categorical_vocab("c"), sf.categorical_vocab("tags", multivalued=True)],
)
RAW = {
    "x": ["1.5", "", "-2", "1e-3", "nan", "3"],
    "n": ["4", "5", "", "-7", "8", "9"],
    "c": ["a", "b", "", "caf\u00e9", "d", "e"],
    "tags": [["u"], [], None, ["v", "w"], ["u"], []],
}


def _same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], Ragged):
            assert a[k].to_list() == b[k].to_list(), k
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_arrow_columns_give_the_python_path_s_batch():
    arrow = {
        "x": pa.array([v.encode() for v in RAW["x"]], pa.binary()),  # CSV fields: bytes
        "n": pa.array([v.encode() for v in RAW["n"]], pa.binary()),
        "c": pa.array([v.encode() for v in RAW["c"]], pa.binary()),
        "tags": pa.array(RAW["tags"], pa.list_(pa.string())),
    }
    python, errors = coerce(FS.input_columns, RAW)
    fast, fast_errors = coerce(FS.input_columns, arrow)
    assert errors == fast_errors == []
    _same(python, fast)
    assert np.isnan(fast["x"][[1, 4]]).all()  # missing and NaN: the missing marker
    assert fast["c"][2] == b"" and fast["n"][2] == 0


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity", "1e39", "-3.5e38"])
def test_non_finite_is_an_error_or_missing(text):
    for values in ([text, "1.0"], pa.array([text.encode(), b"1.0"], pa.binary()),
                   pa.array([float(text), 1.0])):
        batch, errors = coerce(FS.input_columns, {"x": values})
        assert [e.row for e in errors] == [0] and "non-finite" in errors[0].reason
        assert batch["x"].tolist() == [1.0]
        batch, errors = coerce(FS.input_columns, {"x": values}, non_finite="missing")
        assert not errors and np.isnan(batch["x"][0]) and batch["x"][1] == 1.0
    with pytest.raises(ValueError, match="non_finite"):
        coerce(FS.input_columns, {"x": ["1"]}, non_finite="zero")


def test_non_finite_in_a_list_rejects_the_row():
    inputs = [sf.Input("v", "float32", multivalued=True)]
    batch, errors = coerce(inputs, {"v": [[1.0, float("inf")], [2.0]]})
    assert [e.row for e in errors] == [0] and batch["v"].to_list() == [[2.0]]


def test_a_list_where_a_scalar_is_declared_is_a_row_error():
    # equal-length lists once made a 2-D object array (IndexError); each is now one bad row
    for values in ([[1, 2], [3, 4], 5.0], pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]]),
                   Ragged.from_rows([[1.0, 2.0], [3.0, 4.0], [5.0]])):
        batch, errors = coerce(FS.input_columns, {"x": values})
        assert [e.row for e in errors] == [0, 1], type(values)
        assert all("got" in e.reason for e in errors)
        assert batch["x"].tolist() == [5.0]


def test_bytes_that_are_not_utf8():
    values = pa.array([b"1.5", b"1\xff5", b"caf\xe9"], pa.binary())
    batch, errors = coerce(FS.input_columns, {"x": values, "c": values})
    assert sorted(e.row for e in errors) == [1, 2]
    assert all(e.feature == "x" for e in errors)
    assert batch["c"].tolist() == [b"1.5"]  # a bytes input keeps its bytes as they are
