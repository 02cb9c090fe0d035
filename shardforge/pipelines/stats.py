"""``stats.json``: per-split statistics of the input and output features, from the same
``features/`` analyzers the transforms learn with (one statistics engine).

For every split (train, eval) and every feature:

- numbers (inputs, and float outputs such as z-scores): count, missing, mean/std/min/max from
  :class:`~shardforge.features.analyzers.NumericStats` (exact sums: no ``Σx²/n − mean²``
  cancellation), quantiles and histograms from the :class:`Quantiles` sketch (exact while a
  column has few distinct values; a proven rank-error bound ``eps`` past that);
- integers and strings: top values from a bounded :class:`Vocabulary` (Misra-Gries with
  ``VOCAB_CAPACITY`` entries: memory does not grow with the number of distinct values); strings
  also their length distribution; values longer than ``MAX_COUNTED_BYTES`` (documents) are
  summarized by length only;
- categorical outputs (vocabulary ids, hash and bucket ids): the count per id (a table bounded by
  the schema's bucket count), so vocabulary size and OOV rate, bucket occupancy and top ids are
  exact; text outputs add token-level top values (the vocabulary's tokens) and tokens per row.

A histogram is equal-width, or for a skewed column log-spaced (non-negative values) or
equal-mass, so a click count or a price is not one bar and a sliver.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam import pvalue

from shardforge.features.analyzers import NumericStats, Quantiles, Vocab, Vocabulary
from shardforge.features.hashing import StrBuf
from shardforge.pipelines import progress
from shardforge.pipelines._kernels import gather
from shardforge.pipelines.files import write_file
from shardforge.records.spec import Batch, Ragged

TOP_K = 20
VOCAB_CAPACITY = 1000
QUANTILE_K = 512
# Distinct values (then histogram buckets) a statistics sketch holds. Each bundle's sketches
# cross the runner (the launcher holds them all, decoded and encoded again): at the analyzers'
# 2**18 a bundle's statistics were 43 MB at 1M rows; at 2**14 the reported rank error
# (``quantile_eps``) stays far below a histogram bar's 1/HISTOGRAM_BUCKETS.
QUANTILE_CAPACITY = 1 << 14
HISTOGRAM_BUCKETS = 20
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
# Values longer than this (whole documents) are summarized by length only, never counted.
MAX_COUNTED_BYTES = 256
# Count ids per bucket up to this many buckets (a bounded table); larger spaces get no table.
MAX_ID_TABLE = 1 << 20
SKEW_RATIO = 10.0
# Values buffered per quantile sketch before they are folded in (see _add_numbers).
FOLD_VALUES = 1 << 16
_PENDING = "_pending"

_NUM, _QUANT = NumericStats(), Quantiles(QUANTILE_K, exact_capacity=QUANTILE_CAPACITY)
# Bounded (Misra-Gries) value counts; only the accumulator is used (see _top), so one analyzer
# merges and reads both the bytes and the int64 tables.
_VOCAB = Vocabulary(capacity=VOCAB_CAPACITY)
_VOCAB_INT = Vocabulary(capacity=VOCAB_CAPACITY, dtype="int64")


def _summary(acc: dict) -> dict:
    """A :class:`Quantiles` accumulator as weighted points (see ``Quantiles.points``)."""
    values, weights, eps = _QUANT.points(acc)
    return {"values": values, "weights": weights, "n": int(weights.sum()), "eps": eps}


def quantiles_at(summary: dict, qs: np.ndarray) -> np.ndarray:
    """The smallest summarized value whose cumulative weight reaches ``q * n`` for each ``q``."""
    if summary["n"] == 0:
        return np.zeros(len(qs))
    cum = np.cumsum(summary["weights"])
    idx = np.searchsorted(cum, np.asarray(qs, dtype=np.float64) * summary["n"], side="left")
    return summary["values"][np.minimum(idx, len(cum) - 1)]


# ---------------------------------------------------------------------------------------------
# Accumulators: {(split, "inputs" | "outputs", name): {part: analyzer accumulator}}


def _flat(col) -> np.ndarray:
    if isinstance(col, Ragged):
        return np.asarray(col.values)
    if hasattr(col, "to_objects"):  # a StrBuf string column
        return col.to_objects()
    col = np.asarray(col)
    return col.reshape(-1) if col.ndim else col.reshape(1)


def _lengths(values: np.ndarray) -> np.ndarray:
    return np.fromiter(map(len, values), dtype=np.float64, count=len(values))


def _take(col, rows: np.ndarray):
    if isinstance(col, Ragged):
        return col.take(rows)
    if isinstance(col, StrBuf):
        return _take_strings(col, rows)
    return np.asarray(col)[rows]


def _take_strings(sb: StrBuf, rows: np.ndarray) -> StrBuf:
    """The strings of ``sb`` at ``rows``, without a Python object per string."""
    starts = sb.offsets[rows]
    lengths = sb.offsets[rows + 1] - starts
    return StrBuf(gather(sb.buf, starts, lengths), np.concatenate(([0], np.cumsum(lengths))))


def _as_strings(col):
    """A column of one byte string per row as a ``StrBuf`` (one Arrow conversion for every
    split and statistic), other columns as they are."""
    if isinstance(col, np.ndarray) and col.dtype == object and col.ndim == 1 and (
            not len(col) or isinstance(col[0], bytes)):
        return StrBuf.from_values(col)
    return col


def _add_numbers(entry: dict, key: str, values: np.ndarray) -> None:
    values = np.asarray(values, dtype=np.float64)
    entry[key] = _NUM.add_batch(entry.get(key) or _NUM.create(), values)
    # Quantiles.add_batch passes over the whole sketch (up to its exact capacity), so values
    # wait in a buffer and go in FOLD_VALUES at a time: a bundle's eval rows (a tenth of each
    # chunk) cost what they hold, not a pass over the sketch each chunk.
    entry[key + _PENDING] = entry.get(key + _PENDING, []) + [values[np.isfinite(values)]]
    _fold_full(entry, key)


def _fold_full(entry: dict, key: str) -> None:
    """Fold ``key``'s buffered values into its sketch once there are ``FOLD_VALUES``."""
    if sum(map(len, entry[key + _PENDING])) >= FOLD_VALUES:
        entry[key + "_q"] = _quantiles(entry, key)
        entry[key + _PENDING] = []


def _quantiles(entry: dict, key: str) -> dict:
    """``entry``'s :class:`Quantiles` accumulator of ``key`` with its buffered values folded
    in (a new accumulator; ``entry`` is left as it was)."""
    acc = entry.get(key + "_q") or _QUANT.create()
    pending = entry.get(key + _PENDING)
    return _QUANT.add_batch(acc, np.concatenate(pending)) if pending else acc


def _folded(entry: dict) -> dict:
    """``entry`` with every buffer folded into its sketch (a copy)."""
    out = dict(entry)
    for part in [p for p in entry if p.endswith(_PENDING)]:
        key = part.removesuffix(_PENDING)
        out[key + "_q"], out[part] = _quantiles(entry, key), []
    return out


def _add_input(entry: dict, col) -> None:
    entry["rows"] = entry.get("rows", 0) + len(col)
    if isinstance(col, StrBuf):
        entry["dtype"] = "bytes"
        lengths = np.diff(col.offsets)
        short = _take_strings(col, np.flatnonzero(lengths <= MAX_COUNTED_BYTES))
        entry["top"] = _VOCAB.add_batch(entry.get("top") or _VOCAB.create(), short)
        _add_numbers(entry, "length", lengths)
        return
    values = _flat(col)
    if values.dtype == object or values.dtype.kind in "SU":
        entry["dtype"] = "bytes"
        lengths = _lengths(values)
        short = values[lengths <= MAX_COUNTED_BYTES]
        entry["top"] = _VOCAB.add_batch(entry.get("top") or _VOCAB.create(), short)
        _add_numbers(entry, "length", lengths)
        return
    entry["dtype"] = "float32" if values.dtype.kind == "f" else "int64"
    if values.dtype.kind != "f":
        entry["top"] = _VOCAB_INT.add_batch(entry.get("top") or _VOCAB_INT.create(), values)
    _add_numbers(entry, "num", values)


def _add_output(entry: dict, col, feature) -> None:
    """``feature``: the schema's ``Feature`` of this output."""
    entry["rows"] = entry.get("rows", 0) + len(col)
    values = _flat(col)
    if isinstance(col, Ragged):
        _add_numbers(entry, "length", col.row_lengths())
    if feature is not None and feature.kind == feature.CATEGORICAL and 0 < feature.num_buckets \
            <= MAX_ID_TABLE:
        ids = np.asarray(values, dtype=np.int64)
        entry["dtype"] = "categorical"
        entry["no_id"] = entry.get("no_id", 0) + int((ids < 0).sum())
        table = np.bincount(ids[(ids >= 0) & (ids < feature.num_buckets)],
                            minlength=feature.num_buckets)
        entry["ids"] = table if entry.get("ids") is None else entry["ids"] + table
        return
    if values.dtype == object:
        entry["dtype"] = "bytes"
        _add_numbers(entry, "length", _lengths(values))
        return
    entry["dtype"] = "float32" if values.dtype.kind == "f" else "int64"
    _add_numbers(entry, "num", values)


def add_inputs(acc: dict, batch: Batch, is_eval: np.ndarray) -> dict:
    """Fold a typed input batch into ``acc``, each row under its split."""
    batch = {name: _as_strings(col) for name, col in batch.items()}
    for split, rows in _split_rows(is_eval):
        for name, col in batch.items():
            _add_input(acc.setdefault((split, "inputs", name), {}), _take(col, rows))
    return acc


def add_outputs(acc: dict, out: Batch, is_eval: np.ndarray, features: dict) -> dict:
    """Fold a transformed batch into ``acc``; ``features`` maps output names to the schema's
    ``Feature`` messages."""
    for split, rows in _split_rows(is_eval):
        for name, col in out.items():
            _add_output(acc.setdefault((split, "outputs", name), {}), _take(col, rows),
                        features.get(name))
    return acc


def _split_rows(is_eval: np.ndarray):
    for split, mask in (("train", ~is_eval), ("eval", is_eval)):
        rows = np.flatnonzero(mask)
        if len(rows):
            yield split, rows


_MERGERS = {"num": _NUM, "length": _NUM, "num_q": _QUANT, "length_q": _QUANT, "top": _VOCAB}


def merge(accs) -> dict:
    out: dict = {}
    for acc in accs:
        for key, entry in acc.items():
            into = out.get(key)
            if into is None:
                out[key] = dict(entry)  # parts are replaced, never mutated: inputs stay as given
                continue
            for part, value in entry.items():
                if part not in into or into[part] is None:
                    into[part] = value
                elif part.endswith(_PENDING):
                    into[part] = into[part] + value
                elif part in _MERGERS:
                    into[part] = _MERGERS[part].merge([into[part], value])
                elif part in ("rows", "no_id", "ids"):
                    into[part] = into[part] + value
    for entry in out.values():
        for part in [p for p in entry if p.endswith(_PENDING)]:
            _fold_full(entry, part.removesuffix(_PENDING))
    return out


@dataclass
class Accumulator:
    """Statistics of a part of the job, mergeable in any order: ``entries`` as ``{(split,
    "inputs" | "outputs", name): {part: analyzer accumulator}}``, ``missing`` the rows without
    a value per input. The transform pass folds in each batch it transformed."""

    entries: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)

    def __getstate__(self) -> dict:
        # what leaves the process (a bundle's statistics, to the merge) is sketches: buffered
        # values are folded in (a low-cardinality column's sketch is far smaller than its values)
        return {"entries": {key: _folded(entry) for key, entry in self.entries.items()},
                "missing": self.missing}

    def add_inputs(self, batch: Batch, missing: dict[str, int], is_eval: np.ndarray) -> None:
        """A typed input batch, each row under its split, and its missing counts per input."""
        for name, n in missing.items():
            self.missing[name] = self.missing.get(name, 0) + int(n)
        add_inputs(self.entries, batch, is_eval)

    def add_outputs(self, out: Batch, is_eval: np.ndarray, state) -> None:
        """A transformed batch (``is_eval``: of its rows); ``state`` the analyzed state."""
        add_outputs(self.entries, out, is_eval, {f.name: f for f in state.proto.features})

    @staticmethod
    def merge(accs) -> Accumulator:
        accs = list(accs)
        missing: dict = {}
        for acc in accs:
            for k, v in acc.missing.items():
                missing[k] = missing.get(k, 0) + v
        return Accumulator(merge([a.entries for a in accs]), missing)


# ---------------------------------------------------------------------------------------------
# Summaries (the entries of stats.json)


def _text(value) -> str | int | float:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value.item() if isinstance(value, np.generic) else value


def histogram(summary: dict, lo: float, hi: float,
              buckets: int = HISTOGRAM_BUCKETS) -> tuple[str, list[dict]]:
    """``(scale, buckets)`` from a quantile summary. A skewed column (one tail over
    ``SKEW_RATIO`` times longer than the other, measured from the median) gets log-spaced
    buckets when it is non-negative, else equal-mass ("quantile") buckets; others equal-width.
    Counts are the sketch's weights (exact while the sketch is exact)."""
    values, weights = summary["values"], summary["weights"]
    if not len(values) or not (math.isfinite(lo) and math.isfinite(hi)):
        return "linear", []
    if hi <= lo:
        return "linear", [{"low": lo, "high": hi, "count": int(weights.sum())}]
    median = float(quantiles_at(summary, np.array([0.5]))[0])
    upper, lower = hi - median, median - lo
    skewed = upper > SKEW_RATIO * lower or lower > SKEW_RATIO * upper
    positive = values[values > 0]
    if skewed and lo >= 0 and len(positive) and hi > positive.min():
        scale, first = "log", float(positive.min())
        edges = np.geomspace(first, hi, buckets + 1)
        if lo < first:  # zeros (and anything below the smallest positive) get their own bucket
            edges = np.concatenate([[lo], edges])
    elif skewed:
        scale = "quantile"
        edges = np.unique(np.concatenate(
            [[lo], quantiles_at(summary, np.arange(1, buckets) / buckets), [hi]]))
    else:
        scale, edges = "linear", np.linspace(lo, hi, buckets + 1)
    edges[-1] = np.nextafter(hi, np.inf)  # the maximum belongs in the last bucket
    counts, _ = np.histogram(values, bins=edges, weights=weights)
    edges[-1] = hi
    return scale, [{"low": float(a), "high": float(b), "count": int(round(c))}
                   for a, b, c in zip(edges[:-1], edges[1:], counts)]


def _numbers(entry: dict, key: str, prefix: str = "") -> dict:
    st = _NUM.extract(entry[key])
    d = {f"{prefix}count" if prefix else "num_values": st.count}
    if not st.count:
        return d
    d.update({f"{prefix}{k}": getattr(st, k) for k in ("min", "max", "mean", "std")})
    summary = _summary(_quantiles(entry, key))
    if summary["n"]:
        qs = quantiles_at(summary, np.asarray(QUANTILES))
        d[f"{prefix}quantiles"] = {f"{q:g}": float(v) for q, v in zip(QUANTILES, qs)}
        d[f"{prefix}quantile_eps"] = summary["eps"]
        scale, buckets = histogram(summary, st.min, st.max)
        d[f"{prefix}histogram"], d[f"{prefix}histogram_scale"] = buckets, scale
    if st.missing:
        d["nan"] = st.missing
    return d


def _top(entry: dict) -> dict:
    items, undercount = _VOCAB.counted(entry["top"])
    d = {"top_values": [[_text(k), int(c)] for k, c in items[:TOP_K]],
         # all of them (at most VOCAB_CAPACITY): the rank histogram drift is measured on
         "value_counts": [[_text(k), int(c)] for k, c in items]}
    if undercount:
        d.update(top_values_max_undercount=undercount, distinct_over=VOCAB_CAPACITY)
    else:
        d["distinct"] = len(items)
    return d


def _vocab(feature, state) -> Vocab | None:
    """The learned or given vocabulary behind a categorical output, if it has one."""
    if feature is None or state is None:
        return None
    for key in (feature.name, feature.source):
        for st in state.columns.get(key, {}).values():
            if isinstance(st, Vocab) and len(st):
                return st
    return None


def summarize_entry(name: str, entry: dict, feature=None, state=None) -> dict:
    """One feature of one split as a JSON-able dict."""
    d: dict = {"name": name, "dtype": entry.get("dtype", ""), "rows": entry.get("rows", 0)}
    if "num" in entry:
        d.update(_numbers(entry, "num"))
    if "length" in entry:
        d.update(_numbers(entry, "length", "length_"))
        if d["dtype"] == "bytes":
            d["stats_of"] = "value length in bytes"
    if "top" in entry:
        d.update(_top(entry))
    ids = entry.get("ids")
    if ids is not None:
        total = int(ids.sum())
        d.update(num_buckets=len(ids), ids=total, no_id=entry.get("no_id", 0),
                 buckets_used=int((ids > 0).sum()),
                 bucket_occupancy=float((ids > 0).mean()) if len(ids) else 0.0)
        order = np.lexsort((np.arange(len(ids)), -ids))[:TOP_K]
        vocab = _vocab(feature, state)
        d["top_ids"] = [[int(i), int(ids[i])] for i in order if ids[i]]
        if vocab is not None:
            size = len(vocab)
            oov = int(ids[size:].sum())
            d.update(vocab_size=size, oov=oov, oov_rate=oov / total if total else 0.0)
            d["top_values"] = [
                [_text(vocab.values[i]) if i < size else f"<oov {i - size}>", int(ids[i])]
                for i in order if ids[i]]
        if len(ids) <= HISTOGRAM_BUCKETS * 5:
            d["bucket_counts"] = ids.tolist()
    if feature is not None:
        d["column_type"] = feature.column_type
    return d


def build_doc(acc: dict, *, rows_read: int, errors: int, sizes: dict, missing: dict,
              state=None) -> dict:
    """The whole of ``stats.json``."""
    features = {f.name: f for f in state.proto.features} if state is not None else {}
    by_split: dict = {}
    for (split, section, name) in sorted(acc):
        entry = summarize_entry(name, acc[(split, section, name)],
                                features.get(name) if section == "outputs" else None, state)
        by_split.setdefault(split, {"inputs": [], "outputs": []})[section].append(entry)
    # all rows of the inputs, for the terminal table: the splits' accumulators merged
    merged: dict = {}
    for (_, section, name), entry in acc.items():
        if section == "inputs":
            merged = merge([merged, {name: entry}])
    inputs = []
    for name in sorted(merged):
        e = summarize_entry(name, merged[name])
        miss = int(missing.get(name, 0)) or int(e.get("nan", 0))
        e.update(missing=miss, count=e["rows"] - miss)
        if "histogram" not in e and "length_histogram" in e:
            e["histogram"] = e["length_histogram"]
            for k in ("min", "max", "mean", "std"):
                e[k] = e["length_" + k]
        inputs.append(e)
    return {
        "rows_read": rows_read, "errors": errors,
        "splits": {s: {"records": n, "bytes": b} for s, (n, b) in sorted(sizes.items())},
        "features": inputs,
        "by_split": by_split,
        "stats_of": "features: typed inputs of all rows; by_split: inputs and transformed "
                    "outputs per split",
    }


# ---------------------------------------------------------------------------------------------
# The Beam step


class _MergeStats(beam.CombineFn):
    def create_accumulator(self):
        return Accumulator()

    def add_input(self, acc, element):
        return Accumulator.merge([acc, element])

    def merge_accumulators(self, accs):
        return Accumulator.merge(accs)

    def extract_output(self, acc):
        return acc


def _write_stats(_, acc, state, sizes, num_read, num_errors, path):
    progress.hook("write_stats")
    doc = build_doc(acc.entries, rows_read=num_read, errors=num_errors, sizes=sizes,
                    missing=acc.missing, state=state)
    write_file(path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=True).encode())
    return doc


class ComputeStats(beam.PTransform):
    """:class:`Accumulator` per bundle (from the transform pass) → ``output/stats.json``: per-split
    statistics of inputs and transformed outputs (see the module docstring), plus rows read,
    errors and records per split."""

    def __init__(self, output: str, sizes, num_read, num_errors, *, state) -> None:
        super().__init__()
        self.output, self.sizes = output, sizes
        self.num_read, self.num_errors, self.state = num_read, num_errors, state

    def expand(self, accs):
        merged = accs | "Merge" >> beam.CombineGlobally(_MergeStats())
        return (
            accs.pipeline
            | "StatsSeed" >> beam.Create([None])
            | "WriteStats" >> beam.Map(
                _write_stats, pvalue.AsSingleton(merged), pvalue.AsSingleton(self.state),
                pvalue.AsSingleton(self.sizes), pvalue.AsSingleton(self.num_read),
                pvalue.AsSingleton(self.num_errors), posixpath.join(self.output, "stats.json"))
        )
