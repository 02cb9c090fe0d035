"""Analyzers: single-pass accuracy, mergeability, determinism, the quantile error bound."""

import pickle
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardforge.features.analyzers import (
    NumericStats,
    Quantiles,
    Vocabulary,
    bucket_boundaries,
    quantiles_at,
)


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
    assert whole["count"] == len(present) and whole["missing"] == len(allv) - len(present)
    if len(present):
        mean, std = exact_mean_std(present)
        assert whole["mean"] == mean
        assert whole["std"] == pytest.approx(std, rel=1e-15, abs=1e-323)
        assert (whole["min"], whole["max"]) == (present.min(), present.max())
        assert str(whole["min"]) != "-0.0" and str(whole["max"]) != "-0.0"


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
    assert out["mean"] == pytest.approx(float(xl.mean()), rel=1e-15)
    assert out["std"] == pytest.approx(float(np.sqrt(np.var(xl))), rel=1e-12)
    assert out["std"] == pytest.approx(np.std(x), rel=1e-9)


def test_numeric_stats_infinities_and_empty():
    an = NumericStats()
    assert an.extract(an.create()) == {"count": 0, "missing": 0, "mean": 0.0, "std": 0.0,
                                       "min": 0.0, "max": 0.0}
    out = an.extract(run(an, [np.array([np.inf, 1.0]), np.array([np.nan])]))
    assert (out["count"], out["missing"], out["mean"], out["max"]) == (2, 1, np.inf, np.inf)
    assert np.isnan(out["std"])
    assert np.isnan(an.extract(an.add_batch(an.create(), np.array([np.inf, -np.inf])))["mean"])


def test_vocabulary_counts_and_tie_order():
    an = Vocabulary()
    chunks = [np.array([b"b", b"a", b"c", b"a"], dtype=object),
              np.array([b"c", b"d", b"b"], dtype=object)]
    out = an.extract(run(an, chunks))
    # a, b, c all have 2: ties broken by value; d last
    assert out["values"] == [b"a", b"b", b"c", b"d"]
    assert out["counts"].tolist() == [2, 2, 2, 1]
    ints = an.extract(run(an, [np.array([5, 3, 5]), np.array([3, 9])]))
    assert ints["values"] == [3, 5, 9] and ints["counts"].tolist() == [2, 2, 1]


def test_vocabulary_same_result_for_any_merge_tree():
    rng = np.random.default_rng(0)
    vals = np.array([f"t{i}".encode() for i in rng.zipf(1.3, 5000) % 700], dtype=object)
    an = Vocabulary()
    a = an.extract(run(an, np.array_split(vals, 7), "linear"))
    b = an.extract(run(an, np.array_split(vals, 13), "pairwise"))
    assert a["values"] == b["values"] and np.array_equal(a["counts"], b["counts"])


def test_approximate_vocabulary_bound_and_heavy_hitters():
    rng = np.random.default_rng(1)
    vals = np.array([f"t{i}".encode() for i in rng.zipf(1.2, 50_000)], dtype=object)
    exact = Vocabulary().extract(run(Vocabulary(), np.array_split(vals, 10)))
    an = Vocabulary(capacity=200)
    approx = an.extract(run(an, np.array_split(vals, 10), "pairwise"))
    assert approx["approximate"] and len(approx["values"]) <= 200
    bound = len(vals) / 201
    assert approx["max_undercount"] <= bound
    true = dict(zip(exact["values"], exact["counts"].tolist()))
    for v, c in zip(approx["values"], approx["counts"].tolist()):
        assert true[v] - approx["max_undercount"] <= c <= true[v]
    # every value more frequent than the bound is kept, so the top 10 agree
    assert approx["values"][:10] == exact["values"][:10]


@pytest.mark.parametrize("dist", ["normal", "lognormal", "ties", "few_values", "sorted_ties"])
def test_quantile_sketch_respects_its_bound(dist):
    rng = np.random.default_rng(2)
    n = 300_000
    x = {"normal": rng.normal(size=n), "lognormal": rng.lognormal(size=n),
         "ties": rng.integers(0, 2000, n).astype(float),
         "few_values": rng.integers(0, 20, n).astype(float),
         # each batch has few distinct values (exact), their merges outgrow 2k: the switch to
         # the sketch happens inside merge
         "sorted_ties": np.sort(rng.integers(0, 3000, n)).astype(float)}[dist]
    an = Quantiles(k=256)
    summary = an.extract(run(an, np.array_split(x, 400 if dist == "sorted_ties" else 23),
                             "pairwise"))
    assert summary["n"] == n and 0 <= summary["eps"] < 0.05
    assert (summary["eps"] == 0) == (dist == "few_values")  # <= 2k distinct values: exact
    xs = np.sort(x)
    qs = np.linspace(0.01, 0.99, 99)
    for q, v in zip(qs, quantiles_at(summary, qs)):
        below = np.searchsorted(xs, v, side="left") / n  # fraction < v
        at_or_below = np.searchsorted(xs, v, side="right") / n
        assert below - summary["eps"] <= q <= at_or_below + summary["eps"], (q, v)


def test_quantiles_deterministic_for_same_order_and_tree():
    x = np.random.default_rng(3).normal(size=100_000)
    an = Quantiles(k=64)
    a = an.extract(run(an, np.array_split(x, 9), "pairwise"))
    b = an.extract(run(an, np.array_split(x, 9), "pairwise"))
    assert np.array_equal(a["values"], b["values"]) and a["eps"] == b["eps"]
    assert np.array_equal(bucket_boundaries(a, 10), bucket_boundaries(b, 10))


def test_quantiles_exact_and_order_free_for_few_distinct_values():
    rng = np.random.default_rng(4)
    x = rng.integers(18, 81, 200_000).astype(float)
    x[:10] = -0.0
    an = Quantiles(k=64)  # 63 distinct values <= 2k = 128
    ref = an.extract(an.add_batch(an.create(), x))
    for seed in range(3):
        r = np.random.default_rng(seed)
        cuts = np.sort(r.choice(len(x), size=30, replace=False))
        out = an.extract(random_tree(an, np.split(r.permutation(x), cuts), r))
        assert out["eps"] == 0 and out["n"] == len(x)
        assert out["values"].tobytes() == ref["values"].tobytes()
        assert np.array_equal(out["weights"], ref["weights"])
    assert bucket_boundaries(ref, 4).tolist() == np.quantile(x, [0.25, 0.5, 0.75],
                                                             method="inverted_cdf").tolist()


def test_quantiles_exact_for_small_inputs():
    x = np.arange(1000, dtype=float)
    an = Quantiles()
    s = an.extract(run(an, [x]))
    assert s["eps"] == 0
    assert bucket_boundaries(s, 4).tolist() == [249.0, 499.0, 749.0]


def test_accumulators_pickle():
    for an, v in [(NumericStats(), np.ones(3)), (Quantiles(), np.ones(3)),
                  (Vocabulary(capacity=5), np.array([b"a"], dtype=object))]:
        acc = an.add_batch(an.create(), v)
        again = pickle.loads(pickle.dumps((an, acc)))
        a, b = again[0].extract(again[1]), an.extract(acc)
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(np.asarray(a[k], dtype=object), np.asarray(b[k], dtype=object))
