"""The migrated preprocessing_fn (examples/tft_features.py) against its tf.Transform meaning.

TensorFlow's own ops are the oracle where they exist (``tf.strings.split``,
``tf.strings.to_hash_bucket_fast``, ``tf.raw_ops.Bucketize``); the vocabularies and quantiles
are checked against tf.Transform's documented rules, computed here independently: vocabulary
order count descending then bytes descending, ``frequency_threshold`` then ``top_k``, empty
tokens never entries, OOV = ``size + Fingerprint64 % buckets``; boundaries = the values at rank
``floor(i * n / num_buckets)`` (tf.Transform's sketch when exact), duplicates kept;
``scale_to_z_score`` with the population std of the filled values.
"""

from collections import Counter

import numpy as np
import pytest

from shardforge.examples.clicklog import generate_clicklog
from shardforge.examples.tft_features import FEATURES

tf = None


@pytest.fixture(autouse=True)
def _tensorflow():
    global tf
    import tensorflow

    tf = tensorflow


@pytest.fixture(scope="module")
def data():
    """Raw CSV-like columns with blanks and irregular spaces, and the outputs."""
    n = 6000
    cols = generate_clicklog(n, seed=5)
    rng = np.random.default_rng(6)
    raw = {k: [None if isinstance(v, float) and np.isnan(v) else v for v in col.tolist()]
           for k, col in cols.items()}
    for name, frac in (("age", 0.05), ("country", 0.05), ("lat", 0.03)):
        for i in np.flatnonzero(rng.random(n) < frac):
            raw[name][i] = None
    for i in np.flatnonzero(rng.random(n) < 0.05):
        raw["query"][i] = (b" " + raw["query"][i].replace(b" ", b"  ", 1)) if i % 3 else b""
    batch, errors = FEATURES.coerce(raw)
    assert errors == []
    state = FEATURES.fit([batch])
    return raw, FEATURES.transform(batch, state), state


def filled(raw, name, default):
    return [default if v is None else v for v in raw[name]]


def tft_vocab(tokens, top_k=None, frequency_threshold=None):
    counts = Counter(t for t in tokens if t and b"\n" not in t and b"\r" not in t)
    items = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    if frequency_threshold:
        items = [kv for kv in items if kv[1] >= frequency_threshold]
    return [k for k, _ in items[:top_k]]


def apply_vocab(values, vocab, num_oov_buckets=0):
    table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(vocab, np.arange(len(vocab), dtype=np.int64)),
        num_oov_buckets) if num_oov_buckets else tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(vocab, np.arange(len(vocab), dtype=np.int64)), -1)
    return table.lookup(tf.constant(values, tf.string)).numpy().tolist()


def tft_boundaries(x, num_buckets):
    xs = np.sort(np.asarray(x, np.float64))
    return xs[(np.arange(1, num_buckets) * len(xs)) // num_buckets].astype(np.float32)


def test_zscore_of_the_filled_column(data):
    raw, out, _ = data
    price = np.array(filled(raw, "price", 0.0), np.float32).astype(np.float64)  # a float32 input
    np.testing.assert_allclose(out["price_z"], (price - price.mean()) / price.std(), rtol=1e-5)


def test_vocabularies_follow_tf_transform_order_and_cut(data):
    raw, out, state = data
    country = filled(raw, "country", b"")
    vocab = tft_vocab(country, top_k=100)
    assert state.columns["country"]["vocab"].values == vocab
    assert out["country"].tolist() == apply_vocab(country, vocab, 1)
    items = raw["item_id"]
    vocab = tft_vocab(items, frequency_threshold=10)
    assert out["item_frequent"].tolist() == apply_vocab(items, vocab)
    vocab = tft_vocab(items, top_k=5000)
    assert out["item_top"].tolist() == apply_vocab(items, vocab, 100)


def test_split_then_vocabulary(data):
    raw, out, _ = data
    words = tf.strings.split(tf.constant(raw["query"]), sep=" ")
    vocab = tft_vocab(words.flat_values.numpy().tolist(), top_k=2000)
    ids = apply_vocab(words.flat_values.numpy().tolist(), vocab, 1)
    assert out["query"].values.tolist() == ids
    assert out["query"].row_splits.tolist() == words.row_splits.numpy().tolist()


def test_buckets_and_joined_string_hash(data):
    raw, out, _ = data
    age = np.array(filled(raw, "age", 0), np.int64)
    b = tft_boundaries(age, 10)
    bucket = tf.raw_ops.Bucketize(input=tf.constant(age, tf.float32), boundaries=b.tolist())
    assert out["age_bucket"].tolist() == bucket.numpy().tolist()
    joined = tf.strings.join([tf.constant(filled(raw, "country", b"")),
                              tf.strings.as_string(tf.cast(bucket, tf.int64))], "_")
    assert out["country_age"].tolist() == tf.strings.to_hash_bucket_fast(
        joined, 1000).numpy().tolist()
    for name in ("lat", "lon"):
        x = np.array(filled(raw, name, 0.0), np.float32)
        got = tf.raw_ops.Bucketize(input=x, boundaries=tft_boundaries(x, 20).tolist())
        assert out[f"{name}_bucket"].tolist() == got.numpy().tolist()


def test_empty_vocabulary_holds_tft_placeholder_entry():
    # tf.Transform 1.21 writes one placeholder entry into a vocabulary left empty (here: every
    # count under frequency_threshold), so OOV ids start at 1 and an int -1 gets id 0
    # (checked against tf.Transform itself in benchmarks/tft_diff.py).
    import shardforge.features as sf

    s = np.array([b"a", b"b", b"", b"a"], dtype=object)
    i = np.array([3, -1, 7, 3])
    fs = sf.FeatureSet([
        sf.categorical_vocab("s", frequency_threshold=10, num_oov_buckets=2, name="s_oov"),
        sf.categorical_vocab("s", frequency_threshold=10, name="s_def"),
        sf.categorical_vocab("i", dtype="int64", default=0, frequency_threshold=10,
                             num_oov_buckets=2, name="i_oov"),
    ])
    batch = {"s": s, "i": i}
    state = fs.fit([batch])
    out = fs.transform(batch, state)
    assert len(state.columns["s_oov"]["vocab"]) == 1
    want_s = 1 + tf.strings.to_hash_bucket_fast(tf.constant(list(s)), 2).numpy()
    assert out["s_oov"].tolist() == want_s.tolist()
    assert out["s_def"].tolist() == [-1] * 4
    want_i = 1 + tf.strings.to_hash_bucket_fast(tf.strings.as_string(i), 2).numpy()
    assert out["i_oov"].tolist() == np.where(i == -1, 0, want_i).tolist()
    assert fs.columns[0].num_buckets(state.columns["s_oov"]) == 3  # placeholder + 2 OOV
