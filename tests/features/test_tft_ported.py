"""tf.Transform 1.21's own test cases, run against shardforge's public column and analyzer API.

Each case's inputs and expected outputs are copied from the tf.Transform test named beside it
(``tensorflow_transform/mappers_test.py``, ``beam/impl_test.py``). Where shardforge differs on
purpose the test says so and checks against an exact computation instead. TensorFlow itself is
the oracle for the keyed hash (``tf.strings.to_hash_bucket_strong``).
"""

import math

import numpy as np
import pytest

import shardforge.features as sf
from shardforge.features.per_key import KeyedQuantiles, KeyedStats
from shardforge.records.spec import Ragged


def run(columns, raw):
    fs = sf.FeatureSet(columns)
    batch, errors = fs.coerce(raw)
    assert errors == []
    return fs.transform(batch, fs.fit([batch]))


def rows(x):
    return [x[i].tolist() for i in range(len(x))] if isinstance(x, Ragged) else x.tolist()


def tokens(strings):
    return {"s": np.array([s.encode() for s in strings], dtype=object)}


# --------------------------------------------------------------------------- apply_buckets

# mappers_test.testApplyBuckets: (x, boundaries, expected); ints compare as ints
APPLY_BUCKETS = {
    "few_buckets": ([4], [5], [0]),
    "large_buckets": ([50_000_000], [0, 50_000_001, 100_000_001], [1]),
    "with_nans": ([4.0, math.nan, -math.inf, 7.5, 10.0], [2.0, 5.0, 8.0], [1, 3, 0, 2, 3]),
    "with_inf_boundary": ([4.0, -math.inf, 0.8, 7.5, 10.0], [-math.inf, 2.0, 5.0, 8.0],
                          [2, 1, 1, 3, 4]),
}


@pytest.mark.parametrize("case", APPLY_BUCKETS)
def test_apply_buckets(case):
    x, boundaries, expected = APPLY_BUCKETS[case]
    if isinstance(x[0], int):
        col = sf.bucketized(sf.numeric("x", dtype="int64"), boundaries=boundaries, name="b")
        assert run([col], {"x": np.array(x, np.int64)})["b"].tolist() == expected
    else:  # NaN and inf are values here (coerce would fill or refuse them): transform directly
        col = sf.bucketized(sf.numeric("x"), boundaries=boundaries)
        assert col.transform([np.array(x, np.float32)], {}).tolist() == expected


def test_int64_buckets_past_float32_precision_compare_as_integers():
    # float32 rounds 50,000,000 and 50,000,001 to the same value: bucket 2 when compared in
    # float32, bucket 1 as tf.Transform compares int64 against int64
    x = np.array([50_000_000, 50_000_001, 2**62, -(2**62)], np.int64)
    col = sf.bucketized(sf.numeric("x", dtype="int64"), boundaries=[0, 50_000_001, 2**62])
    assert run([col], {"x": x})[col.name].tolist() == [1, 2, 3, 0]


# --------------------------------------------------------------------------- ngrams, bag of words


def test_ngrams_bad_sizes_raise_at_declaration():
    # mappers_test.testNGramsBadSizes: ngram_range (0, 5) and (6, 5) are ValueErrors
    split = sf.split("s")
    for lo, hi in ((0, 5), (6, 5)):
        with pytest.raises(ValueError):
            sf.ngrams(split, range(lo, hi + 1), order="position")
        with pytest.raises(ValueError, match="ngram_range"):
            sf.bag_of_words(split, (lo, hi))


# mappers_test.testBagOfWords: (strings, ngram_range, expected rows)
BAG_OF_WORDS = {
    "bag_of_words": (["snakes or dogs and bunnies", "cats not rats"], (1, 1),
                     [["snakes", "or", "dogs", "and", "bunnies"], ["cats", "not", "rats"]]),
    "bag_of_words_duplicates_within_rows": (
        ["Cats or dogs or bunnies", "Cats not rats"], (1, 1),
        [["Cats", "or", "dogs", "bunnies"], ["Cats", "not", "rats"]]),
    "bag_of_words_duplicates_across_rows": (
        ["cats or dogs or cats", "cats or dogs"], (1, 1),
        [["cats", "or", "dogs"], ["cats", "or", "dogs"]]),
    "bag_of_words_some_empty": (
        ["boots and cats and boots and cats", "", "cats or dogs", ""], (1, 1),
        [["boots", "and", "cats"], [], ["cats", "or", "dogs"], []]),
    "bag_of_words_bigrams": (
        ["i like cats and i like cats to pet", "i like cats"], (2, 2),
        [["i like", "like cats", "cats and", "and i", "cats to", "to pet"],
         ["i like", "like cats"]]),
}


@pytest.mark.parametrize("case", BAG_OF_WORDS)
def test_bag_of_words(case):
    strings, ngram_range, expected = BAG_OF_WORDS[case]
    # tf.compat.v1.string_split drops empty tokens: the whitespace split
    out = run([sf.bag_of_words(sf.split("s"), ngram_range, " ", name="bow")], tokens(strings))
    assert rows(out["bow"]) == [[t.encode() for t in r] for r in expected]


def test_bag_of_words_empty_batch():
    # mappers_test.testNGramsBagOfWordsEmpty
    col = sf.bag_of_words(sf.split("s"), (1, 2), "")
    out = col.transform([Ragged(np.array([], object), np.zeros(1, np.int64))], {})
    assert len(out) == 0 and len(out.values) == 0


# mappers_test.testDedupeDenseTensorPerRow: (rows, expected rows), first occurrence kept
DEDUPLICATE = {
    "deduplicate_no_op": ([["a", "b"], ["c", "d"]], [["a", "b"], ["c", "d"]]),
    "deduplicate": ([["a", "b", "a", "b"], ["c", "c", "d", "d"]], [["a", "b"], ["c", "d"]]),
    "deduplicate_different_sizes": ([["a", "b", "a", "b"], ["c", "a", "d", "d"]],
                                    [["a", "b"], ["c", "a", "d"]]),
    "deduplicate_keeps_dups_across_rows": ([["a", "b", "a", "b"], ["b", "a", "b", "b"]],
                                           [["a", "b"], ["b", "a"]]),
    "deduplicate_empty_rows": ([["a", "a"], [], ["b"]], [["a"], [], ["b"]]),
}


@pytest.mark.parametrize("case", DEDUPLICATE)
def test_deduplicate(case):
    values, expected = DEDUPLICATE[case]
    inp = sf.Input("t", "bytes", multivalued=True)
    out = run([sf.deduplicate(inp, name="d")], {"t": [[v.encode() for v in r] for r in values]})
    assert rows(out["d"]) == [[v.encode() for v in r] for r in expected]
    ints = sf.Input("i", "int64", multivalued=True)
    out = run([sf.deduplicate(ints, name="d")], {"i": [[ord(v) for v in r] for r in values]})
    assert rows(out["d"]) == [[ord(v) for v in r] for r in expected]


def test_word_count():
    # mappers_test.testWordCount / testWordCountEmpty (split into characters there; the same
    # counts from space-separated characters here)
    strings = [" ".join(s) for s in ("abc", "def", "fghijklm", "z", "")]
    out = run([sf.word_count(sf.split("s"), name="n")], tokens(strings))
    assert out["n"].tolist() == [3, 3, 8, 1, 0]
    assert out["n"].dtype == np.int64


@pytest.mark.parametrize("lengths,expected", [
    ([2, 1, 3], [0, 1, 0, 0, 1, 2]),  # mappers_test.testSegmentIndices: ids [0, 0, 1, 2, 2, 2]
    ([2, 0, 2], [0, 1, 0, 1]),        # testSegmentIndicesSkipOne: ids [0, 0, 2, 2]
    ([], []),                          # testSegmentIndices: empty
])
def test_segment_indices(lengths, expected):
    strings = [" ".join("x" * n) for n in lengths]
    out = run([sf.segment_indices(sf.split("s"), name="p")], tokens(strings)) if lengths else {
        "p": sf.segment_indices(sf.split("s")).transform(
            [Ragged(np.array([], object), np.zeros(1, np.int64))], {})}
    assert out["p"].values.tolist() == expected


# --------------------------------------------------------------------------- tf-idf


def test_tfidf_docstring_example():
    # mappers.tfidf's docstring: ["I", "like", "pie", "pie", "pie"], ["yum", "yum", "pie"] with
    # the vocabulary pie=0, yum=1, like=2, I=3
    ids = sf.categorical_vocab_list(sf.split("s"), [b"pie", b"yum", b"like", b"I"], name="ids")
    bag, weight = sf.tfidf(ids, 4)
    out = run([bag, weight], tokens(["I like pie pie pie", "yum yum pie"]))
    assert rows(out[bag.name]) == [[0, 2, 3], [0, 1]]
    np.testing.assert_array_equal(out[weight.name].values, np.array(
        [0.6, 0.28109303, 0.28109303, 0.33333334, 0.9369768], np.float32))


@pytest.mark.parametrize("smooth,log_ratio", [(True, 1.4054651), (False, 1.6931471)])
def test_tfidf_term_and_document_frequency(smooth, log_ratio):
    # mappers_test.testToTFIDF / testToTFIDFNotSmooth: doc 0 holds term 0 three times and terms
    # 1, 2 once (length 5); doc 1 terms 0 and 3; document frequencies [2, 1, 1, 1], N = 2
    ids = sf.categorical_identity("i", 4, multivalued=True, name="ids")
    bag, weight = sf.tfidf(ids, 4, smooth=smooth)
    out = run([bag, weight], {"i": [[0, 0, 1, 0, 2], [3, 0]]})
    assert rows(out[bag.name]) == [[0, 1, 2], [0, 3]]
    want = [3 / 5, 1 / 5 * log_ratio, 1 / 5 * log_ratio, 1 / 2, 1 / 2 * log_ratio]
    np.testing.assert_allclose(out[weight.name].values, want, rtol=1e-6)


def test_tfidf_matches_exact_formula_on_random_documents():
    rng = np.random.default_rng(3)
    docs = [rng.integers(0, 40, rng.integers(0, 12)).tolist() for _ in range(300)]
    ids = sf.categorical_identity("i", 50, multivalued=True, name="ids")
    bag, weight = sf.tfidf(ids, 50)
    out = run([bag, weight], {"i": docs})
    df = np.zeros(50)
    for d in docs:
        df[sorted(set(d))] += 1
    for r, d in enumerate(docs):
        terms = sorted(set(d))
        assert out[bag.name][r].tolist() == terms
        exact = [d.count(t) / len(d) * (1 + math.log(301 / (df[t] + 1))) for t in terms]
        np.testing.assert_allclose(out[weight.name][r], exact, rtol=2e-7)


def test_tfidf_refuses_a_learned_vocabulary_with_the_alternatives():
    with pytest.raises(ValueError, match="categorical_hash"):
        sf.tfidf(sf.categorical_vocab(sf.split("s")), 100)


# --------------------------------------------------------------------------- hash_strings


@pytest.mark.parametrize("strings,buckets,key,expected", [
    (["Car", "Bus", "Tree"], 11, None, [8, 4, 5]),        # testHashStringsNoKeyDenseInput
    (["Dog", "Cat", ""], 17, None, [12, 4, 11]),          # testHashStringsNoKeySparseInput
    (["Cake", "Pie", "Sundae"], 11, (123, 456), [6, 5, 6]),  # testHashStringsWithKeyDenseInput
    (["$$$", "%^#", "&$!#@", "$$$"], 173, (321, 555), [16, 156, 9, 16]),  # ...WithKeySparse
])
def test_hash_strings(strings, buckets, key, expected):
    col = sf.hash_strings("s", buckets, hash_key=key, name="h")
    assert run([col], tokens(strings))["h"].tolist() == expected


def test_keyed_hash_is_tensorflows_strong_hash():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    values = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in range(40) for _ in range(3)]
    for key in ((0, 0), (123, 456), (-1, -(2**63) + 5)):
        ours = sf.siphash24(np.array(values, dtype=object), tuple(k % 2**64 for k in key))
        want = tf.strings.to_hash_bucket_strong(values, 2**62, key=list(key)).numpy()
        assert (ours % np.uint64(2**62)).astype(np.int64).tolist() == want.tolist()


# --------------------------------------------------------------------------- interpolation

# mappers_test.testApplyBucketsWithInterpolation: (x, boundaries, expected)
INTERPOLATION = {
    "single_input_value": ([1], [0, 2], [0.5]),
    "single_boundary": ([-1, 9, 10, 11], [10], [0, 0, 1, 1]),
    "out_of_bounds": ([-1111, 0, 5, 9, 10, 11, 15, 19, 20, 21, 1111], [10, 20],
                      [0, 0, 0, 0, 0, 0.1, 0.5, 0.9, 1, 1, 1]),
    "2d_input": ([[15, 10], [20, 17], [-1111, 21]], [10, 20], [[0.5, 0], [1, 0.7], [0, 1]]),
    "integer_input": ([15, 20, 25], [10, 20], [0.5, 1, 1]),
    "float_input": ([-10, 0, 0.1, 2.3, 4.5, 6.7, 8.9, 10, 100], list(range(11)),
                    [0, 0, 0.01, 0.23, 0.45, 0.67, 0.89, 1, 1]),
    "float_input_with_nans": (
        [-math.inf, -10, 0, 0.1, 2.3, math.nan, 4.5, 6.7, 8.9, 10, 100, math.inf],
        list(range(11)), [0, 0, 0, 0.01, 0.23, 0.5, 0.45, 0.67, 0.89, 1, 1, 1]),
    "float_input_with_inf_boundaries": ([-math.inf, -math.inf, 0.0, -math.inf],
                                        [-math.inf, 0], [0, 0, 1, 0]),
    "float_input_with_nan_boundaries": ([-math.inf, math.nan, 0.0, 1.0], [math.nan, 0, 1],
                                        [0, 0.5, 0, 1]),
    "negative_boundaries": ([-10, -5, -3, 0, 2, 4, 8, 12, 18], [-20, -4, 1, 4, 20],
                            [0.15625, 0.234375, 0.3, 0.45, 0.583333, 0.75, 0.8125, 0.875,
                             0.96875]),
    "interpolates_properly": ([-1111, 10, 50, 100, 1000, 9000, 10000, 1293817391],
                              [10, 100, 1000, 10000],
                              [0, 0, 4.0 / 9 / 3, 1.0 / 3, 2.0 / 3, (2 + 8.0 / 9) / 3, 1, 1]),
}


@pytest.mark.parametrize("case", INTERPOLATION)
def test_apply_buckets_with_interpolation(case):
    x, boundaries, expected = INTERPOLATION[case]
    got = sf.interpolate_buckets(np.array(x, np.float32), boundaries)
    np.testing.assert_allclose(got, np.array(expected, np.float32), atol=1e-6)


def test_apply_buckets_with_interpolation_as_a_column():
    x = np.array([-1111, 0, 5, 9, 10, 11, 15, 19, 20, 21, 1111], np.float32)
    col = sf.bucket_interpolated(sf.numeric("x"), boundaries=[10, 20], name="y")
    np.testing.assert_allclose(run([col], {"x": x})["y"],
                               [0, 0, 0, 0, 0, 0.1, 0.5, 0.9, 1, 1, 1], atol=1e-6)


def test_apply_buckets_with_interpolation_all_nan_boundaries_raise():
    # testApplyBucketsWithInterpolationAllNanBoundariesRaises
    with pytest.raises(ValueError, match="finite"):
        sf.interpolate_buckets(np.zeros(3, np.float32), [math.nan] * 3)
    with pytest.raises(ValueError, match="finite"):
        sf.bucket_interpolated(sf.numeric("x"), boundaries=[math.nan, math.nan])


# --------------------------------------------------------------------------- min / max / per key


@pytest.mark.parametrize("dtype,lo,hi", [
    ("float32", math.inf, -math.inf),
    ("int64", float(np.iinfo(np.int64).max), float(np.iinfo(np.int64).min)),
])
def test_min_max_of_no_values(dtype, lo, hi):
    # impl_test.testNumericAnalyzersWithEmptyInputs: min/max of nothing are +inf/-inf for
    # floats, the int64 limits for ints; mean and var 0
    an = sf.NumericStats(dtype)
    st = an.extract(an.merge([an.create(), an.create()]))
    assert (st.count, st.mean, st.std, st.min, st.max) == (0, 0.0, 0.0, lo, hi)


def test_scale_by_min_max_per_key():
    # impl_test.testScaleMinMaxPerKey (elementwise=False): x and y stacked, scaled to [-1, 1]
    # with the min and max of each key over both
    x = [4, 1, 5, 2, -2, 0]
    y = [8, 5, 9, 6, 0, 2]
    key = [b"a", b"a", b"a", b"a", b"b", b"b"]
    col = sf.scale_by_min_max_per_key(sf.Input("xy", "float32", (2,), default=0.0), "key",
                                      -1.0, 1.0, name="s")
    out = run([col], {"xy": np.stack([x, y], 1).astype(np.float32),
                      "key": np.array(key, object)})
    np.testing.assert_allclose(out["s"], [[-0.25, 0.75], [-1.0, 0.0], [0.0, 1.0],
                                          [-0.75, 0.25], [-1.0, 0.0], [0.0, 1.0]])


def test_scale_to_z_score_per_key_with_nan():
    # impl_test.testScaleToZScorePerKey: 'a' has mean 3 and std 5, 'b' mean 0 and std 1; NaN
    # values are left out of the statistics and scale to NaN
    x = np.array([-4, 10, 1, 2, 4, -1, np.nan], np.float64)
    key = np.array([b"a", b"a", b"b", b"a", b"a", b"b", b"b"], object)
    col = sf.scale_to_z_score_per_key(sf.Input("x", "float32"), "key", name="z")
    state = fit_column(col, [x, key])
    np.testing.assert_allclose(col.transform([x, key], state),
                               [-1.4, 1.4, 1.0, -0.2, 0.2, -1.0, np.nan])
    s = np.array([3, -3, 3, 3, -3, -3, np.nan])
    np.testing.assert_allclose(col.transform([s, key], fit_column(col, [s, key])),
                               [1.0, -1.0, 1.0, 1.0, -1.0, -1.0, np.nan])


def fit_column(col, values):
    state = {}
    for name, an in col.analyzers().items():
        state[name] = an.extract(an.add_batch(an.create(), col.analyze(values)[name]))
    return state


def test_per_key_unseen_key_maps_like_tf_transform():
    # impl_test.testPerKeyWithOOVKeys: an unseen key has mean 0, var 0 (z-score = x) and
    # min = max = 0 (0-1 scaling = sigmoid(x))
    train = {"x": np.array([1.0, 3.0], np.float32), "k": np.array([b"a", b"a"], object)}
    z = sf.scale_to_z_score_per_key("x", "k", name="z")
    m = sf.scale_to_0_1_per_key("x", "k", name="m")
    fs = sf.FeatureSet([z, m])
    state = fs.fit([fs.coerce(train)[0]])
    test, _ = fs.coerce({"x": np.array([2.0, 2.0], np.float32),
                         "k": np.array([b"a", b"zz"], object)})
    out = fs.transform(test, state)
    np.testing.assert_allclose(out["z"], [0.0, 2.0])
    np.testing.assert_allclose(out["m"], [0.5, 1 / (1 + math.exp(-2.0))], rtol=1e-6)


@pytest.mark.parametrize("part", ["keys", "values"])
def test_per_key_statistics_are_identical_for_any_batching(part):
    rng = np.random.default_rng(0)
    x = rng.normal(1e6, 3, 999)
    k = rng.choice(np.array([b"a", b"b", b"", b"c\nd"], object), 999)
    an = KeyedStats(part)
    whole = an.extract(an.add_batch(an.create(), (x, k)))
    cuts = [0, 1, 400, 401, 999]
    accs = [an.add_batch(an.create(), (x[a:b], k[a:b])) for a, b in zip(cuts, cuts[1:])]
    assert an.extract(an.merge(accs[::-1])) == whole
    assert an.extract(an.merge([an.merge(accs[:2]), an.merge(accs[2:])])) == whole


def test_document_frequency_is_identical_for_any_batching():
    rng = np.random.default_rng(1)
    docs = [rng.integers(-5, 30, rng.integers(0, 6)).tolist() for _ in range(200)]

    def ragged(part):
        splits = np.r_[0, np.cumsum([len(d) for d in part])]
        return Ragged(np.array([v for d in part for v in d], np.int64), splits)

    an = sf.DocumentFrequency(20)
    whole = an.extract(an.add_batch(an.create(), ragged(docs)))
    halves = [an.add_batch(an.create(), ragged(docs[a:b])) for a, b in ((0, 77), (77, 200))]
    assert an.extract(an.merge(halves[::-1])) == whole
    exact = np.zeros(20, np.int64)
    for d in docs:
        exact[sorted({v % 20 for v in d})] += 1
    assert whole.values == np.flatnonzero(exact).tolist()
    assert whole.counts.tolist() == exact[exact > 0].tolist()


@pytest.mark.parametrize("elementwise,expected", [
    (True, [[0.5, 0.5], [-1.0, -1.0], [1.0, 1.0], [-0.5, -0.5]]),
    (False, [[-0.25, 0.75], [-1.0, 0.0], [0.0, 1.0], [-0.75, 0.25]]),
])
def test_scale_by_min_max_elementwise(elementwise, expected):
    # impl_test.testScaleMinMax: x and y stacked, scaled to [-1, 1]
    xy = sf.Input("xy", "float32", (2,), default=0.0)
    col = (sf.scale_elementwise(xy, "minmax", (-1.0, 1.0), name="s") if elementwise else
           sf.numeric(xy.name, shape=(2,), default=0.0, normalize="minmax",
                      output_range=(-1.0, 1.0), name="s"))
    raw = {"xy": np.array([[4, 8], [1, 5], [5, 9], [2, 6]], np.float32)}
    np.testing.assert_allclose(run([col], raw)["s"], expected)


def test_scale_to_z_score_elementwise_against_numpy():
    rng = np.random.default_rng(2)
    x = (rng.normal(0, 1, (500, 3)) * [1, 10, 1e-3] + [0, 1e6, 5]).astype(np.float32)
    col = sf.scale_elementwise(sf.Input("x", "float32", (3,), default=0.0), "zscore", name="z")
    exact = (x.astype(np.float64) - x.mean(0, dtype=np.float64)) / x.std(0, dtype=np.float64)
    np.testing.assert_allclose(run([col], {"x": x})["z"], exact, rtol=1e-5, atol=1e-6)


def test_bucketize_per_key_with_infrequent_keys():
    # beam/bucketize_integration_test.testBucketizePerKeyWithInfrequentKeys (4 buckets). Two
    # rows differ on purpose: shardforge's per-key boundaries are the exact quantiles (value at
    # rank floor(i * n / 4)), tf.Transform's come from its sketch through a float32 rescaling.
    # Key c holds one value, 15: its exact boundaries are 15, 15, 15 and 15 lands in bucket 3,
    # as tft.bucketize puts a constant column (tf.Transform: 1). Key e = [2, 4, 6, 8, 10, 11,
    # 12, 13] has boundaries 6, 10, 12, so 13 is in bucket 3 like 12 (tf.Transform: 2, below 12).
    x = [[], [5, 6], [7], [12], [13], [15], [2], [4], [6], [8], [2], [4], [6], [8], [10], [11],
         [12], [13]]
    key = [[], ["a", "a"], ["a"], ["b"], ["b"], ["c"], ["d"], ["d"], ["d"], ["d"], ["e"], ["e"],
           ["e"], ["e"], ["e"], ["e"], ["e"], ["e"]]
    tft_expected = [[], [1, 2], [3], [1], [3], [1], [0], [1], [2], [3], [0], [0], [1], [1], [2],
                    [2], [3], [2]]
    ours = [list(r) for r in tft_expected]
    ours[5], ours[17] = [3], [3]
    col = sf.bucketize_per_key(sf.Input("x", "float32", multivalued=True),
                               sf.Input("key", "bytes", multivalued=True), 4, name="b")
    out = run([col], {"x": x, "key": [[k.encode() for k in r] for r in key]})
    assert rows(out["b"]) == ours
    exact = {}
    for xs, ks in zip(x, key):
        for v, k in zip(xs, ks):
            exact.setdefault(k, []).append(v)
    for k, vals in exact.items():  # the exact rule, key by key
        v = np.sort(vals)
        b = v[(np.arange(1, 4) * len(v)) // 4]
        got = [out["b"][r][j] for r, ks in enumerate(key) for j, kk in enumerate(ks) if kk == k]
        assert got == np.searchsorted(b, [xx for xs, ks in zip(x, key)
                                          for xx, kk in zip(xs, ks) if kk == k], "right").tolist()


def test_bucketize_per_key_unseen_key_is_minus_one():
    col = sf.bucketize_per_key("x", "k", 3, default=0.0, name="b")
    fs = sf.FeatureSet([col])
    state = fs.fit([fs.coerce({"x": np.arange(9.0, dtype=np.float32),
                               "k": np.array([b"a"] * 9, object)})[0]])
    test, _ = fs.coerce({"x": np.array([0.0, 8.0, 8.0], np.float32),
                         "k": np.array([b"a", b"a", b"z"], object)})
    assert fs.transform(test, state)["b"].tolist() == [0, 2, -1]


def test_bucketize_elementwise_is_each_positions_quantiles():
    # beam/bucketize_integration_test.testBucketizationElementwise's rule: each element position
    # of a fixed-shape input gets the quantiles of its own values
    x = np.stack([np.arange(1, 101), np.arange(100, 0, -1) * 10], 1).astype(np.float32)
    col = sf.bucketize_elementwise(sf.Input("x", "float32", (2,), default=0.0), 4, name="b")
    out = run([col], {"x": x})["b"]
    for j in range(2):
        b = np.sort(x[:, j])[(np.arange(1, 4) * 100) // 4]
        assert out[:, j].tolist() == np.searchsorted(b, x[:, j], "right").tolist()


def test_keyed_quantiles_are_identical_for_any_batching():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 500)
    k = rng.choice(np.array([b"a", b"b", b"c"], object), 500)
    an = KeyedQuantiles("values", 5)
    whole = an.extract(an.add_batch(an.create(), (x, k)))
    parts = [an.add_batch(an.create(), (x[a:b], k[a:b])) for a, b in ((0, 123), (123, 500))]
    assert an.extract(an.merge(parts[::-1])) == whole


# --------------------------------------------------------------------------- covariance, pca


@pytest.mark.parametrize("rows_in,expected", [
    ([[0, 0], [4, 0], [2, -2], [2, 2]], [[2, 0], [0, 2]]),  # impl_test.testCovarianceTwoDimensions
    ([[0], [2], [4], [6]], [[5]]),                          # testCovarianceOneDimension
    ([], [[0]]),                                   # testCovarianceOneDimensionWithEmptyInputs
])
def test_covariance(rows_in, expected):
    dim = len(expected)
    an = sf.Covariance(dim)
    acc = an.add_batch(an.create(), np.array(rows_in, np.float64).reshape(-1, dim))
    assert np.array(an.extract(acc).values).reshape(dim, dim).tolist() == expected


def test_covariance_is_exact_and_order_free_with_a_large_offset():
    # tf.Transform sums x x^T in float64 per batch: E[xx^T] - uu^T cancels at an offset of 1e8
    # (differs on purpose); shardforge's exact products and integer sums give the covariance
    # of the float64 rows, rounded once, for any batching
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (1000, 2)) + 1e8
    an = sf.Covariance(2)
    whole = an.extract(an.add_batch(an.create(), x))
    parts = [an.add_batch(an.create(), x[a:b]) for a, b in ((0, 1), (1, 600), (600, 1000))]
    assert an.extract(an.merge(parts[::-1])) == whole
    exact = np.cov(x - 1e8, rowvar=False, bias=True)  # the offset is exact in float64 here
    np.testing.assert_allclose(np.reshape(whole.values, (2, 2)), exact, rtol=1e-12)


@pytest.mark.parametrize("rows_in", [
    [[0, 0, 1], [4, 0, 1], [2, -1, 1], [2, 1, 1]],  # impl_test.testPCAThreeToTwoDimensions
    [],                                     # testPCAThreeToTwoDimensionsWithEmptyInputs
])
def test_pca(rows_in):
    an = sf.PCA(3, 2)
    acc = an.add_batch(an.create(), np.array(rows_in, np.float64).reshape(-1, 3))
    assert np.reshape(an.extract(acc).values, (3, 2)).tolist() == [[1, 0], [0, 1], [0, 0]]


def test_pca_projection_column():
    rng = np.random.default_rng(6)
    x = (rng.normal(0, 1, (300, 3)) * [5, 1, 0.1]).astype(np.float32)
    col = sf.pca_projection(sf.Input("x", "float32", (3,), default=0.0), 2, name="p")
    out = run([col], {"x": x})["p"]
    cov = np.cov(x.astype(np.float64), rowvar=False, bias=True)
    vals, vecs = np.linalg.eigh(cov)
    want = x.astype(np.float64) @ vecs[:, np.argsort(vals)[::-1]][:, :2]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- histogram, density


def test_histogram():
    # impl_test.testHistograms (_uniform): values 10..99, boundaries 0, 10, ..., 100
    an = sf.Histogram(10 * np.arange(11))
    acc = an.add_batch(an.create(), np.arange(10, 100))
    assert an.extract(acc).counts.tolist() == [0] + [10] * 9
    # analyzers.histogram's docstring example (its 4 bins of boundaries 0..4)
    an = sf.Histogram(range(5))
    acc = an.add_batch(an.create(), np.array([0, 1, 0, 1, 0, 3, 0, 1]))
    assert an.extract(acc).counts.tolist() == [4, 3, 0, 1]


@pytest.mark.parametrize("raw,categorical,expected", [
    ([str(x % 10) + "_" for x in range(1, 101)], True, 0.1),  # impl_test.testProbCategorical
    ([x % 10 for x in range(1, 101)], True, 0.1),              # testProbCategoricalInt
    (list(range(100)), False, 0.01),                           # testProbTenBoundaries
])
def test_estimated_probability_density(raw, categorical, expected):
    strings = isinstance(raw[0], str)
    inp = sf.Input("x", "bytes" if strings else "int64", default=b"" if strings else 0)
    col = sf.estimated_probability_density(
        inp, None if categorical else range(0, 101, 10), categorical, name="p")
    values = np.array([v.encode() for v in raw], object) if strings else np.array(raw)
    np.testing.assert_allclose(run([col], {"x": values})["p"], [expected] * 100, rtol=1e-6)


def test_estimated_probability_density_refuses_a_bin_count():
    # tf.Transform reads min and max first for boundaries=int: a second pass
    with pytest.raises(ValueError, match="second pass"):
        sf.estimated_probability_density(sf.Input("x", "float32", default=0.0), 5)


# --------------------------------------------------------------------------- ranked vocabularies

_HELLO = ["hello"] * 3 + ["goodbye", "aaaaa", "aaaaa", "goodbye", "goodbye", "aaaaa", "aaaaa",
                          "goodbye", "goodbye"]
_HELLO_LABELS = [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0]
_PREDICTORS = ["good_predictor_of_0"] * 3 + [
    "good_predictor_of_1", "good_predictor_of_2", "good_predictor_of_2", "good_predictor_of_2",
    "good_predictor_of_1", "good_predictor_of_1", "weak_predictor_of_1", "good_predictor_of_0",
    "good_predictor_of_1", "good_predictor_of_1", "good_predictor_of_1", "weak_predictor_of_1"]
_PREDICTOR_LABELS = [0, 0, 0, 1, 2, 2, 2, 1, 1, 1, 0, 1, 1, 1, 0]
_BY_WEIGHT = ["informative_1"] * 2 + ["informative_0"] * 2 + ["uninformative"] * 2 + [
    "informative_by_weight"] * 2

# beam/vocabulary_integration_test.testVocabularyWithMutualInformation: (x, labels, weights,
# adjusted, min_diff_from_avg, expected (value, score) in vocabulary order)
MUTUAL_INFORMATION = {
    "_unadjusted_mi_binary_label": (
        ["informative"] * 3 + ["uninformative"] * 4 + ["uninformative_rare"] * 2,
        [1, 1, 1, 0, 1, 1, 0, 0, 1], None, False, 0.0,
        [("informative", 1.7548264), ("uninformative", 0.33985),
         ("uninformative_rare", 0.169925)]),
    "_unadjusted_mi_multi_class_label": (
        _PREDICTORS, _PREDICTOR_LABELS, None, False, 0.0,
        [("good_predictor_of_2", 6.9656613), ("good_predictor_of_1", 6.5969828),
         ("good_predictor_of_0", 6.339692), ("weak_predictor_of_1", 0.684463)]),
    "_unadjusted_mi_binary_label_with_weights": (
        _BY_WEIGHT, [1, 1, 0, 0, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1, 1, 5], False, 0.0,
        [("informative_0", 3.1698803), ("informative_1", 1.1698843),
         ("informative_by_weight", 0.6096405), ("uninformative", 0.169925)]),
    "_unadjusted_mi_binary_label_min_diff_from_avg": (
        _HELLO, _HELLO_LABELS, None, False, 2.0,
        [("hello", 0.0), ("goodbye", 0.0), ("aaaaa", 0.0)]),
    "_adjusted_mi_binary_label": (
        _HELLO, _HELLO_LABELS, None, True, 0.0,
        [("goodbye", 1.4070794), ("aaaaa", 0.9987448), ("hello", 0.5017178)]),
    "_adjusted_mi_multi_class_label": (
        _PREDICTORS, _PREDICTOR_LABELS, None, True, 0.0,
        [("good_predictor_of_1", 5.4800901), ("good_predictor_of_2", 5.3861019),
         ("good_predictor_of_0", 4.9054722), ("weak_predictor_of_1", -0.9748023)]),
    "_adjusted_mi_binary_label_with_weights": (
        _BY_WEIGHT, [1, 1, 0, 0, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1, 1, 5], True, 0.0,
        [("informative_0", 2.3029856), ("informative_1", 0.3029896),
         ("informative_by_weight", 0.1713041), ("uninformative", -0.6969697)]),
    "_adjusted_mi_min_diff_from_avg": (
        ["good_predictor_of_0"] * 3 + ["good_predictor_of_1", "good_predictor_of_0"]
        + ["good_predictor_of_1"] * 4 + ["good_predictor_of_0"] + ["good_predictor_of_1"] * 3
        + ["weak_predictor_of_1"] * 2,
        [0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0], None, True, 1.0,
        [("good_predictor_of_0", 1.8322128), ("good_predictor_of_1", 1.7554416),
         ("weak_predictor_of_1", 0.0)]),
    "_labels_weight_and_frequency": (
        _HELLO, _HELLO_LABELS, [0.3, 0.4, 0.3, 1.2, 0.6, 0.7, 1.0, 1.0, 0.6, 0.7, 1.0, 1.0],
        False, 0.0, [("aaaaa", 1.5637185), ("goodbye", 0.8699492), ("hello", 0.6014302)]),
}


@pytest.mark.parametrize("case", MUTUAL_INFORMATION)
def test_vocabulary_mutual_information(case):
    x, labels, weights, adjusted, min_diff, expected = MUTUAL_INFORMATION[case]
    an = sf.RankedVocabulary(labels=True, use_adjusted_mutual_info=adjusted,
                             min_diff_from_avg=min_diff)
    w = None if weights is None else np.array(weights, np.float64)
    lab = np.array(labels, np.int64)
    acc = an.add_batch(an.create(), (np.array([v.encode() for v in x], object), w, lab, w, lab))
    vocab, scores = an.extract(acc), an.scores(acc)
    assert vocab.values == [v.encode() for v, _ in expected]
    np.testing.assert_allclose([scores[v] for v in vocab.values], [s for _, s in expected],
                               rtol=1e-5, atol=1e-6)


def test_vocabulary_mutual_information_int64_values_as_a_column():
    # _adjusted_mi_binary_label_int64_feature, through the column: 1, 2, 3 ranked by AMI
    x = [3, 3, 3, 1, 2, 2, 1, 1, 2, 2, 1, 1]
    col = sf.categorical_vocab_ranked("x", labels="label", use_adjusted_mutual_info=True,
                                      min_diff_from_avg=0.0, dtype="int64", default=0, name="v")
    fs = sf.FeatureSet([col])
    batch, _ = fs.coerce({"x": np.array(x), "label": np.array(_HELLO_LABELS)})
    state = fs.fit([batch])
    assert state.columns["v"]["vocab"].values == [1, 2, 3]
    assert fs.transform(batch, state)["v"].tolist() == [2, 2, 2, 0, 1, 1, 0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize("x,weights,expected", [
    # _string_feature_with_weights / _int64_feature_with_weights
    (["hello", "world", "goodbye", "aaaaa", "aaaaa", "goodbye"],
     [1.0, 0.5, 1.0, 0.26, 0.25, 1.5], [1, 3, 0, 2, 2, 0]),
    ([2, 1, 3, 4, 4, 3], [1.0, 0.5, 1.0, 0.26, 0.25, 1.5], [1, 3, 0, 2, 2, 0]),
])
def test_weighted_vocabulary(x, weights, expected):
    strings = isinstance(x[0], str)
    col = sf.categorical_vocab_ranked("x", weights="w", dtype="bytes" if strings else "int64",
                                      default="" if strings else 0, name="v")
    raw = {"x": np.array([v.encode() for v in x], object) if strings else np.array(x),
           "w": np.array(weights, np.float32)}
    assert run([col], raw)["v"].tolist() == expected


# beam/vocabulary_integration_test: (rows, options, expected ids), default_value -99
KEY_FN = {
    "_key_fn": ([["a_X_1", "a_X_1", "a_X_2", "b_X_1", "b_X_2"], ["a_X_1", "a_X_1", "a_X_2",
                                                                 "a_X_2"], ["b_X_2"]],
                dict(coverage_top_k=1, frequency_threshold=3),
                [[0, 0, 1, -99, 2], [0, 0, 1, 1], [2]]),
    "_key_fn_and_multi_coverage_top_k": (
        [["a_X_1", "a_X_1", "a_X_2", "b_X_1", "b_X_2"],
         ["a_X_1", "a_X_1", "a_X_2", "a_X_2", "a_X_3"], ["b_X_2"]],
        dict(coverage_top_k=2, frequency_threshold=300),
        [[0, 0, 1, 3, 2], [0, 0, 1, 1, -99], [2]]),
    "_key_fn_and_top_k": (
        [["a_X_1", "a_X_1", "a_X_2", "b_X_1", "b_X_2"], ["a_X_1", "a_X_1", "a_X_2", "a_X_2"],
         ["b_X_2", "b_X_2", "b_X_2", "b_X_2", "c_X_1"]],
        dict(coverage_top_k=1, top_k=2),
        [[1, 1, -99, -99, 0], [1, 1, -99, -99], [0, 0, 0, 0, 2]]),
}


@pytest.mark.parametrize("case", KEY_FN)
def test_vocabulary_coverage_top_k(case):
    rows_in, options, expected = KEY_FN[case]
    col = sf.categorical_vocab_ranked("x", multivalued=True, default_value=-99,
                                      key_fn=lambda s: s.split(b"_X_")[0], name="v", **options)
    out = run([col], {"x": [[v.encode() for v in r] for r in rows_in]})
    assert rows(out["v"]) == expected


# --------------------------------------------------------------------------- Tukey HH, gaussian

_TUKEY_DATA = [516, -871, 737, 415, 584, 583, 152, 479, 576, 409, 591, 844, -16, 508, 669, 617,
               502, 532, 517, 479]


@pytest.mark.parametrize("elementwise,expected", [
    # beam/tukey_hh_params_integration_test.testTukeyHHAnalyzersWithDenseInputs: rows
    # [v, -v_reversed]; (location, scale, hl, hr) per element, or over all values
    (True, [(526.89355, 116.73997, 0.6629082, 0.11148566),
            (-526.89355, 116.73997, 0.11148566, 0.6629082)]),
    (False, [(0.0, 572.277649, 0.0, 0.0)]),
])
def test_tukey_hh_params(elementwise, expected):
    # tf.Transform computes these in float32 (its batch is the whole data set here); shardforge
    # in float64 from the exact L-moments: equal to 1e-5 relative
    a = np.array([[v, -_TUKEY_DATA[-1 - i]] for i, v in enumerate(_TUKEY_DATA)], np.float64)
    keys = np.tile(np.arange(2), 20) if elementwise else np.zeros(40, np.int64)
    an = sf.TukeyParams("values")
    got = np.reshape(an.extract(an.add_batch(an.create(), (a.ravel(), keys))).values, (-1, 5))
    np.testing.assert_allclose(got[:, :4], expected, rtol=1e-5, atol=1e-5)


def test_scale_to_gaussian():
    # beam/tukey_hh_params_integration_test.testGaussianize (gaussianization_int32)
    want = [-0.09304726, -2.24682532, 1.56900163, -0.78244931, 0.48285998, 0.47461339,
            -1.50929952, -0.39008015, 0.41659823, -0.81174337, 0.54027596, 2.11624695,
            -1.72816411, -0.16046759, 1.13320023, 0.74814557, -0.21014091, 0.04373742,
            -0.08454805, -0.39008015]
    col = sf.scale_to_gaussian(sf.Input("x", "int64", default=0), name="g")
    np.testing.assert_allclose(run([col], {"x": np.array(_TUKEY_DATA)})["g"], want,
                               rtol=1e-4, atol=1e-5)


def test_l_moments_match_the_sorted_sample_formula_for_any_batching():
    rng = np.random.default_rng(8)
    x = np.round(rng.lognormal(0, 1, 300), 1)  # ties, so runs of equal values
    values, counts = np.unique(x, return_counts=True)
    xs = np.sort(x)
    n, i = len(xs), np.arange(len(xs))
    b = [np.mean(xs * np.array([math.comb(int(k), r) for k in i]) / math.comb(n - 1, r))
         for r in range(4)]
    want = (b[0], 2 * b[1] - b[0], 6 * b[2] - 6 * b[1] + b[0],
            20 * b[3] - 30 * b[2] + 12 * b[1] - b[0])
    np.testing.assert_allclose(sf.l_moments(values, counts)[:4], want, rtol=1e-12)
    an = sf.TukeyParams("values")
    parts = [an.add_batch(an.create(), (x[a:c], np.zeros(c - a, np.int64)))
             for a, c in ((0, 100), (100, 300))]
    whole = an.extract(an.add_batch(an.create(), (x, np.zeros(300, np.int64))))
    assert an.extract(an.merge(parts[::-1])) == whole


@pytest.mark.parametrize("rows_in,dim,expected", [
    ([[8, 9], [1, 2]], 2, [9, 11]),      # impl_test.testNumericAnalyzersWithNDInputs (elementwise)
    ([4, 5, 6, 7, 1, 2, 3, 4], 1, [32]),  # testNumericAnalyzersWithNDInputs
    ([], 1, [0]),                         # testNumericAnalyzersWithEmptyInputs
])
def test_sum(rows_in, dim, expected):
    an = sf.Sum(dim)
    acc = an.add_batch(an.create(), np.array(rows_in, np.float64))
    assert list(an.extract(acc).values) == expected


def test_sum_is_exact_for_any_batching():
    # float sums lose 1.0 next to 1e16 in any order but one; the exact sum does not
    x = np.array([1e16, 1.0, -1e16, 1.0] * 50)
    an = sf.Sum()
    parts = [an.add_batch(an.create(), x[a:b]) for a, b in ((0, 3), (3, 101), (101, 200))]
    assert an.extract(an.merge(parts[::-1])).values == (100.0,)


def test_compute_and_apply_vocabulary_ranks_with_min_diff_zero_by_default():
    # tft.compute_and_apply_vocabulary's min_diff_from_avg defaults to 0.0 (tft.vocabulary's to
    # the recommended value, 2 here, which zeroes every score of this data): the column ranks
    # goodbye, aaaaa, hello by their mutual information (found by benchmarks/tft_diff.py)
    col = sf.categorical_vocab_ranked("x", labels="label", name="v")
    fs = sf.FeatureSet([col])
    batch, _ = fs.coerce({"x": np.array([v.encode() for v in _HELLO], object),
                          "label": np.array(_HELLO_LABELS)})
    assert fs.fit([batch]).columns["v"]["vocab"].values == [b"goodbye", b"aaaaa", b"hello"]
    an = sf.RankedVocabulary(labels=True)  # tft.vocabulary's default: all scores 0
    lab = np.array(_HELLO_LABELS)
    acc = an.add_batch(an.create(), (np.array([v.encode() for v in _HELLO], object), None, lab,
                                     None, lab))
    assert set(an.scores(acc).values()) == {0.0}
    assert an.extract(acc).values == [b"hello", b"goodbye", b"aaaaa"]
