"""stats.json / stats.html: one statistics engine (the features/ analyzers), per split, for the
inputs and the transformed outputs; oracles are numpy over the inputs and the decoded records."""

import json
import os
import pickle
import re
from xml.etree import ElementTree

import numpy as np
import pytest

from shardforge.pipelines import stats
from tests.pipelines.helpers import IN_MEMORY, read_split

pytestmark = pytest.mark.xdist_group("pipelines-stats")

FEATURES = """
import shardforge.features as sf

FEATURES = sf.FeatureSet(
    [
        sf.numeric("big", dtype="int64", normalize="zscore"),
        sf.numeric("clicks", dtype="int64"),
        sf.categorical_vocab("name", top_k=20, num_oov_buckets=2),
        sf.categorical_hash("note", hash_bucket_size=64),
        sf.text("text", tokenizer="whitespace", top_k=30),
    ],
    label=sf.numeric("y", dtype="int64"),
)
"""
N = 3000
SVG = "{http://www.w3.org/2000/svg}"
MATH = ["$x^{$", "$\\\\frac{", "a_b^c", "$$", "\\\\mathrm{"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from shardforge.pipelines import run_pipeline

    d = tmp_path_factory.mktemp("stats")
    (d / "features.py").write_text(FEATURES)
    rng = np.random.default_rng(7)
    # int64 values exact in the input; in float64, sumsq/n - mean^2 is off by ~10 here
    big = 10**9 + np.round(rng.normal(0.0, 3.0, N)).astype(np.int64)
    clicks = np.floor(np.exp(rng.normal(1.0, 2.0, N))).astype(np.int64)  # heavily skewed
    names = [f"n{int(k)}" for k in rng.zipf(1.5, N) % 400]
    words = [f"w{int(k)}" for k in rng.zipf(1.3, 20 * N) % 500]
    rows = []
    for i in range(N):
        text = " ".join(words[20 * i: 20 * i + 1 + i % 20])
        rows.append({"big": int(big[i]), "clicks": int(clicks[i]), "name": names[i],
                     "note": MATH[i % len(MATH)], "text": text, "y": i % 2})
    with open(d / "rows.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    out = d / "out"
    summary = run_pipeline(str(d / "features.py"), str(d / "rows.jsonl"), str(out),
                           beam_args=IN_MEMORY, eval_fraction=0.3)
    with open(out / "stats.json") as f:
        doc = json.load(f)
    return summary, doc, rows, d


def _entry(doc, split, section, name):
    return next(f for f in doc["by_split"][split][section] if f["name"] == name)


def test_exact_mean_and_std_where_sumsq_cancels(job):
    import shardforge.features as sf

    summary, doc, rows, _ = job
    big = {f["name"]: f for f in doc["features"]}["big"]
    values = np.array([r["big"] for r in rows])
    state = sf.TransformState.load(summary.schema).columns["big"]["stats"]
    # the same analyzer as the transform's state: the two agree exactly
    assert big["mean"] == state.mean and big["std"] == state.std
    exact = np.std(values - 10**9)  # the oracle without the offset: no cancellation
    assert big["std"] == pytest.approx(exact, rel=1e-9)
    assert big["mean"] == pytest.approx(np.mean(values), rel=1e-15)
    naive = np.sqrt(max(np.mean(values.astype(float) ** 2) - np.mean(values) ** 2, 0.0))
    assert abs(naive - exact) > 0.1  # the old formula would have failed this


def test_per_split_inputs_and_outputs_match_the_records(job):
    summary, doc, _, d = job
    import shardforge.features as sf

    state = sf.TransformState.load(summary.schema)
    fs = sf.load_feature_set(str(d / "features.py"))
    vocab = state.columns["name"]["vocab"].values
    for split in ("train", "eval"):
        batch = read_split(summary.output, split, fs.output_spec(state))
        n = summary.splits[split]
        assert _entry(doc, split, "inputs", "big")["rows"] == n
        name = _entry(doc, split, "outputs", "name")
        ids = np.asarray(batch["name"]).ravel()
        assert name["vocab_size"] == len(vocab) == 20 and name["num_buckets"] == 22
        assert name["oov"] == int((ids >= 20).sum())
        assert name["oov_rate"] == pytest.approx((ids >= 20).mean())
        top_id = np.bincount(ids).argmax()
        expected = vocab[top_id].decode() if top_id < 20 else "<oov 0>"
        assert name["top_values"][0] == [expected, int(np.bincount(ids).max())]
        note = _entry(doc, split, "outputs", "note")
        assert note["buckets_used"] == len(np.unique(np.asarray(batch["note"])))
        assert note["bucket_occupancy"] == pytest.approx(note["buckets_used"] / 64)
        text = _entry(doc, split, "outputs", "text")
        lengths = batch["text"].row_lengths()
        assert text["length_mean"] == pytest.approx(lengths.mean())
        assert text["length_max"] == lengths.max()
        tokens = np.bincount(batch["text"].values)
        tok_vocab = state.columns["text"]["vocab"].values
        top = [tok_vocab[i].decode() if i < 30 else f"<oov {i - 30}>"
               for i in np.argsort(-tokens, kind="stable")[:5]]
        assert [v for v, _ in text["top_values"][:5]] == top
        assert text["oov"] == int(tokens[30:].sum())
        z = _entry(doc, split, "outputs", "big")
        assert z["mean"] == pytest.approx(np.asarray(batch["big"], np.float64).mean(),
                                          abs=1e-6)


def test_skewed_column_gets_a_log_histogram_that_counts_every_value(job):
    _, doc, rows, _ = job
    clicks = {f["name"]: f for f in doc["features"]}["clicks"]
    assert clicks["histogram_scale"] == "log"
    assert sum(b["count"] for b in clicks["histogram"]) == N
    assert clicks["quantile_eps"] == 0.0  # few distinct values: the sketch is exact
    assert clicks["quantiles"]["0.5"] == np.quantile([r["clicks"] for r in rows], 0.5,
                                                     method="inverted_cdf")
    assert {f["name"]: f for f in doc["features"]}["big"]["histogram_scale"] == "linear"


def _charts(page: str) -> dict[str, ElementTree.Element]:
    """Card id -> its one chart, parsed as XML (a malformed chart fails here)."""
    cards = re.findall(r'<section class="card[^"]*" id="([^"]+)">(.*?)</section>', page)
    charts = {}
    for card, body in cards:
        svgs = re.findall(r"<svg .*?</svg>", body, re.S)
        assert len(svgs) <= 1, card
        if svgs:
            charts[card] = ElementTree.fromstring(svgs[0])
    return charts


def test_html_overlays_train_and_eval_fits_the_window_and_survives_math_markup(job):
    summary, doc, _, _ = job
    with open(os.path.join(summary.output, "stats.html")) as f:
        page = f.read()
    assert "$x^{$" in page  # the value shown as text
    cards = re.findall(r'<section class="card[^"]*" id="([^"]+)">(.*?)</section>', page)
    assert {c for c, _ in cards} >= {"inputs-big", "inputs-name", "outputs-note", "outputs-text"}
    assert all("<th>train</th><th>eval</th>" in body for _, body in cards)
    # every input and output feature has one chart, the splits overlaid (both in its legend),
    # as wide as a card of the responsive grid, self-contained: no script, no link
    charts = _charts(page)
    features = {f"{section}-{f['name']}" for section in ("inputs", "outputs")
                for f in doc["by_split"]["train"][section]}
    assert set(charts) == features and len(features) >= 10
    assert "minmax(min(100%,440px),1fr)" in page
    for card, svg in charts.items():
        assert int(svg.get("width")) <= 440, card
        texts = {t.text for t in svg.iter(SVG + "text")}
        assert {"train", "eval"} <= texts, card
        assert svg.findall(f".//{SVG}rect[@fill]") or svg.findall(f".//{SVG}polygon"), card
        assert not svg.findall(f".//{SVG}script") and "href" not in ElementTree.tostring(
            svg, encoding="unicode"), card


def test_html_bars_are_the_splits_shares_of_the_decoded_records(job):
    """The label's chart: one bar per split and value, its height and its tooltip the share of
    that value among the split's records (decoded from the shards: the oracle)."""
    summary, doc, _, d = job
    import shardforge.features as sf

    state = sf.TransformState.load(summary.schema)
    fs = sf.load_feature_set(str(d / "features.py"))
    with open(os.path.join(summary.output, "stats.html")) as f:
        svg = _charts(f.read())["inputs-y"]
    bars = {r.find(SVG + "title").text: float(r.get("height"))
            for r in svg.iter(SVG + "rect") if r.find(SVG + "title") is not None}
    shares = {}
    for split in ("train", "eval"):
        y = np.asarray(read_split(summary.output, split, fs.output_spec(state))["y"]).ravel()
        shares |= {(split, v): float(np.mean(y == v)) for v in (0, 1)}
    heights = {(s, v): bars.pop(f"{s} {v}: {share:.2%}") for (s, v), share in shares.items()}
    assert not bars  # nothing else drawn
    per_share = heights[("train", 0)] / shares[("train", 0)]  # pixels per unit of share
    for key, h in heights.items():
        assert h == pytest.approx(per_share * shares[key], abs=0.15)


def test_top_values_stay_bounded():
    acc: dict = {}
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = np.array([f"u{k}".encode() for k in rng.integers(0, 10**9, 2000)],
                          dtype=object)
        stats.add_inputs(acc, {"uid": values}, np.zeros(len(values), dtype=bool))
    entry = acc[("train", "inputs", "uid")]
    assert len(entry["top"]["counts"]) <= stats.VOCAB_CAPACITY
    out = stats.summarize_entry("uid", entry)
    assert "distinct" not in out and out["distinct_over"] == stats.VOCAB_CAPACITY


def test_quantiles_count_every_value_whatever_the_bundles(monkeypatch):
    """Values wait in a buffer before they reach the quantile sketch (``FOLD_VALUES`` at a
    time): accumulated over bundles of any size, some rows eval, some pickled, merged in any
    order, each split's quantiles are numpy's over exactly its values."""
    # several folds of distinct values that still fit the sketch's exact capacity
    monkeypatch.setattr(stats, "FOLD_VALUES", stats.QUANTILE_CAPACITY // 4)
    rng = np.random.default_rng(3)
    n = 3 * stats.FOLD_VALUES + 123
    x = rng.normal(0.0, 1.0, n).astype(np.float32)
    is_eval = rng.random(n) < 0.1
    cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    parts = []
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n]):
        acc = stats.Accumulator()
        acc.add_inputs({"x": x[lo:hi]}, {}, is_eval[lo:hi])
        # a bundle's statistics cross the runner pickled (as sketches, buffers folded in)
        parts.append(pickle.loads(pickle.dumps(acc)) if len(parts) % 2 else acc)
    for merged in (stats.Accumulator.merge(parts), stats.Accumulator.merge(parts[::-1])):
        for split, rows in (("train", ~is_eval), ("eval", is_eval)):
            got = stats.summarize_entry("x", merged.entries[(split, "inputs", "x")])
            assert got["num_values"] == rows.sum()
            want = np.quantile(x[rows].astype(np.float64), stats.QUANTILES,
                               method="inverted_cdf")
            assert list(got["quantiles"].values()) == want.tolist()


def test_a_bundles_statistics_leave_it_bounded_whatever_its_rows():
    """Every bundle's statistics cross the runner, which holds them all: their size must not
    follow the number of distinct values (300k here, an order past the sketch's capacity)."""
    rng = np.random.default_rng(5)
    acc = stats.Accumulator()
    for _ in range(5):
        x = rng.normal(0.0, 1.0, 60_000)
        acc.add_inputs({"x": x}, {}, np.zeros(len(x), dtype=bool))
    assert len(pickle.dumps(acc)) < 1 << 20
