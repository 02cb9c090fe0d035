"""Analyzers: single-pass accuracy, mergeability, determinism, the quantile error bound."""

import pickle
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardforge.features.analyzers import NumericStats, Quantiles, Stats, Vocabulary


def run(an, chunks, tree="linear"):
    """Feed chunks to separate accumulators and merge them (linear or pairwise tree)."""
    accs = [an.add_batch(an.create(), c) for c in chunks]
    if tree == "linear":
        return an.merge(accs)
    while len(accs) > 1:
        accs = [an.merge(accs[i : i + 2]) for i in range(0, len(accs), 2)]
    return accs[0]


def exact_mean_std(x: np.ndarray) -> tuple[float, float]:
    """Oracle in rational arithmetic: the correctly rounded mean, the std to 50 digits."""
    fr = [Fraction(v) for v in x.tolist()]
    mean = sum(fr) / len(fr)
    var = sum((f - mean) ** 2 for f in fr) / len(fr)
    with localcontext() as ctx:
        ctx.prec = 50
        std = (Decimal(var.numerator) / Decimal(var.denominator)).sqrt()
    return float(mean), float(std)


def random_tree(an, chunks, rng):
    """Accumulate shuffled chunks (through pickle, as Beam does) and merge them in a random tree."""
    accs = [pickle.loads(pickle.dumps(an.add_batch(an.create(), c))) for c in chunks]
    accs = [accs[i] for i in rng.permutation(len(accs))]
    while len(accs) > 1:
        i, k = int(rng.integers(len(accs))), int(rng.integers(2, 4))
        accs[i : i + k] = [an.merge(accs[i : i + k])]
    return accs[0]


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                          st.floats(-1e6, 1e6), st.just(float("nan"))), max_size=40),
       st.integers(0, 2**32 - 1))
def test_numeric_stats_exact_and_independent_of_batching(values, seed):
    # Full float64 range: subnormals, +-0.0, values near the overflow threshold.
    allv = np.array(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    an = NumericStats()
    whole = an.extract(an.add_batch(an.create(), allv))
    cuts = np.sort(rng.integers(0, len(allv) + 1, size=int(rng.integers(0, 6))))
    assert an.extract(random_tree(an, np.split(rng.permutation(allv), cuts), rng)) == whole
    present = allv[~np.isnan(allv)]
    assert whole.count == len(present) and whole.missing == len(allv) - len(present)
    if len(present):
        mean, std = exact_mean_std(present)
        assert whole.mean == mean
        assert whole.std == pytest.approx(std, rel=1e-15, abs=1e-323)
        assert (whole.min, whole.max) == (present.min(), present.max())
        assert str(whole.min) != "-0.0" and str(whole.max) != "-0.0"


def test_numeric_stats_identical_for_any_batching_order_and_tree():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.lognormal(3, 2, 60_000), 1e6 + rng.normal(size=60_000),
                        -rng.exponential(1e-300, 500), np.zeros(3000), -np.zeros(3000),
                        [5e-324, np.nan, 1e300]])
    an = NumericStats()
    ref = an.extract(an.add_batch(an.create(), x))
    for seed in range(5):
        r = np.random.default_rng(seed)
        cuts = np.sort(r.choice(len(x), size=int(r.integers(1, 60)), replace=False))
        assert an.extract(random_tree(an, np.split(r.permutation(x), cuts), r)) == ref


@pytest.mark.parametrize("offset", [1e6, 1e9])
def test_numeric_stats_no_cancellation_for_large_offsets(offset):
    # sum(x**2) - sum(x)**2 / n in float64 loses every digit of the std here; exact sums do not.
    x = offset + np.random.default_rng(0).normal(0, 1, 100_000)
    an = NumericStats()
    out = an.extract(run(an, np.array_split(x, 37), tree="pairwise"))
    xl = x.astype(np.longdouble)
    assert out.mean == pytest.approx(float(xl.mean()), rel=1e-15)
    assert out.std == pytest.approx(float(np.sqrt(np.var(xl))), rel=1e-12)
    assert out.std == pytest.approx(np.std(x), rel=1e-9)


def test_numeric_stats_infinities_and_empty():
    an = NumericStats()
    # min and max of no values are tf.Transform's: +inf and -inf
    assert an.extract(an.create()) == Stats(0, 0, 0.0, 0.0, np.inf, -np.inf)
    out = an.extract(run(an, [np.array([np.inf, 1.0]), np.array([np.nan])]))
    assert (out.count, out.missing, out.mean, out.max) == (2, 1, np.inf, np.inf)
    assert np.isnan(out.std)
    assert np.isnan(an.extract(an.add_batch(an.create(), np.array([np.inf, -np.inf]))).mean)


def obj(values):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def test_vocabulary_order_is_tf_transforms():
    # count descending, ties by the value's bytes descending (tft.vocabulary's documented order)
    an = Vocabulary()
    chunks = [obj([b"b", b"a", b"c", b"a"]), obj([b"c", b"d", b"b", b"ab"])]
    out = an.extract(run(an, chunks))
    assert out.values == [b"c", b"b", b"a", b"d", b"ab"]
    assert out.counts.tolist() == [2, 2, 2, 1, 1]
    # ints tie by their decimal strings: "9" > "5" > "10" > "-3"
    ints = Vocabulary(dtype="int64")
    out = ints.extract(run(ints, [np.array([5, 10, 9, -3]), np.array([7, 7])]))
    assert out.values == [7, 9, 5, 10, -3]


def test_vocabulary_threshold_then_top_k_and_no_empty_or_newline_entries():
    vals = obj([b"a"] * 5 + [b"b"] * 3 + [b"c"] * 3 + [b"d"] * 2 + [b""] * 9 + [b"x\ny"] * 9)
    assert Vocabulary(frequency_threshold=3).extract(
        run(Vocabulary(), [vals])).values == [b"a", b"c", b"b"]
    an = Vocabulary(top_k=2, frequency_threshold=2)
    out = an.extract(an.add_batch(an.create(), vals))
    assert out.values == [b"a", b"c"] and out.distinct == 4
    assert Vocabulary(top_k=10).extract(run(Vocabulary(), [vals])).values == [
        b"a", b"c", b"b", b"d"]


def test_vocabulary_same_result_for_any_merge_tree():
    rng = np.random.default_rng(0)
    vals = obj([f"t{i}".encode() for i in rng.zipf(1.3, 5000) % 700])
    an = Vocabulary()
    a = an.extract(run(an, np.array_split(vals, 7), "linear"))
    b = an.extract(run(an, np.array_split(vals, 13), "pairwise"))
    assert a == b


def test_approximate_vocabulary_heavy_hitters():
    rng = np.random.default_rng(1)
    vals = obj([f"t{i}".encode() for i in rng.zipf(1.2, 50_000)])
    exact = Vocabulary().extract(run(Vocabulary(), np.array_split(vals, 10)))
    an = Vocabulary(capacity=200)
    approx = an.extract(run(an, np.array_split(vals, 10), "pairwise"))
    assert approx.approximate and len(approx) <= 200
    true = dict(zip(exact.values, exact.counts.tolist()))
    bound = len(vals) / 201
    for v, c in zip(approx.values, approx.counts.tolist()):
        assert true[v] - bound <= c <= true[v]
    assert approx.values[:10] == exact.values[:10]


def misra_gries(batches, capacity: int) -> dict:
    """The bounded vocabulary's summary, one Python dict update per value (the reference)."""
    table, total, decrement = {}, 0, 0
    for batch in batches:
        for v in batch.tolist():
            table[v] = table.get(v, 0) + 1
            total += 1
        if len(table) > capacity:
            cut = sorted(table.values(), reverse=True)[capacity]
            table = {k: c - cut for k, c in table.items() if c > cut}
            decrement += cut
    return {"counts": table, "total": total, "decrement": decrement}


@pytest.mark.parametrize("dtype", ["bytes", "int64"])
def test_bounded_vocabulary_is_misra_gries_per_batch(dtype):
    """A batch's values that cannot outlive the pruning never become Python objects; the
    summary is still exactly Misra-Gries's, count for count."""
    rng = np.random.default_rng(5)
    ints = rng.zipf(1.1, 40_000) % 5000
    vals = ints if dtype == "int64" else obj([f"u{i}".encode() for i in ints])
    batches = np.array_split(vals, np.sort(rng.choice(np.arange(1, len(vals)), 30, False)))
    an = Vocabulary(capacity=50, dtype=dtype)
    acc = an.create()
    for b in batches:
        acc = an.add_batch(acc, b)
    want = misra_gries(batches, 50)
    assert acc == want and want["decrement"] > 0


def exact_boundaries(x: np.ndarray, num_buckets: int) -> list[float]:
    """tf.Transform's boundaries when its sketch is exact: value at rank floor(i * n / k)."""
    xs = np.sort(x)
    ranks = [(i * len(xs)) // num_buckets for i in range(1, num_buckets)]
    return [float(np.float32(xs[r])) for r in ranks]


@pytest.mark.parametrize("n, num_buckets", [(10, 4), (7, 2), (8, 2), (49, 49), (1000, 10)])
def test_quantiles_exact_rule(n, num_buckets):
    an = Quantiles(num_buckets)
    x = np.arange(n, dtype=float)
    assert list(an.extract(an.add_batch(an.create(), x)).values) == exact_boundaries(
        x, num_buckets)


@pytest.mark.parametrize("capacity", [1 << 18, 500])  # exact, and the histogram sketch
def test_quantiles_identical_for_any_order_batching_and_tree(capacity):
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(40, 10, 30_000), rng.integers(18, 81, 20_000),
                        np.zeros(3000), -np.zeros(10), -rng.lognormal(0, 3, 2000)])
    an = Quantiles(20, exact_capacity=capacity)
    ref = an.extract(an.add_batch(an.create(), x))
    for seed in range(4):
        r = np.random.default_rng(seed)
        cuts = np.sort(r.choice(len(x), size=int(r.integers(1, 40)), replace=False))
        assert an.extract(random_tree(an, np.split(r.permutation(x), cuts), r)) == ref
    assert (ref.rank_error == 0) == (capacity > len(x))


@pytest.mark.parametrize("dist", ["normal", "lognormal", "uniform_coords"])
def test_quantile_sketch_within_its_bound_and_near_exact(dist):
    rng = np.random.default_rng(2)
    n = 200_000
    x = {"normal": rng.normal(size=n), "lognormal": rng.lognormal(size=n),
         "uniform_coords": rng.uniform(-90, 90, n)}[dist]
    an = Quantiles(20, exact_capacity=1 << 14)  # 200k distinct values: the histogram
    got = np.asarray(an.extract(run(an, np.array_split(x, 23), "pairwise")).values)
    bound = an.extract(run(an, np.array_split(x, 23), "pairwise")).rank_error
    exact = np.asarray(exact_boundaries(x, 20))
    xs = np.sort(x)
    target = (np.arange(1, 20) * n) // 20
    rank = np.searchsorted(xs, got.astype(np.float64), side="left")
    assert np.all(np.abs(rank - target) <= bound * n + 1)
    assert np.allclose(got, exact, rtol=2**-8, atol=0)  # 16k buckets: ~9 bits of mantissa
    # rows bucketized differently from the exact boundaries: far below tf.Transform's 0.11%
    ours = np.searchsorted(got.astype(np.float32), x.astype(np.float32), side="right")
    ref = np.searchsorted(exact.astype(np.float32), x.astype(np.float32), side="right")
    assert np.mean(ours != ref) < 1e-3


def test_accumulators_pickle():
    for an, v in [(NumericStats(), np.ones(3)), (Quantiles(4), np.ones(3)),
                  (Vocabulary(capacity=5), obj([b"a"]))]:
        acc = an.add_batch(an.create(), v)
        again = pickle.loads(pickle.dumps((an, acc)))
        assert again[0].extract(again[1]) == an.extract(acc)


def test_quantile_histogram_resolution_adapts_to_a_tight_cluster():
    # 400k distinct float64 values within 1e6 +- 5: a fixed 14-bit-mantissa histogram put them
    # all in one 61-wide bucket (rank error 0.27); the histogram's resolution is the finest
    # that fits the capacity, here buckets of a few values, whatever the batching.
    rng = np.random.default_rng(3)
    x = 1e6 + rng.normal(0, 1, 400_000)
    an = Quantiles(10)
    got = an.extract(run(an, np.array_split(x, 7), "pairwise"))
    assert got == an.extract(an.add_batch(an.create(), rng.permutation(x)))
    xs = np.sort(x)
    rank = np.searchsorted(xs, np.asarray(got.values, np.float64)) / len(x)
    # float32 boundaries are 1/16 apart near 1e6: that, not the sketch, is the rank error left
    exact = np.asarray(exact_boundaries(x, 10), np.float32)
    assert np.array_equal(np.asarray(got.values, np.float32), exact)
    assert got.rank_error < 1e-4 and np.abs(rank - np.arange(1, 10) / 10).max() < 0.03
    acc = an.add_batch(an.create(), x)
    assert len(acc["hist"][1]) <= an.exact_capacity  # bounded memory
