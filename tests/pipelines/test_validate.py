"""Validation against a reference: breaks planted into the click log are flagged on the feature
they broke and nowhere else; resamples of one distribution are clean; the distances are the
ones computed directly (numpy over the generated columns, scipy's Jensen-Shannon)."""

import re

import numpy as np
import pytest

import shardforge.features as sf
from shardforge.examples import clicklog
from shardforge.pipelines.skew import read_rows, stats_doc
from shardforge.pipelines.validate import (
    Counts,
    Thresholds,
    jensen_shannon,
    l_infinity,
    validate,
)
from tests.pipelines.helpers import CLICK_FEATURES

N = 20_000
# the outputs each raw input feeds (a break in an input may show in these, nowhere else)
FEEDS = {
    "price": {"price"},
    "age": {"age_bucketized", "age_bucketized_X_country"},
    "country": {"country", "age_bucketized_X_country", "cell_x_country"},
    "item_id": {"item_id"},
    "query": {"query"},
    "lat": {"km_to_hubs", "cell_x_country", "region"},
    "label": {"label"},
}


def _doc(fs, cols, tmp_path, name):
    path = clicklog.columns_to_csv(str(tmp_path / f"{name}.csv"), cols)
    return stats_doc(fs, read_rows(fs, path))


@pytest.fixture(scope="module")
def fs():
    return sf.load_feature_set(CLICK_FEATURES)


@pytest.fixture(scope="module")
def ref(fs, tmp_path_factory):
    """The reference: columns, stats.json and learned state of 20,000 click-log rows."""
    cols = clicklog.generate_clicklog(N, seed=0)
    path = clicklog.columns_to_csv(str(tmp_path_factory.mktemp("ref") / "ref.csv"), cols)
    rows = read_rows(fs, path)
    state = fs.fit(rows.batches)
    return cols, stats_doc(fs, rows, state), state


def _shifted_country(cols, rng):
    # the same Zipf law over the codes in another order: the popular countries change
    codes = clicklog.country_codes()[::-1]
    cols["country"] = np.char.encode(codes[clicklog._zipf(rng, len(codes), N)]).astype(object)


def _prices_x100(cols, rng):
    cols["price"] = cols["price"] * 100


def _category_flood(cols, rng):
    flood = rng.random(N) < 0.4
    cols["item_id"] = np.where(flood, b"item_bot", cols["item_id"]).astype(object)


def _new_countries(cols, rng):
    # a fifth of the rows carry country codes the reference never had
    new = np.array([b"Z%d" % k for k in rng.integers(0, 50, N)], dtype=object)
    cols["country"] = np.where(rng.random(N) < 0.2, new, cols["country"]).astype(object)


def _all_null(cols, rng):
    cols["price"] = np.full(N, np.nan)


def _vocabulary_cut(cols, rng):
    # the feed truncates its word list to 100 words
    cols["query"] = np.array([re.sub(rb"w(\d+)", lambda m: b"w%d" % (int(m[1]) % 100), q)
                              for q in cols["query"]], dtype=object)


def _short_queries(cols, rng):
    # the feed truncates queries to their first two words
    cols["query"] = np.array([b" ".join(q.split()[:2]) for q in cols["query"]], dtype=object)


BREAKS = {  # break -> (input it breaks, anomaly kinds that must name it)
    "shifted_country_mix": (_shifted_country, "country", {"COMPARATOR_L_INFTY_HIGH"}),
    "prices_x100": (_prices_x100, "price", {"COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
                                            "FLOAT_TYPE_BIG_FLOAT"}),
    "category_flood": (_category_flood, "item_id", {"COMPARATOR_L_INFTY_HIGH"}),
    "new_countries": (_new_countries, "country", {"ENUM_TYPE_UNEXPECTED_STRING_VALUES"}),
    "all_null": (_all_null, "price", {"FEATURE_TYPE_LOW_FRACTION_PRESENT"}),
    "vocabulary_cut": (_vocabulary_cut, "query", {"VOCABULARY_SHRANK"}),
    "short_queries": (_short_queries, "query", {"COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"}),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_planted_break_is_flagged_on_the_feature_it_broke(name, fs, ref, tmp_path):
    plant, broken, kinds = BREAKS[name]
    cols = clicklog.generate_clicklog(N, seed=1)
    plant(cols, np.random.default_rng(5))
    anomalies, _ = validate(_doc(fs, cols, tmp_path, name), ref[1])
    flagged = {(a.section, a.feature) for a in anomalies}
    allowed = {("inputs", broken)} | {("outputs", o) for o in FEEDS[broken]}
    assert flagged and flagged <= allowed, [a.line() for a in anomalies]
    assert kinds <= {a.kind for a in anomalies if a.feature == broken}, [
        a.line() for a in anomalies]


def test_new_and_missing_column(fs, ref, tmp_path):
    import shardforge.examples.click_features as cf

    cols = clicklog.generate_clicklog(N, seed=1)
    cols["discount"] = np.random.default_rng(1).uniform(0, 0.5, N)
    # the example's feature set and one more column
    wider = sf.FeatureSet(
        [cf.price, cf.age, sf.embedding(cf.country, dim=8), sf.embedding(cf.item, dim=16),
         sf.indicator(cf.cross), sf.embedding(cf.query, dim=32, combiner="mean"), cf.to_hubs,
         sf.embedding(cf.cell_x_country, dim=8), sf.embedding(cf.region, dim=4),
         sf.numeric("discount", default=0.0)],
        label=sf.numeric("label", dtype="int64"))
    new = _doc(wider, cols, tmp_path, "wider")
    anomalies, _ = validate(new, ref[1])
    assert {(a.section, a.feature, a.kind) for a in anomalies} == {
        ("inputs", "discount", "SCHEMA_NEW_COLUMN"), ("outputs", "discount", "SCHEMA_NEW_COLUMN")}
    back, _ = validate(ref[1], new)
    assert {(a.section, a.feature, a.kind) for a in back} == {
        ("inputs", "discount", "SCHEMA_MISSING_COLUMN"),
        ("outputs", "discount", "SCHEMA_MISSING_COLUMN")}


@pytest.mark.parametrize("n", [2_000, 20_000])
def test_resamples_of_one_distribution_are_clean(n, fs, ref, tmp_path):
    docs = [_doc(fs, clicklog.generate_clicklog(n, seed=s), tmp_path, f"r{s}")
            for s in (11, 12)]
    for new, against in ((docs[0], docs[1]), (docs[0], ref[1])):
        anomalies, drift = validate(new, against)
        assert anomalies == [], [a.line() for a in anomalies]
        assert drift  # every feature was compared


def test_per_feature_overrides(fs, ref, tmp_path):
    cols = clicklog.generate_clicklog(N, seed=1)
    _prices_x100(cols, None)
    new = _doc(fs, cols, tmp_path, "x100")
    anomalies, _ = validate(new, ref[1], rules={"price": {"skip": True}})
    assert anomalies == []
    loose = {"price": {"jensen_shannon": 1.0, "out_of_range": 1.0}}
    assert validate(new, ref[1], rules=loose)[0] == []
    with pytest.raises(ValueError, match="jensen"):
        validate(new, ref[1], rules={"price": {"jensen": 0.2}})
    strict = Thresholds(l_infinity=0.0001)
    flagged = {a.feature for a in validate(ref[1], ref[1], strict)[0]}
    assert flagged == set()  # identical data: nothing to flag at any threshold


def test_l_infinity_matches_a_direct_computation(ref):
    cols, doc, _ = ref
    other = clicklog.generate_clicklog(N, seed=1)
    _shifted_country(other, np.random.default_rng(5))

    def direct(values):
        keys, counts = np.unique(values.astype(str), return_counts=True)
        return dict(zip(keys, counts / len(values)))

    p, q = direct(cols["country"]), direct(other["country"])
    want = max(abs(p.get(k, 0) - q.get(k, 0)) for k in set(p) | set(q))
    entry = next(f for f in doc["features"] if f["name"] == "country")
    assert len(entry["value_counts"]) == entry["distinct"] == 200  # every country listed
    ref_counts = Counts(dict(entry["value_counts"]), N, True)
    new_counts = Counts({k.decode(): c for k, c in zip(*np.unique(other["country"],
                                                                    return_counts=True))},
                        N, True)
    got, _ = l_infinity(new_counts, ref_counts)
    assert got == pytest.approx(want, abs=1e-12)
    # a truncated list never makes the distance larger than the true one
    top = dict(sorted(new_counts.counts.items(), key=lambda kv: -kv[1])[:20])
    assert l_infinity(Counts(top, N, False), ref_counts)[0] <= want + 1e-12


def jensenshannon2(p, q):
    """The Jensen-Shannon divergence in bits, from its definition."""
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2

    def kl(a, b):
        return sum(x * np.log2(x / y) for x, y in zip(a, b) if x > 0)

    return (kl(p, m) + kl(q, m)) / 2


def test_jensen_shannon_matches_its_definition_on_common_buckets_and_point_masses():
    rng = np.random.default_rng(0)
    edges = np.linspace(0, 10, 11)
    a, _ = np.histogram(rng.normal(5, 1, 5000), edges)
    b, _ = np.histogram(rng.normal(6, 1.5, 5000), edges)

    def hist(counts):
        return [{"low": lo, "high": hi, "count": int(c)}
                for lo, hi, c in zip(edges[:-1], edges[1:], counts)]

    want = jensenshannon2(a, b)
    assert jensen_shannon(hist(a), hist(b)) == pytest.approx(want, rel=1e-9)
    # NaN counts are a bucket of their own, as in TFDV
    want_nan = jensenshannon2(np.append(a, 300), np.append(b, 0))
    assert jensen_shannon(hist(a), hist(b), 300, 0) == pytest.approx(want_nan, rel=1e-9)
    # a bucket split in two (uniform within a bucket) measures nothing against itself
    split = [{"low": 0.0, "high": 0.5, "count": 50}, {"low": 0.5, "high": 1.0, "count": 50}]
    assert jensen_shannon(split, [{"low": 0.0, "high": 1.0, "count": 7}]) == pytest.approx(0)
    points = [{"low": 0.0, "high": 0.0, "count": 3}, {"low": 1.0, "high": 1.0, "count": 1}]
    other = [{"low": 0.0, "high": 0.0, "count": 1}, {"low": 1.0, "high": 1.0, "count": 3}]
    want_pts = jensenshannon2([3, 1], [1, 3])
    assert jensen_shannon(points, other) == pytest.approx(want_pts, rel=1e-9)


def test_logged_values_that_differ_from_the_recomputed_ones(fs, tmp_path):
    import json

    from shardforge.pipelines.skew import value_skew

    n, logged_rows = 300, 100
    cols = clicklog.generate_clicklog(n, seed=4)
    rows = read_rows(fs, clicklog.columns_to_csv(str(tmp_path / "train.csv"), cols))
    state = fs.fit(rows.batches)
    (batch,) = rows.batches
    out = fs.transform(batch, state)
    path = tmp_path / "serving.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            price = cols["price"][i]
            row = {"price": None if np.isnan(price) else price, "age": int(cols["age"][i]),
                   "lat": cols["lat"][i], "lon": cols["lon"][i],
                   **{k: cols[k][i].decode() for k in ("country", "item_id", "query")}}
            if i < logged_rows:  # what the serving system computed, stale in two rows
                row["logged"] = {k: np.asarray(v[i]).tolist() for k, v in out.items()}
                if i in (10, 20):
                    row["logged"]["price"] += 0.5
            f.write(json.dumps(row) + "\n")
    anomalies, compared = value_skew(fs, state, str(path), absent=("label",))
    assert compared == logged_rows
    assert [(a.feature, a.kind) for a in anomalies] == [("price", "FEATURE_SKEW")]
    assert anomalies[0].description.startswith("2 of 100 rows") and "line 11" in \
        anomalies[0].description


RAW_SCHEMA = """
# the click log's raw inputs, domains declared by hand
feature { name: "price" type: FLOAT float_domain { min: 0 } }
feature { name: "age" type: FLOAT presence { min_fraction: 1.0 } float_domain { min: 18 max: 80 } }
feature { name: "country" type: BYTES domain: "country" }
feature { name: "item_id" type: BYTES }
feature { name: "query" type: BYTES }
feature { name: "lat" type: FLOAT float_domain { min: -90 max: 90 } }
feature { name: "lon" type: FLOAT float_domain { min: -180 max: 180 } }
feature { name: "label" type: INT int_domain { min: 0 max: 1 } }
string_domain { name: "country" %s }
"""


def test_against_a_schema_with_declared_domains(fs, ref, tmp_path):
    from shardforge.pipelines.validate import validate_schema

    codes = " ".join(f'value: "{c}"' for c in clicklog.country_codes())
    schema = RAW_SCHEMA % codes
    assert validate_schema(ref[1], schema) == []
    cols = clicklog.generate_clicklog(5000, seed=2)
    cols["price"] = -cols["price"]
    cols["age"] = cols["age"] + 100
    cols["country"] = np.where(np.arange(5000) % 50 == 0, b"XX", cols["country"]).astype(object)
    found = {(a.feature, a.kind) for a in validate_schema(_doc(fs, cols, tmp_path, "s"), schema)}
    assert found == {("price", "FLOAT_TYPE_SMALL_FLOAT"), ("age", "FLOAT_TYPE_BIG_FLOAT"),
                     ("country", "ENUM_TYPE_UNEXPECTED_STRING_VALUES")}
    # a share of unexpected values is allowed when the schema says so
    relaxed = schema.replace('domain: "country"', 'domain: "country" distribution_constraints '
                             '{ min_domain_mass: 0.95 }')
    assert "country" not in {a.feature for a in validate_schema(ref[1], relaxed)}


def test_a_jobs_tfmd_schema_is_read_as_tensorflow_metadata_reads_it(ref):
    from google.protobuf import text_format

    tfmd = pytest.importorskip("tensorflow_metadata.proto.v0.schema_pb2")
    from shardforge.features.state import Schema
    from shardforge.interop.tfmd import tfmd_schema_text
    from shardforge.pipelines.validate import parse_text_proto, validate_schema

    _, doc, state = ref
    text = tfmd_schema_text(Schema(state.proto))
    parsed, oracle = parse_text_proto(text), text_format.Parse(text, tfmd.Schema())
    assert [f["name"][0] for f in parsed["feature"]] == [f.name for f in oracle.feature]
    assert [int(f["int_domain"][0]["max"][0]) for f in parsed["feature"] if "int_domain" in f] \
        == [f.int_domain.max for f in oracle.feature if f.HasField("int_domain")]
    # the job's own outputs satisfy the schema it wrote for them
    assert validate_schema(doc, text, section="outputs") == []
    narrow = text.replace("max: 999\n", "max: 99\n")  # the cross declared with fewer buckets
    assert {(a.feature, a.kind) for a in validate_schema(doc, narrow, section="outputs")} == {
        ("age_bucketized_X_country", "INT_TYPE_BIG_INT")}


def test_a_job_checks_against_a_schema_file_and_records_anomalies_json(fs, ref, tmp_path):
    import json

    from shardforge.pipelines.validate import check_job, read_anomalies

    schema = tmp_path / "raw.pbtxt"
    schema.write_text('feature { name: "price" type: FLOAT float_domain { max: 100 } }')
    found = check_job(ref[1], str(schema), str(tmp_path))
    kinds = {(a.feature, a.kind) for a in found}
    assert ("price", "FLOAT_TYPE_BIG_FLOAT") in kinds and ("age", "SCHEMA_NEW_COLUMN") in kinds
    assert read_anomalies(str(tmp_path)) == found
    with open(tmp_path / "anomalies.json") as f:
        assert json.load(f)["format"] == "shardforge-anomalies/1"


def test_validation_imports_neither_beam_nor_tensorflow():
    import subprocess
    import sys

    code = ("import sys, shardforge.pipelines.validate, shardforge.pipelines.cli_validate, "
            "shardforge.interop.tfmd_stats; "
            "print(sorted(m for m in ('apache_beam', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_type_change_and_error_rate(ref):
    import copy

    doc = ref[1]
    new = copy.deepcopy(doc)
    age = next(f for f in new["features"] if f["name"] == "age")
    age["dtype"] = "bytes"  # the feed sends ages as text
    new["errors"] = new["rows_read"] // 20  # and 5% of its rows no longer parse
    found = {(a.section, a.feature, a.kind) for a in validate(new, doc)[0]}
    assert found == {("inputs", "age", "UNEXPECTED_DATA_TYPE"),
                     ("dataset", "", "ERROR_RATE_HIGH")}


def test_a_reference_written_before_value_counts_compares_on_histograms(ref):
    import copy

    doc = ref[1]
    old = copy.deepcopy(doc)
    for f in old["features"]:
        f.pop("value_counts", None)  # stats.json as earlier versions wrote it
    assert validate(doc, old)[0] == []
    assert validate(old, doc)[0] == []
