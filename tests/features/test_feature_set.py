"""FeatureSet: declaration checks, coerce, one-pass fit, transform, state save/load."""

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import shardforge.features as sf
from shardforge.records.spec import FixedLen, Ragged, VarLen, take_rows
from tests.features.test_analyzers import random_tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from shardforge.examples.click_features import FEATURES  # noqa: E402
from shardforge.examples.clicklog import generate_clicklog  # noqa: E402


def obj(values):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def same_batch(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], Ragged):
            assert a[k] == b[k], k
        else:
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


@pytest.fixture(scope="module")
def clicks():
    batch, errors = FEATURES.coerce(generate_clicklog(20_000, seed=3))
    assert errors == []
    return batch


@pytest.fixture(scope="module")
def click_state(clicks):
    return FEATURES.fit(take_rows(clicks, np.arange(i, min(i + 4096, 20_000)))
                        for i in range(0, 20_000, 4096))


def test_example_fits_and_transforms(clicks, click_state):
    out = FEATURES.transform(clicks, click_state)
    spec = FEATURES.output_spec(click_state)
    assert list(out) == list(spec) == FEATURES.output_names
    for name, s in spec.items():
        if isinstance(s, VarLen):
            assert isinstance(out[name], Ragged) and out[name].values.dtype == np.int64
        else:
            assert out[name].dtype == s.np_dtype and out[name].shape[1:] == s.shape
    assert abs(out["price"].mean()) < 0.05 and abs(out["price"].std() - 1) < 0.15
    assert out["age_bucketized"].max() == 9 and out["age_bucketized"].min() == 0
    assert len(click_state.columns["country"]["vocab"]) == 100
    assert out["country"].max() <= 100  # 100 words + 1 OOV bucket
    assert out["query"].values.max() <= 2000
    assert FEATURES.label_names == ["label"]


def test_state_save_load_is_bit_identical(tmp_path, clicks, click_state):
    path = click_state.save(str(tmp_path / "out"))
    assert path.endswith("schema.pbtxt")
    loaded = sf.TransformState.load(str(tmp_path / "out"))
    assert loaded == click_state
    same_batch(FEATURES.transform(clicks, click_state), FEATURES.transform(clicks, loaded))
    schema = sf.load_schema(str(tmp_path / "out"))
    assert schema.spec == FEATURES.output_spec(click_state)
    assert schema.labels == ["label"] and schema.feature("query").varlen
    assert [p.name for p in schema.dense][:2] == ["price", "age_bucketized"]
    assert "price" in schema.state.stats() and schema.state.stats()["country"]["top_values"]


def test_fit_is_one_pass_and_merge_matches(clicks, click_state):
    def once():
        for i in range(0, 20_000, 4096):
            yield take_rows(clicks, np.arange(i, min(i + 4096, 20_000)))

    gen = once()
    state = FEATURES.fit(gen)
    assert next(gen, None) is None
    assert state == click_state  # same input order -> same state
    an = pickle.loads(pickle.dumps(FEATURES.analyzer()))
    halves = [an.add_batch(an.create(), take_rows(clicks, idx))
              for idx in np.array_split(np.arange(20_000), 2)]
    merged = an.extract(pickle.loads(pickle.dumps(an.merge(halves))))
    for key in ("country", "query"):
        assert merged.columns[key]["vocab"] == click_state.columns[key]["vocab"]
    assert merged.columns["price"]["stats"].mean == click_state.columns["price"]["stats"].mean


def _fit_shuffled(clicks, n_rows, seed):
    """Fit the first ``n_rows`` rows, shuffled, in random batches merged in a random tree."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(n_rows)
    cuts = np.sort(rng.choice(np.arange(1, n_rows), size=int(rng.integers(1, 30)), replace=False))
    an = FEATURES.analyzer()
    return an.extract(random_tree(an, [take_rows(clicks, idx) for idx in np.split(rows, cuts)],
                                  rng))


def test_state_bytes_independent_of_batching_order_and_merge_tree(tmp_path, clicks, click_state):
    # Exact stats and vocabularies; age (63 distinct values) keeps exact quantile counts.
    saved = {open(_fit_shuffled(clicks, 20_000, seed).save(str(tmp_path / str(seed))), "rb").read()
             for seed in range(4)}
    assert saved == {open(click_state.save(str(tmp_path / "ordered")), "rb").read()}
    assert click_state.columns["price"]["stats"].std > 0
    assert click_state.columns["age_bucketized"]["quantiles"].rank_error == 0


def test_coerce_reports_bad_rows_with_ids():
    fs = sf.FeatureSet([sf.numeric("x", default=1.5), sf.categorical_identity("i", 10, default=0),
                        sf.categorical_hash("tags", 10, multivalued=True)],
                       label=sf.numeric("y", dtype="int64"))
    raw = {"x": ["2", "", None, "abc", "3e2", "4"], "i": ["1", "x", "2", "3", None, "2.0"],
           "tags": [["a", "b"], None, "c", [], ["d", None], []],
           "y": ["1", "0", "0", "1", "1", None], "unused": [1, 2, 3, 4, 5, 6]}
    batch, errors = fs.coerce(raw, row_ids=[f"f.csv:{i + 2}" for i in range(6)])
    bad = {(e.row, e.feature) for e in errors}
    assert bad == {("f.csv:3", "i"), ("f.csv:5", "x"), ("f.csv:6", "tags"), ("f.csv:7", "y"),
                   ("f.csv:7", "i")}
    assert "abc" in str(next(e for e in errors if e.feature == "x"))
    np.testing.assert_array_equal(batch["x"], np.float32([2.0, np.nan]))  # NaN: filled later
    assert batch["i"].tolist() == [1, 2] and batch["tags"].to_list() == [[b"a", b"b"], [b"c"]]
    out = fs.transform(batch, fs.fit([batch]))
    assert out["x"].tolist() == [2.0, 1.5]


def test_transform_errors_collect_and_raise():
    fs = sf.FeatureSet([sf.numeric("x", normalize="log1p", default=0.0),
                        sf.categorical_identity("i", 5)])
    batch = {"x": np.float32([0.0, -2.0, 1.0, 3.0]), "i": np.array([1, 2, 9, 4])}
    state = fs.fit([batch])
    out, errors = fs.transform(batch, state, errors="collect", row_ids=["a", "b", "c", "d"])
    assert [(e.row, e.feature, e.value) for e in errors] == [("b", "x", -2.0), ("c", "i", 9)]
    assert out["i"].tolist() == [1, 4]
    with pytest.raises(sf.TransformError, match="row 1: feature 'x'.*value -2.0"):
        fs.transform(batch, state)
    # a required float that is NaN is a row error too
    req = sf.FeatureSet([sf.numeric("z")])
    with pytest.raises(sf.TransformError, match="missing value and no default"):
        req.transform({"z": np.float32([1, np.nan])}, req.fit([{"z": np.float32([1.0])}]))


@pytest.mark.parametrize("make, match", [
    (lambda: sf.numeric("x", normalize="std"), "normalize"),
    (lambda: sf.numeric("x", normalize="clip"), "clip"),
    (lambda: sf.numeric("x", dtype="bytes"), "bytes"),
    (lambda: sf.numeric("x", shape=(2,), default=[1, 2, 3]), "shape"),
    (lambda: sf.bucketized(sf.numeric("x")), "exactly one"),
    (lambda: sf.bucketized(sf.numeric("x"), boundaries=[2, 1]), "increasing"),
    (lambda: sf.bucketized(sf.categorical_hash("x", 3), num_buckets=3), "numeric"),
    (lambda: sf.categorical_vocab("c", top_k=0), "top_k"),
    (lambda: sf.categorical_vocab_list("c", ["a"], num_oov_buckets=2, default_value=0),
     "both"),
    (lambda: sf.categorical_vocab_list("c", ["a", "a"]), "duplicate"),
    (lambda: sf.categorical_vocab_file("c", "/no/such/file"), "does not exist"),
    (lambda: sf.categorical_hash("c", 0), "hash_bucket_size"),
    (lambda: sf.categorical_identity("c", 5, default_value=7), "default_value"),
    (lambda: sf.crossed([sf.categorical_hash("a", 3)], 10), "two keys"),
    (lambda: sf.embedding(sf.numeric("x"), 4), "categorical"),
    (lambda: sf.embedding(sf.categorical_hash("a", 3), 4, combiner="max"), "combiner"),
    (lambda: sf.text("q", tokenizer="spaces"), "tokenizer"),
    (lambda: sf.text("q", tokenizer="regex"), "pattern"),
    (lambda: sf.text("q", tokenizer="regex", pattern="("), "invalid regex"),
    (lambda: sf.shared_embeddings([sf.categorical_hash("a", 3)], 4), "two"),
    (lambda: sf.sequence(sf.categorical_hash("a", 3)), "multivalued"),
    (lambda: sf.FeatureSet([sf.indicator(sf.crossed(["a", "nope"], 10)),
                            sf.categorical_hash("a", 3)]), "unknown input 'nope'"),
    (lambda: sf.FeatureSet([sf.numeric("x", default=0.0), sf.numeric("x", default=1.0)]),
     "two different columns"),
    (lambda: sf.FeatureSet([sf.numeric("x"), sf.categorical_hash("x", 3, name="h")]),
     "declared twice"),
    (lambda: sf.FeatureSet(["price"]), "feature columns"),
])
def test_invalid_declarations_fail_early(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_numeric_normalizers():
    x = np.float32([1.0, 2.0, 3.0, np.nan])
    cols = [sf.numeric("x", default=0.0, normalize=n, name=n) for n in ("none", "zscore",
                                                                        "minmax", "log1p")]
    cols.append(sf.numeric("x", default=0.0, normalize="clip", clip=(1.5, 2.5), name="clip"))
    fs = sf.FeatureSet(cols)
    state = fs.fit([{"x": x}])
    # fill-then-analyze: the missing value counts as its default, 0.0
    assert state.columns["zscore"]["stats"].count == 4
    assert state.columns["zscore"]["stats"].mean == 1.5
    out = fs.transform({"x": x}, state)
    np.testing.assert_allclose(out["none"], [1, 2, 3, 0])
    np.testing.assert_allclose(out["zscore"], (np.array([1, 2, 3, 0]) - 1.5) / np.std([1, 2, 3, 0]),
                               rtol=1e-6)
    np.testing.assert_allclose(out["minmax"], [1 / 3, 2 / 3, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(out["log1p"], np.log1p([1, 2, 3, 0]), rtol=1e-6)
    np.testing.assert_allclose(out["clip"], [1.5, 2, 2.5, 1.5])
    # tft.scale_to_0_1 on a constant column: sigmoid(x)
    const = sf.FeatureSet([sf.numeric("x", default=0.0, normalize="minmax")])
    batch = {"x": np.float32([2.0, 2.0])}
    np.testing.assert_allclose(const.transform(batch, const.fit([batch]))["x"],
                               1 / (1 + np.exp(-2.0)), rtol=1e-6)


def test_learned_vocab_takes_default_value_with_oov_buckets_and_ignores_it():
    # tft.compute_and_apply_vocabulary(x, num_oov_buckets=2, default_value=0): the OOV buckets
    fs = sf.FeatureSet([sf.categorical_vocab("c", num_oov_buckets=2, default_value=0, name="a"),
                        sf.categorical_vocab("c", num_oov_buckets=2, name="b")])
    batch = {"c": np.array([b"x", b"x", b"y"], dtype=object)}
    state = fs.fit([batch])
    other = {"c": np.array([b"x", b"q", b"zz"], dtype=object)}
    out = fs.transform(other, state)
    assert out["a"].tolist() == out["b"].tolist() and out["a"][0] == 0 and min(out["a"][1:]) >= 2


def test_minmax_output_range_is_tft_scale_by_min_max():
    # tft.scale_by_min_max(x, lo, hi): scale_to_0_1(x) * (hi - lo) + lo, the sigmoid branch too
    x = np.float32([-3.0, 1.0, 5.0])
    fs = sf.FeatureSet([sf.numeric("x", default=0.0, normalize="minmax", output_range=(-1, 1),
                                   name="mm"),
                        sf.numeric("c", default=0.0, normalize="minmax", output_range=(2, 5),
                                   name="const")])
    batch = {"x": x, "c": np.float32([-1e9, -1e9, -1e9])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sigmoid(-1e9) must not warn about exp overflow
        out = fs.transform(batch, fs.fit([batch]))
    np.testing.assert_allclose(out["mm"], [-1.0, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(out["const"], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="output_range"):
        sf.numeric("x", default=0.0, normalize="zscore", output_range=(0, 2))
    with pytest.raises(ValueError, match="lo < hi"):
        sf.numeric("x", default=0.0, normalize="minmax", output_range=(1, 1))


def test_vector_numeric_and_bucketized_indicator_width():
    fs = sf.FeatureSet([sf.bucketized(sf.numeric("v", shape=(3,), default=0.0),
                                      boundaries=[0.0, 1.0])])
    out = fs.transform({"v": np.float32([[-1, 0.5, 2], [1, 1, 1]])}, fs.fit([]))
    assert out["v_bucketized"].tolist() == [[0, 1, 2], [2, 2, 2]]
    assert fs.schema(fs.fit([])).dense[0].width == 9


def test_text_tokenizers_vocab_and_max_length():
    q = obj([b"The cat  sat", b"", b"the DOG, the cat", b"a-b-c"])
    fs = sf.FeatureSet([
        sf.text("q", lowercase=True, frequency_threshold=2, name="ws"),
        sf.text("q", tokenizer="regex", pattern=r"[\s,\-]+", max_length=2, name="re"),
        sf.text("q", tokenizer="bytes", max_length=3, name="by"),
    ])
    state = fs.fit([{"q": q}])
    assert state.columns["ws"]["vocab"].values == [b"the", b"cat"]
    assert state.columns["ws"]["vocab"].counts.tolist() == [3, 2]
    out = fs.transform({"q": q}, state)
    assert out["ws"].to_list()[0][:2] == [0, 1] and out["ws"].row_lengths().tolist() == [3, 0, 4, 1]
    assert out["re"].row_lengths().tolist() == [2, 0, 2, 2]
    assert out["by"].to_list() == [list(b"The"), [], list(b"the"), list(b"a-b")]
    assert fs.output_spec(state)["ws"] == VarLen("int64")


def test_vocab_file_and_int_vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"red\ngreen\nblue\n")
    fs = sf.FeatureSet([sf.categorical_vocab_file("c", str(path), vocabulary_size=2),
                        sf.categorical_vocab("k", dtype="int64", num_oov_buckets=1,
                                             default=0)])
    batch = {"c": obj([b"green", b"blue", b"red"]), "k": np.array([7, 7, 3])}
    state = fs.fit([batch])
    out = fs.transform(batch, state)
    assert out["c"].tolist() == [1, -1, 0]
    assert state.columns["k"]["vocab"].values == [7, 3] and out["k"].tolist() == [0, 0, 1]


def test_weighted_categorical_and_shared_embeddings():
    torch = pytest.importorskip("torch")
    a = sf.categorical_vocab_list("a", ["x", "y", "z"], multivalued=True)
    w = sf.weighted_categorical(a, "aw")
    b = sf.categorical_vocab_list("b", ["x", "y"])
    shared = sf.shared_embeddings([a, b], dim=4, combiner="sum")
    fs = sf.FeatureSet([sf.indicator(w), *shared])
    batch = {"a": Ragged.from_rows([[b"x", b"z"], [b"y"]], dtype=object),
             "aw": Ragged.from_rows([[0.5, 2.0], [1.0]], dtype=np.float32),
             "b": obj([b"y", b"q"])}
    state = fs.fit([batch])
    out = fs.transform(batch, state)
    assert set(out) == {w.name, "a", "b"}
    layer = sf.FeatureLayer(fs.schema(state))
    assert len(layer.tables) == 1 and layer.output_dim == 3 + 4 + 4
    parts = layer.parts(out)
    np.testing.assert_allclose(parts[w.name + "_indicator"].numpy(), [[0.5, 0, 2.0], [0, 1.0, 0]])
    table = next(iter(layer.tables.values())).weight.detach()
    torch.testing.assert_close(parts["b_shared_embedding"][0], table[1])
    torch.testing.assert_close(parts["b_shared_embedding"][1], torch.zeros(4))  # OOV -> no id
    bad = dict(batch, aw=Ragged.from_rows([[1.0], [1.0]], dtype=np.float32))
    _, errors = fs.transform(bad, state, errors="collect")
    assert errors[0].feature == "aw" and errors[0].row == 0


def test_feature_layer_order_parts_and_sequence(clicks, click_state):
    torch = pytest.importorskip("torch")
    schema = FEATURES.schema(click_state)
    layer = sf.FeatureLayer(schema)
    out = FEATURES.transform(take_rows(clicks, np.arange(64)), click_state)
    x = layer(out)
    assert x.shape == (64, layer.output_dim)
    assert layer.output_dim == 1 + 10 + 8 + 16 + 1000 + 32 + 3 + 8 + 4
    assert layer.part_names == ["price", "age_bucketized", "country_embedding",
                                "item_id_embedding", "age_bucketized_X_country_indicator",
                                "query_embedding", "km_to_hubs", "cell_x_country_embedding",
                                "region_embedding"]
    parts = layer.parts(out)
    for name, part in parts.items():
        torch.testing.assert_close(x[:, layer.part_slices[name]], part)
    onehot = parts["age_bucketized"]
    assert torch.all(onehot.sum(1) == 1)
    assert torch.equal(onehot.argmax(1), torch.as_tensor(out["age_bucketized"]))
    padded, lengths = layer.sequence(out, "query")
    assert padded.shape == (64, int(lengths.max()), 32)
    assert lengths.tolist() == out["query"].row_lengths().tolist()
    mean = padded.sum(1) / lengths[:, None]
    torch.testing.assert_close(mean, parts["query_embedding"], rtol=1e-5, atol=1e-6)
    assert torch.all(padded[0, int(lengths[0]):] == 0)
    x.sum().backward()  # the embeddings train


def test_load_feature_set(tmp_path):
    fs = sf.load_feature_set(os.path.join(ROOT, "shardforge", "examples", "click_features.py"))
    assert fs.output_names == FEATURES.output_names
    bad = tmp_path / "nofeatures.py"
    bad.write_text("X = 1\n")
    with pytest.raises(ValueError, match="FEATURES"):
        sf.load_feature_set(str(bad))


def test_input_columns_and_spec():
    inputs = {i.name: i for i in FEATURES.input_columns}
    assert set(inputs) == {"price", "age", "country", "item_id", "query", "lat", "lon", "label"}
    assert inputs["label"].required and not inputs["price"].required
    spec = FEATURES.input_spec()
    assert spec["label"] == FixedLen("int64") and np.isnan(spec["price"].default)


def test_import_does_not_pull_torch_or_tensorflow():
    code = ("import sys, shardforge.features as sf; "
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_records_round_trip_with_output_and_input_specs(clicks, click_state):
    from shardforge.records import decode_batch, encode_example

    out = FEATURES.transform(take_rows(clicks, np.arange(200)), click_state)
    rows = [{k: (v[i] if isinstance(v, Ragged) else v[i]) for k, v in out.items()}
            for i in range(200)]
    decoded = decode_batch([encode_example(r) for r in rows], FEATURES.output_spec(click_state))
    same_batch(decoded, out)
    # raw inputs written without the missing prices decode with NaN, which the transform fills
    raw = take_rows(clicks, np.arange(50))
    records = [encode_example({k: v[i] for k, v in raw.items()
                               if not (k == "price" and np.isnan(v[i]))}) for i in range(50)]
    again = decode_batch(records, FEATURES.input_spec())
    same_batch(FEATURES.transform(again, click_state), FEATURES.transform(raw, click_state))


def test_empty_batches_and_empty_fit():
    empty, _ = FEATURES.coerce({k: [] for k in ("price", "age", "country", "item_id", "query",
                                                 "label")})
    state = FEATURES.fit([])  # no data: empty vocabularies, a single bucket, identity scaling
    out = FEATURES.transform(empty, state)
    assert all(len(v) == 0 for v in out.values())
    assert sf.FeatureLayer(FEATURES.schema(state))(out).shape[0] == 0


def test_sequence_of_multivalued_categorical():
    clicks_seq = sf.sequence(sf.categorical_vocab("items", multivalued=True), max_length=2)
    fs = sf.FeatureSet([sf.embedding(clicks_seq, dim=4, combiner="sum")])
    batch = {"items": Ragged.from_rows([[b"a", b"b", b"c"], [], [b"b"]], dtype=object)}
    state = fs.fit([batch])
    out = fs.transform(batch, state)
    # b (2x), then ties by bytes descending: c, a; truncated to 2
    assert out["items"].to_list() == [[2, 0], [], [0]]
    feature = fs.schema(state).feature("items")
    assert feature.sequence and feature.varlen and feature.num_buckets == 3
    padded, lengths = sf.FeatureLayer(fs.schema(state)).sequence(out, "items")
    assert padded.shape == (3, 2, 4) and lengths.tolist() == [2, 0, 1]


def test_coerce_treats_nan_objects_as_missing():
    fs = sf.FeatureSet([sf.categorical_hash("c", 10, default="?"), sf.numeric("x", default=1.0)])
    raw = {"c": obj(["a", float("nan"), None, b"b"]), "x": obj([2.0, float("nan"), "nan", None])}
    batch, errors = fs.coerce(raw)
    assert errors == [] and batch["c"].tolist() == [b"a", b"?", b"?", b"b"]
    assert fs.transform(batch, fs.fit([batch]))["x"].tolist() == [2.0, 1.0, 1.0, 1.0]
