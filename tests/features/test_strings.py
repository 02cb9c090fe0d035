"""String columns against TensorFlow's own ``tf.strings`` ops as the oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardforge.features as sf

tf = None  # imported by the first test that runs (see test_tf_compat.py for why)


@pytest.fixture(autouse=True)
def _tensorflow():
    global tf
    import tensorflow

    tf = tensorflow


def obj(values):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


TRICKY = [b"", b" ", b"  ", b"a", b"a  b", b" a", b"a ", b"a\tb c", b"\x0ba\x0cb\rc\n",
          b"x y  z   ", b"caf\xc3\xa9 \xff\xfe", b"ab-ab", b"A B\x00C"]
TEXT = st.lists(st.binary(max_size=12) | st.text(alphabet=" \t\nAbc-_\x0b\x00\u00e9", max_size=12)
                .map(str.encode), min_size=1, max_size=12)


def transform(column, values, key="s"):
    fs = sf.FeatureSet([column])
    return fs.transform({key: obj(values)}, fs.fit([{key: obj(values)}]))[column.name]


def raw(key="s"):
    return sf.Input(key, "bytes", default=b"")


@pytest.mark.parametrize("sep", [" ", "ab", "-", None])
@pytest.mark.parametrize("maxsplit", [-1, 0, 1, 2])
def test_split_matches_tf_strings_split(sep, maxsplit):
    # whitespace with maxsplit: the rest after the last split is kept, even empty ("a" -> a, "")
    got = transform(sf.split(raw(), sep=sep, maxsplit=maxsplit), TRICKY + [b"a", b"  a b"])
    want = tf.strings.split(tf.constant(TRICKY + [b"a", b"  a b"]), sep=sep, maxsplit=maxsplit)
    assert got.to_list() == want.to_list()


def test_whitespace_split_of_many_one_byte_tokens_matches_tf():
    # one token per byte: more tokens than half the buffer (the kernel once overflowed its
    # token table here and corrupted the heap)
    values = [b"a", b"b c", b"d e f", b"g"] * 50 + [b"x y z w v"] * 20
    got = transform(sf.split(raw()), values)
    assert got.to_list() == tf.strings.split(tf.constant(values)).to_list()


@settings(max_examples=30, deadline=None, database=None)
@given(TEXT, st.sampled_from([" ", "  ", "a", None]), st.integers(-1, 2))
def test_split_property_matches_tf(values, sep, maxsplit):
    got = transform(sf.split(raw(), sep=sep, maxsplit=maxsplit), values)
    want = tf.strings.split(tf.constant(values), sep=sep, maxsplit=maxsplit).to_list()
    assert got.to_list() == want


@settings(max_examples=30, deadline=None, database=None)
@given(TEXT)
def test_lower_strip_regex_replace_match_tf(values):
    x = tf.constant(values)
    assert transform(sf.lower(raw()), values).tolist() == tf.strings.lower(x).numpy().tolist()
    assert transform(sf.strip(raw()), values).tolist() == tf.strings.strip(x).numpy().tolist()
    for pattern, rewrite, glob in [(r"[0-9a]+", "#", True), (r"(b)(c)", r"\2\1", True),
                                   (r"\s+", " ", False)]:
        got = transform(sf.regex_replace(raw(), pattern, rewrite, replace_global=glob), values)
        want = tf.strings.regex_replace(x, pattern, rewrite, replace_global=glob)
        assert got.tolist() == want.numpy().tolist(), pattern


def test_joined_string_hash_is_one_line_and_matches_tf():
    rng = np.random.default_rng(0)
    country = obj([c.encode() for c in rng.choice(["US", "DE", "", "FR"], 500)])
    age = rng.integers(-5, 90, 500)
    age_bucket = sf.bucketized(sf.numeric("age", dtype="int64", default=0),
                               boundaries=[18, 25, 35, 50, 65])
    cross = sf.categorical_hash(sf.join(["country", age_bucket], "_"), 1000, name="cross")
    fs = sf.FeatureSet([cross, sf.categorical_hash("country", 10)])
    batch = {"country": country, "age": age}
    ours = fs.transform(batch, fs.fit([batch]))["cross"]
    bucket = tf.raw_ops.Bucketize(input=tf.constant(age, tf.float32),
                                  boundaries=[18.0, 25.0, 35.0, 50.0, 65.0])
    joined = tf.strings.join([tf.constant(list(country)),
                              tf.strings.as_string(tf.cast(bucket, tf.int64))], "_")
    assert ours.tolist() == tf.strings.to_hash_bucket_fast(joined, 1000).numpy().tolist()


def test_join_of_three_parts_with_int_input_matches_tf():
    a = obj([b"x", b"", b"yy"])
    n = np.array([3, -12, 0])
    col = sf.join([sf.Input("a", "bytes", default=b""), sf.Input("n", "int64", default=0),
                   "a"], separator="|", name="j")
    fs = sf.FeatureSet([col])
    got = fs.transform({"a": a, "n": n}, fs.fit([]))["j"]
    want = tf.strings.join([tf.constant(list(a)), tf.strings.as_string(n), tf.constant(list(a))],
                           "|")
    assert got.tolist() == want.numpy().tolist()


@pytest.mark.parametrize("width", [1, 2, 3, (1, 2), (2, 3)])
def test_ngrams_match_tf(width):
    values = [b"a b c d", b"", b"x", b"p q", b"  m  n o  "]
    tokens = sf.split(raw())
    got = transform(sf.ngrams(tokens, width, separator="_"), values)
    want = tf.strings.ngrams(tf.strings.split(tf.constant(values)), width, separator="_")
    assert got.to_list() == want.to_list()


def test_split_then_vocabulary_of_exact_tokens():
    # sep=" " keeps empty tokens, which (like tf.Transform's vocabulary files) are never
    # entries: they map to OOV.
    col = sf.sequence(sf.categorical_vocab(sf.split(raw("q"), sep=" "), num_oov_buckets=1,
                                           name="q"))
    values = [b"b a", b"a  b", b"", b"c a"]
    fs = sf.FeatureSet([col])
    state = fs.fit([{"q": obj(values)}])
    assert state.columns["q"]["vocab"].values == [b"a", b"b", b"c"]
    out = fs.transform({"q": obj(values)}, state)["q"]
    assert out.row_lengths().tolist() == [2, 3, 1, 2]
    assert out.to_list()[1][1] == 3  # the empty token: the OOV bucket


def test_string_columns_reject_bad_inputs():
    with pytest.raises(ValueError, match="sep must be non-empty"):
        sf.split("q", sep="")
    with pytest.raises(ValueError, match="invalid regex"):
        sf.regex_replace("q", "(", "")
    with pytest.raises(ValueError, match="at least two"):
        sf.join(["q"])
    fs = sf.FeatureSet([sf.join([sf.Input("x", "float32", default=0.0), raw()])])
    with pytest.raises(ValueError, match="must be one bytes or int64 value"):
        fs.fit([])


def test_ngrams_in_position_order_are_tft_ngrams():
    # tft.ngrams's docstring example (ngram_range=(1, 3)): by start position, then width;
    # the same n-grams as tf.strings.ngrams, which orders by width first.
    values = [b"One was Johnny", b"Two was a rat", b"", b"x"]
    tokens = sf.split(raw())
    got = transform(sf.ngrams(tokens, (1, 2, 3), order="position"), values).to_list()
    assert got[:2] == [
        [b"One", b"One was", b"One was Johnny", b"was", b"was Johnny", b"Johnny"],
        [b"Two", b"Two was", b"Two was a", b"was", b"was a", b"was a rat", b"a", b"a rat",
         b"rat"]]
    want = tf.strings.ngrams(tf.strings.split(tf.constant(values)), (1, 2, 3)).to_list()
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    with pytest.raises(ValueError, match="order"):
        sf.ngrams(tokens, 2, order="start")
