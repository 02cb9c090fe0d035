"""Per-feature statistics as mergeable accumulators over columnar batches.

Two passes, both cheap and both Beam combines: the first gathers count, missing, min/max, moments
and value counts; the second fills equal-width histogram buckets between the min and max the first
found, so the buckets are exact rather than sketched.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections import Counter
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam import pvalue

from shardforge.pipelines import progress
from shardforge.records.spec import Batch, Ragged

TOP_K = 20
HISTOGRAM_BUCKETS = 10
# Values longer than this (whole documents) are summarized by length only, never counted.
MAX_COUNTED_BYTES = 256
# A counter past this many distinct values keeps only its most frequent half (top values
# become approximate for very high-cardinality features; counts stay exact).
MAX_DISTINCT = 200_000


@dataclass
class FeatureAcc:
    dtype: str = ""
    rows: int = 0
    missing: int = 0
    num_values: int = 0
    nan: int = 0
    min: float = math.inf
    max: float = -math.inf
    sum: float = 0.0
    sumsq: float = 0.0
    top: Counter = field(default_factory=Counter)


def _flat_values(col) -> np.ndarray:
    if isinstance(col, Ragged):
        return np.asarray(col.values)
    return np.asarray(col).reshape(len(col), -1).ravel() if len(col) else np.asarray(col)


def _dtype(values: np.ndarray) -> str:
    if values.dtype == object or values.dtype.kind in "SU":
        return "bytes"
    return "float32" if values.dtype.kind == "f" else "int64"


def _count(top: Counter, values: np.ndarray) -> None:
    """Add value counts (strings decoded once per distinct value, not once per row)."""
    if not len(values):
        return
    uniq, counts = np.unique(values, return_counts=True)
    if uniq.dtype == object:
        keys = [u.decode("utf-8", "replace") if isinstance(u, bytes) else str(u) for u in uniq]
    else:
        keys = uniq.tolist()
    top.update(dict(zip(keys, counts.tolist())))


def add_batch(accs: dict[str, FeatureAcc], batch: Batch, missing: dict[str, int]) -> None:
    """Fold one typed input batch (and its per-column missing counts) into ``accs``."""
    for name, col in batch.items():
        acc = accs.setdefault(name, FeatureAcc())
        values = _flat_values(col)
        acc.dtype = acc.dtype or _dtype(values)
        acc.rows += len(col)
        acc.missing += int(missing.get(name, 0))
        if acc.dtype == "bytes":
            lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
            _count(acc.top, values[lengths <= MAX_COUNTED_BYTES])
            values = lengths.astype(np.float64)
        else:
            if acc.dtype == "int64":
                _count(acc.top, values)
            values = values.astype(np.float64)
            nan = np.isnan(values)
            acc.nan += int(nan.sum())
            values = values[~nan]
        acc.num_values += len(values)
        if len(values):
            acc.min = min(acc.min, float(values.min()))
            acc.max = max(acc.max, float(values.max()))
            acc.sum += float(values.sum())
            acc.sumsq += float(np.square(values).sum())
        if len(acc.top) > MAX_DISTINCT:
            acc.top = Counter(dict(acc.top.most_common(MAX_DISTINCT // 2)))


def merge(many: list[dict[str, FeatureAcc]]) -> dict[str, FeatureAcc]:
    out: dict[str, FeatureAcc] = {}
    for accs in many:
        for name, a in accs.items():
            m = out.setdefault(name, FeatureAcc(dtype=a.dtype))
            m.dtype = m.dtype or a.dtype
            m.rows += a.rows
            m.missing += a.missing
            m.num_values += a.num_values
            m.nan += a.nan
            m.min, m.max = min(m.min, a.min), max(m.max, a.max)
            m.sum += a.sum
            m.sumsq += a.sumsq
            m.top.update(a.top)
    return out


def bucket_edges(lo: float, hi: float, buckets: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return np.zeros(0)
    if hi <= lo:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, buckets + 1)


def add_histogram(hists: dict[str, np.ndarray], batch: Batch, bounds: dict) -> None:
    """Count the values of ``batch`` into equal-width buckets between each feature's min/max."""
    for name, col in batch.items():
        if name not in bounds:
            continue
        edges = bucket_edges(*bounds[name])
        if len(edges) < 2:
            continue
        values = _flat_values(col)
        if values.dtype == object:
            values = np.fromiter((len(v) for v in values), dtype=np.float64, count=len(values))
        values = values.astype(np.float64)
        values = values[~np.isnan(values)]
        counts, _ = np.histogram(values, bins=edges)
        hists[name] = hists.get(name, 0) + counts


def summarize(accs: dict[str, FeatureAcc], hists: dict[str, np.ndarray]) -> list[dict]:
    """The ``features`` list of stats.json."""
    out = []
    for name in sorted(accs):
        a = accs[name]
        entry = {"name": name, "dtype": a.dtype, "count": a.rows - a.missing, "missing": a.missing,
                 "num_values": a.num_values}
        if a.num_values:
            mean = a.sum / a.num_values
            var = max(a.sumsq / a.num_values - mean * mean, 0.0)
            entry.update(min=a.min, max=a.max, mean=mean, std=math.sqrt(var))
            if a.dtype == "bytes":
                entry["stats_of"] = "value length in bytes"
        if a.nan:
            entry["nan"] = a.nan
        if a.top:
            ranked = sorted(a.top.items(), key=lambda kv: (-kv[1], str(kv[0])))
            entry["top_values"] = [[v, c] for v, c in ranked[:TOP_K]]
            entry["distinct"] = len(a.top)
        edges = bucket_edges(a.min, a.max)
        if name in hists and len(edges) >= 2:
            entry["histogram"] = [
                {"low": float(lo), "high": float(hi), "count": int(c)}
                for lo, hi, c in zip(edges[:-1], edges[1:], hists[name])
            ]
        out.append(entry)
    return out


def bounds_of(accs: dict[str, FeatureAcc]) -> dict[str, tuple[float, float]]:
    return {n: (a.min, a.max) for n, a in accs.items() if a.num_values}


# ---------------------------------------------------------------------------------------------
# Stats


class _StatsCombineFn(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, rows):
        add_batch(acc, rows.batch, rows.missing)
        return acc

    def merge_accumulators(self, accs):
        return merge(list(accs))

    def extract_output(self, acc):
        return acc


class _HistogramCombineFn(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        rows, bounds = element
        add_histogram(acc, rows.batch, bounds)
        return acc

    def merge_accumulators(self, accs):
        out: dict = {}
        for acc in accs:
            for name, counts in acc.items():
                out[name] = out.get(name, 0) + counts
        return out

    def extract_output(self, acc):
        return acc


def _write_stats(_, accs, hists, sizes, num_read, num_errors, path):
    progress.hook("write_stats")
    doc = {
        "rows_read": num_read,
        "errors": num_errors,
        "splits": {split: {"records": n, "bytes": b} for split, (n, b) in sorted(sizes.items())},
        "features": summarize(accs, hists),
        "stats_of": "typed input features (after parsing, before transforms)",
    }
    from shardforge.pipelines.transforms import _write_bytes

    _write_bytes(path, json.dumps(doc, indent=1, sort_keys=True).encode())
    return doc


class ComputeStats(beam.PTransform):
    """``Rows`` → ``output/stats.json`` (per-feature count, missing, min/max/mean/std, top
    values, histogram buckets, plus rows read, errors and records per split)."""

    def __init__(self, output: str, sizes, num_read, num_errors) -> None:
        super().__init__()
        self.output, self.sizes = output, sizes
        self.num_read, self.num_errors = num_read, num_errors

    def expand(self, rows):
        accs = rows | "Moments" >> beam.CombineGlobally(_StatsCombineFn())
        hists = (
            rows
            | "WithBounds" >> beam.Map(lambda r, a: (r, bounds_of(a)),
                                       pvalue.AsSingleton(accs))
            | "Histograms" >> beam.CombineGlobally(_HistogramCombineFn())
        )
        return (
            rows.pipeline
            | "StatsSeed" >> beam.Create([None])
            | "WriteStats" >> beam.Map(
                _write_stats, pvalue.AsSingleton(accs), pvalue.AsSingleton(hists),
                pvalue.AsSingleton(self.sizes), pvalue.AsSingleton(self.num_read),
                pvalue.AsSingleton(self.num_errors), posixpath.join(self.output, "stats.json"))
        )
