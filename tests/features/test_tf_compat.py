"""TensorFlow as the oracle: hashing, vocabulary OOV buckets, bucketizing and crossing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardforge.features as sf
from shardforge.features.hashing import fingerprint64, hash_bucket
from shardforge.records.spec import Ragged

MODULI = [2**63 - 25, 2**61 - 1, 1_000_003, 7, 1]
tf = fc = fcv2 = None  # TensorFlow is imported by the first test that runs, not at collection


@pytest.fixture(autouse=True)
def _tensorflow():
    # Importing TF at collection would load it into every xdist worker, and protoc (used by
    # tests/protos) crashes in a process that has TensorFlow loaded.
    global tf, fc, fcv2
    import tensorflow
    from tensorflow.python.feature_column import feature_column_v2

    tf, fc, fcv2 = tensorflow, tensorflow.feature_column, feature_column_v2


def tf_ids(column, features):
    """Ids of a tf.feature_column categorical column as a list of rows."""
    cache = fcv2.FeatureTransformationCache(features)
    sparse = column.get_sparse_tensors(cache, None).id_tensor
    return tf.RaggedTensor.from_sparse(sparse).to_list()


def rows(ids):
    return ids.to_list() if isinstance(ids, Ragged) else [[v] for v in np.asarray(ids).tolist()]


def obj(values):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def test_fingerprint64_matches_tf_on_every_length():
    rng = np.random.default_rng(0)
    lengths = list(range(0, 140)) + rng.integers(140, 2000, 40).tolist()
    values = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in lengths]
    values += ["héllo wörld".encode(), "日本語テキスト".encode() * 9, b"\x00" * 65]
    for m in MODULI:
        expected = tf.strings.to_hash_bucket_fast(tf.constant(values), m).numpy()
        np.testing.assert_array_equal(hash_bucket(obj(values), m), expected)


@settings(max_examples=30, deadline=None, database=None)
@given(st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=50))
def test_fingerprint64_property(values):
    fp = fingerprint64(obj(values))
    for m in (2**63 - 25, 1009):
        expected = tf.strings.to_hash_bucket_fast(tf.constant(values), m).numpy()
        np.testing.assert_array_equal((fp % np.uint64(m)).astype(np.int64), expected)


def _fit_transform(columns, batch):
    fs = sf.FeatureSet(columns)
    state = fs.fit([batch])
    return fs.transform(batch, state), state


def test_categorical_hash_matches_tf_bytes_and_int():
    # (TF drops "" from dense string inputs as "missing"; shardforge makes missing explicit)
    words = obj([b"a", b" ", b"hello", "ünï".encode(), b"x" * 100])
    out, _ = _fit_transform([sf.categorical_hash("w", 97)], {"w": words})
    col = fc.categorical_column_with_hash_bucket("w", 97)
    assert rows(out["w"]) == tf_ids(col, {"w": tf.constant(list(words))[:, None]})

    ints = np.array([0, -5, 12345678901, 7, 2**62], dtype=np.int64)
    out, _ = _fit_transform([sf.categorical_hash("i", 1000, dtype="int64")], {"i": ints})
    col = fc.categorical_column_with_hash_bucket("i", 1000, dtype=tf.int64)
    assert rows(out["i"]) == tf_ids(col, {"i": tf.constant(ints)[:, None]})


def test_vocab_list_oov_buckets_match_tf():
    vocab = ["us", "de", "fr", " "]
    values = obj([b"us", b"xx", b"fr", b" ", b"unknown", b"de", b"zz" * 40])
    ours, _ = _fit_transform([sf.categorical_vocab_list("c", vocab, num_oov_buckets=5)],
                             {"c": values})
    col = fc.categorical_column_with_vocabulary_list("c", vocab, num_oov_buckets=5)
    assert rows(ours["c"]) == tf_ids(col, {"c": tf.constant(list(values))[:, None]})

    ours, _ = _fit_transform([sf.categorical_vocab_list("c", vocab, default_value=2)],
                             {"c": values})
    col = fc.categorical_column_with_vocabulary_list("c", vocab, default_value=2)
    assert rows(ours["c"]) == tf_ids(col, {"c": tf.constant(list(values))[:, None]})


def test_int_vocab_list_oov_buckets_match_tf():
    values = np.array([5, 100, -3, 9, 7, 2**40], dtype=np.int64)
    ours, _ = _fit_transform([sf.categorical_vocab_list("k", [5, 7, 9], num_oov_buckets=5)],
                             {"k": values})
    col = fc.categorical_column_with_vocabulary_list("k", [5, 7, 9], num_oov_buckets=5,
                                                     dtype=tf.int64)
    assert rows(ours["k"]) == tf_ids(col, {"k": tf.constant(values)[:, None]})


def test_learned_vocab_oov_matches_tf_with_same_list():
    rng = np.random.default_rng(1)
    train = obj([f"v{i}".encode() for i in rng.zipf(1.5, 2000) % 300])
    test = obj([f"v{i}".encode() for i in rng.integers(0, 400, 500)])
    fs = sf.FeatureSet([sf.categorical_vocab("c", top_k=50, num_oov_buckets=3)])
    state = fs.fit([{"c": train}])
    vocab = state.columns["c"]["vocab"].values
    assert len(vocab) == 50
    col = fc.categorical_column_with_vocabulary_list("c", [v.decode() for v in vocab],
                                                     num_oov_buckets=3)
    ours = fs.transform({"c": test}, state)["c"]
    assert rows(ours) == tf_ids(col, {"c": tf.constant(list(test))[:, None]})


def test_bucketized_matches_tf_at_and_around_boundaries():
    boundaries = [-1.0, 0.0, 0.1, 1.5, 2.0, 1e6]
    b32 = np.asarray(boundaries, np.float32)
    x = np.concatenate([b32, np.nextafter(b32, -np.inf), np.nextafter(b32, np.inf),
                        np.float32([-1e9, 1e9, 0.25, -0.0])]).astype(np.float32)
    ours, _ = _fit_transform([sf.bucketized(sf.numeric("x"), boundaries=boundaries)], {"x": x})
    col = fc.bucketized_column(fc.numeric_column("x"), boundaries)
    assert rows(ours["x_bucketized"]) == tf_ids(col, {"x": tf.constant(x)[:, None]})


def test_crossed_matches_tf_on_raw_keys_with_multivalued_inputs():
    a = [[b"x", b"y"], [b"z"], [], [b"x", b"z", b"q"]]
    b = [[1, 2], [3], [4], [5, 6]]
    batch = {"a": Ragged.from_rows(a, dtype=object), "b": Ragged.from_rows(b, dtype=np.int64)}
    cross = sf.crossed(["a", "b"], hash_bucket_size=1000)
    fs = sf.FeatureSet([sf.categorical_hash("a", 10, multivalued=True),
                        sf.categorical_hash("b", 10, dtype="int64", multivalued=True),
                        sf.indicator(cross)])
    out = fs.transform(batch, fs.fit([batch]))
    col = fc.crossed_column(["a", "b"], hash_bucket_size=1000)
    tf_feats = {"a": tf.ragged.constant(a, dtype=tf.string).to_sparse(),
                "b": tf.ragged.constant(b, dtype=tf.int64).to_sparse()}
    assert rows(out[cross.name]) == tf_ids(col, tf_feats)


def test_empty_string_inside_a_bytes_list_is_a_value():
    # a BytesList may hold b"" (tf.Example, tf.Transform's VarLenFeature): coerced Python lists
    # keep it like decoded shards do, hashed as TF hashes it; None inside a list is missing
    tags = [[b"", b"a"], [b""], [], [b"b", b""]]
    fs = sf.FeatureSet([sf.categorical_hash("tags", 7, multivalued=True)])
    batch, errors = fs.coerce({"tags": tags})
    assert errors == []
    out = fs.transform(batch, fs.fit([batch]))["tags"]
    want = tf.strings.to_hash_bucket_fast(tf.ragged.constant(tags, dtype=tf.string), 7)
    assert out.to_list() == want.to_list()
    _, errors = fs.coerce({"tags": [[b"a", None]]})
    assert [e.reason for e in errors] == ["missing value inside a list"]


def test_crossed_of_vocab_and_bucketized_matches_tf():
    country = obj([b"us", b"de", b"zz", b"fr"])
    age = np.float32([10, 35, 70, 35])
    c = sf.categorical_vocab_list("country", ["us", "de", "fr"], num_oov_buckets=2)
    a = sf.bucketized(sf.numeric("age"), boundaries=[18, 30, 60])
    cross = sf.crossed([c, a], hash_bucket_size=500)
    out, _ = _fit_transform([sf.indicator(cross)], {"country": country, "age": age})
    tc = fc.categorical_column_with_vocabulary_list("country", ["us", "de", "fr"],
                                                    num_oov_buckets=2)
    ta = fc.bucketized_column(fc.numeric_column("age"), [18, 30, 60])
    col = fc.crossed_column([tc, ta], hash_bucket_size=500)
    feats = {"country": tf.constant(list(country))[:, None], "age": tf.constant(age)[:, None]}
    assert rows(out[cross.name]) == tf_ids(col, feats)


@pytest.mark.parametrize("combiner", ["mean", "sum", "sqrtn"])
def test_embedding_combiners_match_tf_formulas(combiner):
    torch = pytest.importorskip("torch")
    from shardforge.features.layer import FeatureLayer

    ids = Ragged.from_rows([[0, 2, 2], [], [1], [3, 99]], dtype=np.int64)  # 99: OOV -> id -1
    w = Ragged.from_rows([[1.0, 0.5, 2.0], [], [3.0], [1.0, 1.0]], dtype=np.float32)
    cat = sf.categorical_vocab_list("k", [0, 1, 2, 3], multivalued=True)
    fs = sf.FeatureSet([sf.embedding(sf.weighted_categorical(cat, "w"), dim=3, combiner=combiner)])
    state = fs.fit([{"k": ids, "w": w}])
    out = fs.transform({"k": ids, "w": w}, state)
    layer = FeatureLayer(fs.schema(state))
    table = next(iter(layer.tables.values())).weight.detach().numpy()
    got = layer(out).detach().numpy()
    # tf.nn.safe_embedding_lookup_sparse: negative ids are pruned, weights combine per row
    # the OOV id (-1) contributes nothing, like TF's pruning of invalid ids
    indices = [[0, 0], [0, 1], [0, 2], [2, 0], [3, 0]]
    sp_ids = tf.SparseTensor(indices, tf.constant([0, 2, 2, 1, 3], tf.int64), [4, 3])
    sp_w = tf.SparseTensor(indices, tf.constant([1.0, 0.5, 2.0, 3.0, 1.0]), [4, 3])
    expected = tf.nn.safe_embedding_lookup_sparse(tf.constant(table), sp_ids, sp_w,
                                                  combiner=combiner).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.is_tensor(layer(out))


def test_crossed_with_vector_bucketized_matches_tf():
    v = np.float32([[0.5, 2.5], [1.5, -1.0]])
    tags = [[b"a"], [b"b", b"c"]]
    b = sf.bucketized(sf.numeric("v", shape=(2,)), boundaries=[0.0, 1.0, 2.0])
    cross = sf.crossed([b, "t"], hash_bucket_size=777)
    fs = sf.FeatureSet([sf.indicator(cross), sf.categorical_hash("t", 5, multivalued=True)])
    batch = {"v": v, "t": Ragged.from_rows(tags, dtype=object)}
    out = fs.transform(batch, fs.fit([batch]))
    tb = fc.bucketized_column(fc.numeric_column("v", shape=(2,)), [0.0, 1.0, 2.0])
    col = fc.crossed_column([tb, "t"], hash_bucket_size=777)
    feats = {"v": tf.constant(v), "t": tf.ragged.constant(tags, dtype=tf.string).to_sparse()}
    assert rows(out[cross.name]) == tf_ids(col, feats)


def test_indicator_multi_hot_and_weighted_match_tf():
    from shardforge.features.layer import FeatureLayer

    keys = [[b"a", b"a", b"c"], [], [b"zz"]]
    weights = [[0.5, 1.0, 2.0], [], [3.0]]
    cat = sf.categorical_vocab_list("k", ["a", "b", "c"], num_oov_buckets=1, multivalued=True)
    weighted = sf.weighted_categorical(cat, "w")
    fs = sf.FeatureSet([sf.indicator(cat), sf.indicator(weighted)])
    batch = {"k": Ragged.from_rows(keys, dtype=object),
             "w": Ragged.from_rows(weights, dtype=np.float32)}
    state = fs.fit([batch])
    parts = FeatureLayer(fs.schema(state)).parts(fs.transform(batch, state))
    tf_feats = {"k": tf.ragged.constant(keys).to_sparse(),
                "w": tf.ragged.constant(weights).to_sparse()}
    tcat = fc.categorical_column_with_vocabulary_list("k", ["a", "b", "c"], num_oov_buckets=1)
    for col, name in [(tcat, "k_indicator"),
                      (fc.weighted_categorical_column(tcat, "w"), weighted.name + "_indicator")]:
        dense = fc.indicator_column(col).get_dense_tensor(
            fcv2.FeatureTransformationCache(tf_feats), None)
        np.testing.assert_allclose(parts[name].numpy(), dense.numpy())
