"""The public column API: a custom column runs like the built-ins; tf.Transform's semantics."""

import pickle
from dataclasses import dataclass

import numpy as np
import pytest

import shardforge.features as sf
from shardforge.protos import schema_pb2
from shardforge.records.spec import Ragged


def obj(values):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@dataclass(frozen=True)
class ZScoredRatio(sf.Column):
    """The module docstring's example, verbatim."""

    numerator: str
    denominator: str
    name: str

    def inputs(self):
        return (sf.Input(self.numerator, "float32", default=0.0),
                sf.Input(self.denominator, "float32", default=1.0))

    def analyzers(self):
        return {"stats": sf.NumericStats()}

    def analyze(self, values):
        num, den = values
        return {"stats": num / den}

    def transform(self, values, state):
        num, den = values
        st = state["stats"]
        return ((num / den - st.mean) / (st.std or 1.0)).astype("float32")

    def output(self, state, inputs):
        return sf.Output.numeric()


def test_custom_column_fits_transforms_saves_and_feeds_the_layer(tmp_path):
    fs = sf.FeatureSet([ZScoredRatio("clicks", "views", name="ctr_z")])
    clicks = np.float32([1, 2, np.nan, 4])
    views = np.float32([2, 2, 4, np.nan])
    batch = {"clicks": clicks, "views": views}
    state = fs.fit([batch])
    ratio = np.array([0.5, 1.0, 0.0, 4.0])  # missing clicks -> 0, missing views -> 1
    out = fs.transform(batch, state)["ctr_z"]
    np.testing.assert_allclose(out, (ratio - ratio.mean()) / ratio.std(), rtol=1e-6)
    state.save(str(tmp_path))
    loaded = sf.TransformState.load(str(tmp_path))
    assert loaded == state
    assert fs.transform(batch, loaded)["ctr_z"].tobytes() == out.tobytes()
    layer = sf.FeatureLayer(sf.load_schema(str(tmp_path)))
    assert layer.part_names == ["ctr_z"] and layer(fs.transform(batch, state)).shape == (4, 1)
    assert pickle.loads(pickle.dumps(fs)).transform(batch, state)["ctr_z"].tobytes() == \
        out.tobytes()


@dataclass(frozen=True)
class Positive(sf.Column):
    """Rejects rows with a non-positive value."""

    key: str
    name: str

    def inputs(self):
        return (sf.Input(self.key, "int64", default=0),)

    def transform(self, values, state):
        bad = np.flatnonzero(values[0] <= 0)
        if len(bad):
            return sf.WithErrors(values[0], bad, values[0][bad].tolist(), "must be positive")
        return values[0]

    def output(self, state, inputs):
        return sf.Output.numeric(dtype="int64")


def test_custom_column_rejects_rows_with_reasons():
    fs = sf.FeatureSet([Positive("n", "n_pos")])
    batch = {"n": np.array([3, -1, 5, 0])}
    out, errors = fs.transform(batch, fs.fit([batch]), errors="collect", row_ids=list("abcd"))
    assert out["n_pos"].tolist() == [3, 5]
    assert [(e.row, e.feature, e.value, e.reason) for e in errors] == [
        ("b", "n_pos", -1, "must be positive"), ("d", "n_pos", 0, "must be positive")]


def test_one_missing_value_rule_for_every_dtype():
    # fill-then-analyze: the declared default is counted, whatever the dtype
    fs = sf.FeatureSet([
        sf.numeric("f", default=10.0, normalize="zscore"),
        sf.categorical_vocab("c", default="zz"),
        sf.bucketized(sf.numeric("g", default=0.0), num_buckets=2),
    ])
    raw = {"f": ["1", "", "3", None], "c": ["a", "", None, "a"], "g": ["5", "", "", "6"]}
    batch, errors = fs.coerce(raw)
    assert not errors
    state = fs.fit([batch])
    assert state.columns["f"]["stats"].mean == pytest.approx(6.0)  # (1 + 10 + 3 + 10) / 4
    assert state.columns["c"]["vocab"].values == [b"zz", b"a"]  # ties: bytes descending
    # [0, 0, 5, 6]: the value at rank floor(1 * 4 / 2) = 2
    assert state.columns["g_bucketized"]["quantiles"].values == (5.0,)


def test_present_only_learns_over_present_values():
    fs = sf.FeatureSet([
        sf.numeric("f", default=10.0, normalize="zscore", present_only=True),
        sf.bucketized(sf.numeric("g", default=0.0, present_only=True), num_buckets=2),
    ])
    batch = {"f": np.float32([1, np.nan, 3, np.nan]), "g": np.float32([5, np.nan, np.nan, 6])}
    state = fs.fit([batch])
    assert state.columns["f"]["stats"].mean == 2.0 and state.columns["f"]["stats"].count == 2
    assert state.columns["g_bucketized"]["quantiles"].values == (6.0,)
    out = fs.transform(batch, state)
    np.testing.assert_allclose(out["f"], [-1, 8, 1, 8])  # the transform still fills
    assert out["g_bucketized"].tolist() == [0, 0, 0, 1]


class BadInputs(Positive):
    def inputs(self):
        return (3,)


def test_declaration_errors_name_the_column():
    learned = sf.bucketized(sf.numeric("x", default=0.0, normalize="zscore"), num_buckets=3)
    with pytest.raises(ValueError, match="two analyze passes"):
        sf.FeatureSet([learned])
    with pytest.raises(ValueError, match="inputs\\(\\) must hold"):
        sf.FeatureSet([BadInputs("n", "p")])
    with pytest.raises(ValueError, match="column 'a_X_q' refers to unknown input 'q'"):
        sf.FeatureSet([sf.crossed(["q", sf.categorical_hash("a", 5)], 10)])
    # a string op's undeclared input name is a bytes input (default "")
    assert sf.FeatureSet([sf.lower("q")]).input_columns == [sf.Input("q", "bytes", (), False,
                                                                      b"")]


def test_text_is_split_composed_with_a_vocabulary():
    values = obj([b"b a b", b"", b"c  b"])
    fs = sf.FeatureSet([sf.text("q", top_k=2)])
    state = fs.fit([{"q": values}])
    assert state.columns["q"]["vocab"].values == [b"b", b"c"]  # b:3; a, c: 1 -> c first
    out = fs.transform({"q": values}, state)["q"]
    assert isinstance(out, Ragged) and out.row_lengths().tolist() == [3, 0, 2]
    assert out.to_list()[0][0] == 0 and out.to_list()[2] == [1, 0]
    feature = fs.schema(state).feature("q")
    assert feature.sequence and feature.num_buckets == 3 and feature.column_type == "text"


@dataclass(frozen=True)
class FirstByte(sf.LookupColumn):
    """A custom id column: the first byte of each string (0 for an empty one)."""

    def num_buckets(self, state):
        return 256

    def ids(self, values, state):
        return np.array([v[0] if v else 0 for v in values], dtype=np.int64)


def test_custom_id_column_feeds_embedding_indicator_and_crossed():
    first = FirstByte(sf.Input("s", "bytes", default=b""), "first")
    cross = sf.crossed([first, sf.categorical_hash("t", 7)], 50)
    fs = sf.FeatureSet([sf.embedding(first, dim=3), sf.indicator(cross)])
    batch = {"s": obj([b"abc", b"", b"b"]), "t": obj([b"x", b"y", b"z"])}
    state = fs.fit([batch])
    out = fs.transform(batch, state)
    assert out["first"].tolist() == [97, 0, 98]
    assert fs.schema(state).feature("first").num_buckets == 256
    layer = sf.FeatureLayer(fs.schema(state))
    assert layer(out).shape == (3, 3 + 50)


@dataclass(frozen=True)
class DoubledWeights(sf.Column):
    """A user's weighted categorical: weights (doubled) for another column's ids, written beside
    them through the ``written`` hook."""

    ids: sf.Column
    weight_key: str
    name: str

    def inputs(self):
        return (self.ids, sf.Input(self.weight_key, "float32", multivalued=True))

    def transform(self, values, state):
        _, w = values
        return Ragged(2 * np.asarray(w.values, np.float32), w.row_splits)

    def output(self, state, inputs):
        return sf.Output("weights", "float32", varlen=True, weights_for=self.ids.name)

    def written(self):
        return (self.ids, self)


@dataclass(frozen=True)
class SumEmbedding(sf.Column):
    """A user's embedding part: writes nothing of its own, adds a layer part (``dense_part``)."""

    weights: DoubledWeights
    dim: int
    name: str

    def inputs(self):
        return (self.weights,)

    def transform(self, values, state):
        return values[0]

    def output(self, state, inputs):
        return inputs[0]

    def written(self):
        return self.weights.written()

    def dense_part(self, outputs):
        return schema_pb2.DenseColumn(
            name=self.name, type=schema_pb2.DenseColumn.EMBEDDING, feature=self.weights.ids.name,
            dim=self.dim, combiner=schema_pb2.SUM, weight_feature=self.weights.name,
            width=self.dim)


def test_custom_layer_and_weights_columns_use_the_column_hooks():
    pytest.importorskip("torch")
    tags = sf.categorical_vocab_list("tags", ["x", "y", "z"], multivalued=True)
    emb = SumEmbedding(DoubledWeights(tags, "tw", "tag_weights"), dim=4, name="tags_emb")
    fs = sf.FeatureSet([emb, sf.numeric("n", default=0.0)])
    batch = {"tags": Ragged.from_rows([[b"x", b"z"], [b"y"], []], dtype=object),
             "tw": Ragged.from_rows([[0.5, 2.0], [1.0], []], dtype=np.float32),
             "n": np.array([1.0, 2.0, 3.0], np.float32)}
    state = fs.fit([batch])
    out = fs.transform(batch, state)
    assert set(out) == {"tags", "tag_weights", "n"}  # the ids and weights, not the layer part
    assert out["tag_weights"].values.tolist() == [1.0, 4.0, 2.0]
    schema = fs.schema(state)
    assert schema.feature("tags").weight_feature == "tag_weights"
    layer = sf.FeatureLayer(schema)
    assert layer.part_names == ["tags_emb", "n"] and layer.output_dim == 4 + 1
    table = layer.tables["tags_emb"].weight.detach().numpy()
    x = layer(out).detach().numpy()
    np.testing.assert_allclose(x[:, :4], [1.0 * table[0] + 4.0 * table[2], 2.0 * table[1],
                                          np.zeros(4)], rtol=1e-6)
    np.testing.assert_array_equal(x[:, 4], [1.0, 2.0, 3.0])
