"""Validate new data against a reference: anomalies and drift in TensorFlow Data Validation's
terms, computed from two ``stats.json`` documents (the statistics every job writes).

    from shardforge.pipelines.validate import load_stats, validate
    anomalies, drift = validate(load_stats("out-today/"), load_stats("out-yesterday/"))

Pure Python and numpy over the ``stats.json`` format: no Beam, no TensorFlow. Inputs are
compared over all rows (``features``), outputs over one split (``by_split``, train by default).

Anomalies (``Anomaly.kind`` is TFDV's ``AnomalyInfo.Type`` name where TFDV has one):

- ``SCHEMA_MISSING_COLUMN`` / ``SCHEMA_NEW_COLUMN``: a feature only the reference / only the new
  data has; ``UNEXPECTED_DATA_TYPE``: its type (or an output's number of buckets) changed;
- ``FEATURE_TYPE_LOW_FRACTION_PRESENT``: the fraction of rows missing the value rose;
- ``INT_TYPE_SMALL_INT``, ``INT_TYPE_BIG_INT``, ``FLOAT_TYPE_SMALL_FLOAT``,
  ``FLOAT_TYPE_BIG_FLOAT``: input values below / above the reference's range (a share of them
  over ``out_of_range``, or any value of a sign the reference never had);
- ``ENUM_TYPE_UNEXPECTED_STRING_VALUES``: strings the reference never had (its value list is
  complete), a share over ``unexpected`` beyond the share a sample of that size misses
  (Good-Turing: the share of values seen once);
- ``FLOAT_TYPE_HAS_NAN``: NaN in an output that had none;
- ``VOCABULARY_SHRANK``: a learned vocabulary lost more than ``vocabulary_shrink`` of its size;
- ``ERROR_RATE_HIGH``: the share of rows that failed rose by more than ``errors``;
- ``COMPARATOR_L_INFTY_HIGH``: the L-infinity distance between two categorical distributions
  (the largest difference of one value's frequency) is over ``l_infinity``;
- ``COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH``: TFDV's approximate Jensen-Shannon divergence
  (log base 2, so in [0, 1]) between two numeric distributions, or two length distributions of
  strings and variable-length outputs, is over ``jensen_shannon``. Numeric outputs are compared
  only when both sides were transformed with one state (skew): two jobs normalize each with
  its own, so their numbers differ by construction, and the drift shows on the inputs.

A difference is reported only when it is over its threshold *and* more than sampling alone
explains (``NOISE_Z`` standard errors for a rate, ``NOISE_FACTOR`` times the divergence two
samples of one distribution show on average), so a resample of the same data is clean at any
size. Thresholds are :class:`Thresholds`; a feature file may declare per-feature overrides::

    VALIDATION = {"price": {"jensen_shannon": 0.3}, "query": {"skip": True}}
"""

from __future__ import annotations

import json
import math
import os
import re
import runpy
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

FORMAT = "shardforge-anomalies/1"
ANOMALIES_FILE = "anomalies.json"
NOISE_Z = 5.0  # standard errors a rate may move by chance (over every feature and value)
NOISE_FACTOR = 4.0  # times the mean divergence of two samples of one distribution


@dataclass(frozen=True)
class Thresholds:
    """What counts as an anomaly. Rates and distances are fractions in [0, 1].

    >>> Thresholds(jensen_shannon=0.2).l_infinity
    0.1
    """

    l_infinity: float = 0.1  # categorical drift: TFDV's infinity_norm threshold
    jensen_shannon: float = 0.1  # numeric and length drift: TFDV's jensen_shannon_divergence
    presence: float = 0.02  # the missing fraction may rise by this much
    unexpected: float = 0.01  # share of string values outside the reference's values
    out_of_range: float = 0.01  # share of values outside the reference's [min, max]
    vocabulary_shrink: float = 0.2  # a learned vocabulary may lose this fraction of its size
    errors: float = 0.01  # the share of failed rows may rise by this much
    skip: bool = False  # no checks at all for this feature

    def with_overrides(self, overrides: Mapping) -> Thresholds:
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ValueError(f"unknown validation setting(s) {bad}; known: {sorted(known)}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class Anomaly:
    """One finding. ``section``: ``inputs``, ``outputs`` or ``dataset`` (``feature`` empty)."""

    feature: str
    section: str
    kind: str
    description: str
    value: float | None = None
    threshold: float | None = None

    def line(self) -> str:
        where = f"{self.feature} ({self.section[:-1]})" if self.feature else "dataset"
        return f"{where}: {self.kind}: {self.description}"


@dataclass(frozen=True)
class Drift:
    """A distance measured between the two distributions of one feature (clean or not)."""

    feature: str
    section: str
    metric: str  # "l_infinity" or "jensen_shannon"
    of: str  # "values" or "lengths"
    value: float
    threshold: float
    noise: float  # what sampling alone would show: below it nothing is reported


# ---------------------------------------------------------------------------------------------
# Distances (TFDV's definitions)


@dataclass(frozen=True)
class Counts:
    """A categorical distribution as listed: ``counts`` per value, out of ``total`` values.
    ``complete``: every value is listed; else an unlisted value occurs at most ``floor`` times
    (the smallest listed count)."""

    counts: dict
    total: float
    complete: bool

    @property
    def floor(self) -> float:
        return 0.0 if self.complete or not self.counts else float(min(self.counts.values()))


def l_infinity(a: Counts, b: Counts) -> tuple[float, object]:
    """``(max_v |p_a(v) - p_b(v)|, argmax v)``: TFDV's L-infinity distance, each distribution
    normalized by its own total. Where a value is unlisted on one side (a bounded top list),
    the smallest difference its possible counts allow is taken, so a truncated list never
    inflates the distance; with complete lists this is TFDV's number exactly.

    >>> l_infinity(Counts({"x": 6, "y": 4}, 10, True), Counts({"x": 3, "y": 7}, 10, True))
    (0.3, 'x')
    """
    best, arg = 0.0, None
    if not a.total or not b.total:
        return best, arg
    for key in sorted(set(a.counts) | set(b.counts), key=str):
        lo_a, hi_a = _bounds(a, key)
        lo_b, hi_b = _bounds(b, key)
        gap = max(lo_a - hi_b, lo_b - hi_a, 0.0)
        if gap > best:
            best, arg = gap, key
    return best, arg


def _bounds(c: Counts, key) -> tuple[float, float]:
    if key in c.counts:
        p = c.counts[key] / c.total
        return p, p
    return 0.0, c.floor / c.total


def jensen_shannon(h1: list[dict], h2: list[dict], nan1: float = 0.0,
                   nan2: float = 0.0) -> float:
    """TFDV's approximate Jensen-Shannon divergence (log base 2, capped at 1) of two histograms
    (``[{"low", "high", "count"}]``): both are rebucketed on the union of their boundaries,
    spreading a bucket's count uniformly over its width; zero-width buckets are point masses
    compared as such, and NaN counts form a bucket of their own.

    >>> jensen_shannon([{"low": 0, "high": 1, "count": 5}], [{"low": 1, "high": 2, "count": 5}])
    1.0
    """
    p, q = _aligned(h1, h2)
    if nan1 or nan2:
        p, q = np.append(p, nan1), np.append(q, nan2)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return float(min((_kl(p, m) + _kl(q, m)) / 2, 1.0))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = (p > 0) & (q > 0)
    return float(np.sum(p[mask] * np.log2(p[mask] / q[mask])))


def _aligned(h1: list[dict], h2: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both histograms on common buckets: ranges, then point masses."""
    def ranges(h):
        return [b for b in h if b["high"] > b["low"]]

    def points(h):
        out: dict = {}
        for b in h:
            if b["high"] <= b["low"]:
                out[b["low"]] = out.get(b["low"], 0.0) + b["count"]
        return out

    edges = np.unique([e for h in (h1, h2) for b in ranges(h) for e in (b["low"], b["high"])])
    cols = []
    for h in (h1, h2):
        counts = np.zeros(max(len(edges) - 1, 0))
        for b in ranges(h):
            lo, hi = np.searchsorted(edges, [b["low"], b["high"]])
            width = edges[lo + 1:hi + 1] - edges[lo:hi]
            counts[lo:hi] += b["count"] * width / (b["high"] - b["low"])
        cols.append(counts)
    p1, p2 = points(h1), points(h2)
    keys = sorted(set(p1) | set(p2))
    return (np.append(cols[0], [p1.get(k, 0.0) for k in keys]),
            np.append(cols[1], [p2.get(k, 0.0) for k in keys]))


def _js_noise(buckets: int, n1: float, n2: float) -> float:
    """The mean Jensen-Shannon divergence (bits) of two samples of one distribution over
    ``buckets`` buckets: ``(k - 1) / (8 ln 2) * (1/n1 + 1/n2)`` (its chi-square limit)."""
    if not n1 or not n2:
        return 1.0  # no sample: nothing can be told apart from chance
    return max(buckets - 1, 1) / (8 * math.log(2)) * (1 / n1 + 1 / n2)


def _rate_noise(p1: float, n1: float, p2: float, n2: float) -> float:
    """``NOISE_Z`` standard errors of the difference of two sample proportions (pooled)."""
    if not n1 or not n2:
        return 1.0
    p = (p1 * n1 + p2 * n2) / (n1 + n2)
    # a proportion of 0 has no spread: allow one value's worth either way
    var = max(p * (1 - p), 1 / (n1 + n2)) * (1 / n1 + 1 / n2)
    return NOISE_Z * math.sqrt(var)


# ---------------------------------------------------------------------------------------------
# Reading stats.json


def load_stats(path: str) -> dict:
    """A ``stats.json`` document: the file itself, or the one of a job output directory (which is
    verified against its manifest first)."""
    from shardforge.records.manifest import is_job_output, verify_output

    if os.path.isdir(path):
        if is_job_output(path):
            verify_output(path)
        path = os.path.join(path, "stats.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: expected a job output directory or its "
                                "stats.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if "features" not in doc or "by_split" not in doc:
        raise ValueError(f"{path} is not a shardforge stats.json (no features / by_split)")
    return doc


def load_rules(features_path: str) -> dict[str, dict]:
    """The ``VALIDATION`` dict of a feature file (per-feature threshold overrides), or ``{}``."""
    rules = runpy.run_path(features_path).get("VALIDATION", {})
    if not isinstance(rules, Mapping) or not all(isinstance(v, Mapping) for v in rules.values()):
        raise ValueError(f"{features_path}: VALIDATION must map feature names to dicts of "
                         "thresholds, e.g. {'price': {'jensen_shannon': 0.3}}")
    return {str(k): dict(v) for k, v in rules.items()}


def _entries(doc: dict, section: str, split: str) -> dict[str, dict]:
    if section == "inputs":
        return {f["name"]: f for f in doc.get("features", [])}
    return {f["name"]: f for f in doc.get("by_split", {}).get(split, {}).get("outputs", [])}


def _value_counts(entry: dict) -> Counts | None:
    """The categorical distribution of a string input or a categorical output."""
    if entry.get("dtype") == "categorical":
        total = float(entry.get("ids", 0))
        if entry.get("top_values"):
            items, complete = entry["top_values"], len(entry["top_values"]) >= entry.get(
                "buckets_used", 0)
        elif "bucket_counts" in entry:
            items, complete = list(enumerate(entry["bucket_counts"])), True
        else:
            items = entry.get("top_ids", [])
            complete = len(items) >= entry.get("buckets_used", 0)
        return Counts({k: c for k, c in items if c}, total, complete)
    items = entry.get("value_counts", entry.get("top_values"))
    if items is None:
        return None
    counted = float(sum(c for _, c in items))
    complete = "distinct" in entry and len(items) >= entry["distinct"]
    return Counts(dict((k, c) for k, c in items), counted if complete else max(
        counted, float(entry.get("rows", 0))), complete)


def _point_masses(entry: dict) -> list[dict] | None:
    """Values of a number as zero-width buckets when every distinct value is listed (integers
    with few values), else ``None``."""
    vc = entry.get("value_counts")
    if vc is not None and "distinct" in entry and len(vc) >= entry["distinct"]:
        return [{"low": float(v), "high": float(v), "count": c} for v, c in vc]
    return None


def _numeric_histograms(new: dict, ref: dict) -> tuple[list | None, list | None]:
    """Both sides' values as comparable buckets: exact point masses when both list every value,
    else both the jobs' histograms (a reference written before ``value_counts`` has only those)."""
    points = _point_masses(new), _point_masses(ref)
    if points[0] is not None and points[1] is not None:
        return points
    return new.get("histogram"), ref.get("histogram")


# ---------------------------------------------------------------------------------------------
# Validation


class _Checker:
    def __init__(self, thresholds: Thresholds, rules: Mapping[str, Mapping],
                 same_state: bool) -> None:
        self.base, self.rules, self.same_state = thresholds, rules, same_state
        self.anomalies: list[Anomaly] = []
        self.drift: list[Drift] = []

    def thresholds(self, name: str) -> Thresholds:
        return self.base.with_overrides(self.rules.get(name, {}))

    def add(self, name, section, kind, description, value=None, threshold=None) -> None:
        self.anomalies.append(Anomaly(name, section, kind, description, value, threshold))

    def rate_up(self, name, section, kind, what, p_new, n_new, p_ref, n_ref, limit) -> None:
        rise = p_new - p_ref
        if rise > limit and rise > _rate_noise(p_new, n_new, p_ref, n_ref):
            self.add(name, section, kind, f"{what} {p_new:.2%}, reference {p_ref:.2%} "
                     f"(up {rise:.2%} > {limit:.2%})", rise, limit)

    def l_infinity(self, name, section, new: Counts, ref: Counts, t: Thresholds) -> None:
        dist, arg = l_infinity(new, ref)
        p_new, p_ref = (_bounds(new, arg)[0], _bounds(ref, arg)[0]) if arg is not None else (0, 0)
        noise = _rate_noise(p_new, new.total, p_ref, ref.total) if arg is not None else 0.0
        self.drift.append(Drift(name, section, "l_infinity", "values", dist, t.l_infinity, noise))
        if dist > t.l_infinity and dist > noise:
            self.add(name, section, "COMPARATOR_L_INFTY_HIGH",
                     f"L-infinity distance {dist:.3f} > {t.l_infinity:g} (value {arg!r}: "
                     f"{p_new:.2%} of values, reference {p_ref:.2%})", dist, t.l_infinity)

    def jensen_shannon(self, name, section, of, new_h, ref_h, new_n, ref_n, t: Thresholds,
                       nan_new=0.0, nan_ref=0.0) -> None:
        if not new_h or not ref_h:
            return
        dist = jensen_shannon(new_h, ref_h, nan_new, nan_ref)
        buckets = len(_aligned(new_h, ref_h)[0]) + bool(nan_new or nan_ref)
        noise = NOISE_FACTOR * _js_noise(buckets, new_n + nan_new, ref_n + nan_ref)
        self.drift.append(Drift(name, section, "jensen_shannon", of, dist, t.jensen_shannon,
                                noise))
        if dist > t.jensen_shannon and dist > noise:
            what = "" if of == "values" else f" of the {of}"
            self.add(name, section, "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
                     f"Jensen-Shannon divergence{what} {dist:.3f} > {t.jensen_shannon:g}",
                     dist, t.jensen_shannon)

    def range(self, name, section, new: dict, ref: dict, t: Thresholds) -> None:
        if "min" not in new or "min" not in ref or "histogram" not in new:
            return
        kind = "INT" if new["dtype"] == "int64" else "FLOAT"
        n = float(sum(b["count"] for b in new["histogram"])) or 1.0
        n_ref = float(ref.get("num_values", 0)) or 1.0
        # a new value falls past a sample's extreme with probability 1 / (n_ref + 1)
        chance = 1 / (n_ref + 1)
        for side, (limit, outside) in (
                ("SMALL", (ref["min"], lambda b: b["high"] < ref["min"])),
                ("BIG", (ref["max"], lambda b: b["low"] > ref["max"]))):
            share = sum(b["count"] for b in new["histogram"] if outside(b)) / n
            new_sign = side == "SMALL" and ref["min"] >= 0 > new["min"]
            excess = share - chance
            if (excess > t.out_of_range and excess > _rate_noise(share, n, chance, n_ref)
                    ) or new_sign:
                extreme = new["min"] if side == "SMALL" else new["max"]
                why = ("negative values, never seen in the reference" if new_sign
                       else f"{share:.2%} of values")
                self.add(name, section, f"{kind}_TYPE_{side}_{kind}",
                         f"{why} {'below' if side == 'SMALL' else 'above'} the reference's "
                         f"{'min' if side == 'SMALL' else 'max'} {limit:g} (new "
                         f"{'min' if side == 'SMALL' else 'max'} {extreme:g})", share,
                         t.out_of_range)

    def feature(self, name: str, section: str, new: dict, ref: dict) -> None:
        t = self.thresholds(name)
        if t.skip:
            return
        # a learned vocabulary's size sets its number of buckets: VOCABULARY_SHRANK judges it
        learned = "vocab_size" in new and "vocab_size" in ref
        if new.get("dtype") != ref.get("dtype") or (
                not learned and new.get("num_buckets") != ref.get("num_buckets")):
            what = "type" if new.get("dtype") != ref.get("dtype") else "number of buckets"
            old_v, new_v = ((ref.get("dtype"), new.get("dtype")) if what == "type"
                            else (ref.get("num_buckets"), new.get("num_buckets")))
            self.add(name, section, "UNEXPECTED_DATA_TYPE", f"{what} {new_v}, reference {old_v}")
            return
        if section == "inputs" and ref.get("rows") and new.get("rows"):
            self.rate_up(name, section, "FEATURE_TYPE_LOW_FRACTION_PRESENT", "missing in",
                         new.get("missing", 0) / new["rows"], new["rows"],
                         ref.get("missing", 0) / ref["rows"], ref["rows"], t.presence)
        dtype = new.get("dtype")
        if dtype in ("bytes", "categorical"):
            self.categorical(name, section, new, ref, t)
        elif dtype in ("int64", "float32"):
            if section == "inputs":  # an output's range follows its job's learned state
                self.range(name, section, new, ref, t)
            elif not self.same_state:
                # Each job learned its own normalization: the numbers differ by construction
                # (a z-scored default lands elsewhere), and the drift shows on the inputs.
                return
            new_h, ref_h = _numeric_histograms(new, ref)
            self.jensen_shannon(name, section, "values", new_h, ref_h,
                                new.get("num_values", 0), ref.get("num_values", 0), t,
                                new.get("nan", 0), ref.get("nan", 0))
            if section == "outputs" and new.get("nan") and not ref.get("nan"):
                self.add(name, section, "FLOAT_TYPE_HAS_NAN",
                         f"{new['nan']} NaN values; the reference has none", new["nan"])
        if "length_histogram" in new and "length_histogram" in ref:
            self.jensen_shannon(name, section, "lengths", new["length_histogram"],
                                ref["length_histogram"], new.get("length_count", 0),
                                ref.get("length_count", 0), t)

    def categorical(self, name, section, new: dict, ref: dict, t: Thresholds) -> None:
        new_c, ref_c = _value_counts(new), _value_counts(ref)
        if new_c is None or ref_c is None:
            return
        self.l_infinity(name, section, new_c, ref_c, t)
        if section == "inputs" and ref_c.complete and new_c.total:
            unseen = {k: c for k, c in new_c.counts.items() if k not in ref_c.counts}
            share = sum(unseen.values()) / new_c.total
            # A sample does not show every value: Good-Turing's estimate of the share of values
            # it missed is the share of values it saw once.
            expected = sum(c for c in ref_c.counts.values() if c == 1) / ref_c.total
            excess = share - expected
            if excess > t.unexpected and excess > _rate_noise(share, new_c.total, expected,
                                                              ref_c.total):
                examples = ", ".join(repr(k) for k in sorted(unseen, key=lambda k: -unseen[k])
                                     [:3])
                self.add(name, section, "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
                         f"{share:.2%} of values never seen in the reference (e.g. {examples}; "
                         f"{expected:.2%} expected by chance)", excess, t.unexpected)
        if new.get("vocab_size") is not None and ref.get("vocab_size"):
            lost = 1 - new["vocab_size"] / ref["vocab_size"]
            if lost > t.vocabulary_shrink:
                self.add(name, section, "VOCABULARY_SHRANK",
                         f"vocabulary of {new['vocab_size']} values, reference "
                         f"{ref['vocab_size']} ({lost:.0%} fewer)", lost, t.vocabulary_shrink)


def validate(new: dict, ref: dict, thresholds: Thresholds = Thresholds(),
             rules: Mapping[str, Mapping] | None = None, split: str = "train",
             sections: Iterable[str] = ("inputs", "outputs"), ignore: Iterable[str] = (),
             same_state: bool = False) -> tuple[list[Anomaly], list[Drift]]:
    """Anomalies of ``new`` against ``ref`` (two ``stats.json`` documents) and every drift
    distance measured. ``rules``: per-feature overrides of ``thresholds`` (a feature file's
    ``VALIDATION``); ``ignore``: features absent on purpose (a label at serving time);
    ``same_state``: both were transformed with one state (skew), so numeric outputs are
    compared too (between two jobs, each normalized with its own, they are not).

    >>> anomalies, drift = validate(load_stats("new/"), load_stats("ref/"))  # doctest: +SKIP
    >>> [a.line() for a in anomalies]                                         # doctest: +SKIP
    ['price (input): COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH: Jensen-Shannon divergence ...']
    """
    rules = dict(rules or {})
    checker = _Checker(thresholds, rules, same_state)
    for name in rules:
        checker.thresholds(name)  # an unknown setting is an error even for an absent feature
    ignore = set(ignore)
    for section in sections:
        new_e, ref_e = _entries(new, section, split), _entries(ref, section, split)
        for name in sorted(set(new_e) | set(ref_e)):
            if name in ignore or checker.thresholds(name).skip:
                continue
            if name not in new_e:
                checker.add(name, section, "SCHEMA_MISSING_COLUMN",
                            "in the reference, not in the new data")
            elif name not in ref_e:
                checker.add(name, section, "SCHEMA_NEW_COLUMN",
                            "in the new data, not in the reference")
            else:
                checker.feature(name, section, new_e[name], ref_e[name])
    if new.get("rows_read") and ref.get("rows_read"):
        checker.rate_up("", "dataset", "ERROR_RATE_HIGH", "rows failed:",
                        new["errors"] / new["rows_read"], new["rows_read"],
                        ref["errors"] / ref["rows_read"], ref["rows_read"], thresholds.errors)
    return checker.anomalies, checker.drift


# ---------------------------------------------------------------------------------------------
# A TFMD schema as the reference


# a token of the text format, after blanks and comments: a quoted string, a brace or colon, a word
_TOKEN = re.compile(r'\s*(?:#[^\n]*\n\s*)*'
                    r'("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}:]|[^\s{}:"\']+)')


def parse_text_proto(text: str) -> dict:
    """Protobuf text format as nested dicts, every field a list of values (messages are dicts,
    strings unquoted, numbers and enums as written): enough of the format to read a TFMD schema
    without ``tensorflow_metadata``.

    >>> parse_text_proto('feature { name: "a" int_domain { min: 0 max: 9 } }')
    {'feature': [{'name': ['a'], 'int_domain': [{'min': ['0'], 'max': ['9']}]}]}
    """
    tokens = [t for t in _TOKEN.findall(text) if t]
    stack: list[dict] = [{}]
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "}":
            stack.pop()
            i += 1
            continue
        field_name, i = tok, i + 1
        if i < len(tokens) and tokens[i] == ":":
            i += 1
        if i < len(tokens) and tokens[i] == "{":
            child: dict = {}
            stack[-1].setdefault(field_name, []).append(child)
            stack.append(child)
        else:
            value = tokens[i]
            if value[:1] in "\"'":
                value = value[1:-1].encode("latin-1", "backslashreplace").decode(
                    "unicode_escape").encode("latin-1").decode("utf-8")
            stack[-1].setdefault(field_name, []).append(value)
        i += 1
    if len(stack) != 1:
        raise ValueError("unbalanced braces in the schema text")
    return stack[0]


_SCHEMA_TYPES = {"INT": ("int64", "categorical"), "FLOAT": ("float32",), "BYTES": ("bytes",)}


def validate_schema(new: dict, schema_text: str, section: str = "inputs",
                    split: str = "train") -> list[Anomaly]:
    """Anomalies of ``new`` (a ``stats.json`` document) against a TensorFlow Metadata schema in
    text format with declared domains, TFDV's rules: a feature missing or new; its type; presence
    below ``presence.min_fraction``; a value below / above ``int_domain`` / ``float_domain``;
    strings outside ``string_domain`` (inline, or named by ``domain:``) over
    ``1 - distribution_constraints.min_domain_mass`` (default: any). ``section``: whose
    features the schema describes (a job's ``schema_tfmd.pbtxt`` describes its ``outputs``)."""
    schema = parse_text_proto(schema_text)
    domains = {d["name"][0]: set(d.get("value", [])) for d in schema.get("string_domain", [])}
    entries = _entries(new, section, split)
    checker = _Checker(Thresholds(), {}, same_state=False)
    declared = set()
    for feat in schema.get("feature", []):
        name = feat["name"][0]
        declared.add(name)
        e = entries.get(name)
        if e is None:
            checker.add(name, section, "SCHEMA_MISSING_COLUMN", "in the schema, not in the data")
            continue
        kind = feat.get("type", [""])[0]
        if kind in _SCHEMA_TYPES and e.get("dtype") not in _SCHEMA_TYPES[kind]:
            checker.add(name, section, "UNEXPECTED_DATA_TYPE",
                        f"type {e.get('dtype')}, the schema declares {kind}")
            continue
        rows = e.get("rows", 0)
        missing = e.get("missing", e.get("nan", 0))
        for presence in feat.get("presence", []):
            want = float(presence.get("min_fraction", ["0"])[0])
            if rows and (rows - missing) / rows < want:
                checker.add(name, section, "FEATURE_TYPE_LOW_FRACTION_PRESENT",
                            f"present in {(rows - missing) / rows:.2%} of rows, the schema "
                            f"requires {want:.2%}", (rows - missing) / rows, want)
        for key, prefix in (("int_domain", "INT"), ("float_domain", "FLOAT")):
            for dom in feat.get(key, []):
                low, high = e.get("min"), e.get("max")
                if e.get("dtype") == "categorical" and e.get("num_buckets"):
                    low, high = 0, e["num_buckets"] - 1
                if "min" in dom and low is not None and low < float(dom["min"][0]):
                    checker.add(name, section, f"{prefix}_TYPE_SMALL_{prefix}",
                                f"min {low:g} below the schema's min {dom['min'][0]}")
                if "max" in dom and high is not None and high > float(dom["max"][0]):
                    checker.add(name, section, f"{prefix}_TYPE_BIG_{prefix}",
                                f"max {high:g} above the schema's max {dom['max'][0]}")
        values = set()
        for dom in feat.get("string_domain", []):
            values |= set(dom.get("value", []))
        for ref_name in feat.get("domain", []):
            values |= domains.get(ref_name, set())
        counts = _value_counts(e) if (values and e.get("dtype") == "bytes") else None
        if counts is not None and counts.total:
            mass = float(feat.get("distribution_constraints", [{}])[0].get(
                "min_domain_mass", ["1"])[0])
            outside = {k: c for k, c in counts.counts.items() if str(k) not in values}
            share = sum(outside.values()) / counts.total
            if share > 1 - mass:
                examples = ", ".join(repr(k) for k in sorted(outside, key=lambda k: -outside[k])
                                     [:3])
                checker.add(name, section, "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
                            f"{share:.2%} of values outside the schema's domain (e.g. "
                            f"{examples})", share, 1 - mass)
    for name in sorted(set(entries) - declared):
        checker.add(name, section, "SCHEMA_NEW_COLUMN", "in the data, not in the schema")
    return checker.anomalies


# ---------------------------------------------------------------------------------------------
# In a job, before it publishes


class AnomaliesFound(Exception):
    """A job's data has anomalies against its reference (``anomalies``); nothing was published."""

    def __init__(self, anomalies: list[Anomaly], against: str) -> None:
        self.anomalies, self.against = anomalies, against
        super().__init__(f"{len(anomalies)} anomalies against {against}; the output was not "
                         "published (--on-anomaly warn publishes anyway): "
                         + "; ".join(a.line() for a in anomalies))


def schema_section(path: str) -> str:
    """Whose features a schema file describes: a job's ``schema_tfmd.pbtxt`` its outputs, any
    other schema (TFDV's, or written by hand) the raw inputs."""
    from shardforge.interop.tfmd import TFMD_SCHEMA_FILE

    return "outputs" if os.path.basename(path) == TFMD_SCHEMA_FILE else "inputs"


def load_reference(against: str) -> dict | str:
    """The reference: a ``stats.json`` document (a job output or the file), or the text of a
    TFMD schema (a ``.pbtxt`` file)."""
    if not against.endswith(".pbtxt"):
        return load_stats(against)
    if not os.path.isfile(against):
        raise FileNotFoundError(f"schema {against} not found")
    with open(against, encoding="utf-8") as f:
        return f.read()


def check_job(doc: dict, against: str, out_dir: str, features=None) -> list[Anomaly]:
    """Validate a job's ``stats.json`` document against ``against`` (an output, or a schema:
    see :func:`load_reference`) and write ``out_dir/anomalies.json`` (``features``: the job's
    feature file, for its ``VALIDATION`` overrides; a ``FeatureSet`` object declares none)."""
    rules = load_rules(features) if isinstance(features, (str, os.PathLike)) else {}
    ref = load_reference(against)
    if isinstance(ref, str):
        anomalies, drift = validate_schema(doc, ref, schema_section(against)), []
    else:
        anomalies, drift = validate(doc, ref, rules=rules)
    write_report(os.path.join(out_dir, ANOMALIES_FILE),
                 report(anomalies, new=".", against=against, thresholds=Thresholds(),
                        drift=drift, rules=rules))
    return anomalies


# ---------------------------------------------------------------------------------------------
# Reports


def report(anomalies: list[Anomaly], *, new: str, against: str, thresholds: Thresholds,
           drift: list[Drift] = (), rules: Mapping | None = None) -> dict:
    """The ``anomalies.json`` document."""
    return {
        "format": FORMAT, "new": new, "against": against, "clean": not anomalies,
        "thresholds": asdict(thresholds), "rules": dict(rules or {}),
        "anomalies": [asdict(a) for a in anomalies],
        "drift": [asdict(d) for d in drift],
    }


def read_anomalies(output_dir: str) -> list[Anomaly]:
    """The anomalies a validated job recorded in its ``anomalies.json`` (``[]`` if none)."""
    path = os.path.join(output_dir, ANOMALIES_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [Anomaly(**a) for a in json.load(f).get("anomalies", [])]


def write_report(path: str, doc: dict) -> str:
    """Write ``anomalies.json`` atomically; returns ``path``."""
    from shardforge.records.manifest import atomic_write

    atomic_write(path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False).encode())
    return path
