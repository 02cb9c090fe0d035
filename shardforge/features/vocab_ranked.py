"""Weighted and label-aware vocabularies: ``tft.vocabulary`` / ``tft.compute_and_apply_vocabulary``
with ``weights=``, ``labels=`` (mutual-information ranking, ``use_adjusted_mutual_info``,
``min_diff_from_avg``) and ``coverage_top_k`` / ``coverage_frequency_threshold`` with ``key_fn``.

>>> ids = categorical_vocab_ranked("query_token", labels="clicked", top_k=1000)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardforge.features.analyzers import EMPTY_VOCAB_PLACEHOLDER, Vocab, tft_order
from shardforge.features.categorical import VocabColumn, _check_oov, _key_dtype, _source
from shardforge.features.column import Column, Input, check_int, check_name
from shardforge.features.hashing import StrBuf
from shardforge.features.strings import to_strbuf
from shardforge.records.spec import Ragged


def recommended_min_diff_from_avg(dataset_size: float) -> int:
    """tf.Transform's default ``min_diff_from_avg``: 2 up to 10,000 rows, rising linearly to 25
    at 1,000,000 rows."""
    return int(min(25, max(2, (dataset_size - 10_000) / 990_000 * 23 + 2)))


def partial_mutual_information(n_ij: float, x_i: float, y_j: float, n: float) -> float:
    """tf.Transform's ``info_theory.calculate_partial_mutual_information``."""
    if n_ij == 0 or x_i == 0 or y_j == 0:
        return 0.0
    return n_ij * ((math.log2(n_ij) + math.log2(n)) - (math.log2(x_i) + math.log2(y_j)))


def partial_expected_mutual_information(n: float, x_i: float, y_j: float) -> float:
    """tf.Transform's ``info_theory.calculate_partial_expected_mutual_information`` (the MI of
    ``x_i`` and ``y_j`` expected by chance, under the hypergeometric distribution)."""
    if x_i == 0 or y_j == 0:
        return 0.0
    coefficient = -math.log2(x_i) - math.log2(y_j) + math.log2(n)
    start = int(round(max(0, x_i + y_j - n)))
    end = int(round(min(x_i, y_j)))
    lf = math.lgamma
    numerator = lf(x_i + 1) + lf(y_j + 1) + lf(n - x_i + 1) + lf(n - y_j + 1)
    denominator = (lf(n + 1) + lf(start + 1) + lf(x_i - start + 1) + lf(y_j - start + 1)
                   + lf(n - x_i - y_j + start + 1))
    total = partial = 0.0
    for n_j in range(start, end + 1):
        p_j = math.exp(numerator - denominator)
        if n_j != end:
            denominator += (math.log(n_j + 1) - math.log(x_i - n_j) - math.log(y_j - n_j)
                            + math.log(n - x_i - y_j + n_j + 1))
        if n_j != 0:
            partial += n_j * (coefficient + math.log2(n_j)) * p_j
        total += p_j
    return partial / total


def mutual_information(x_i: float, n_i: dict, y: dict, n: float, adjusted: bool,
                       min_diff_from_avg: float) -> float:
    """The (adjusted) mutual information of one token with the label, tf.Transform's formula:
    the sum over labels ``j`` of ``n_ij log2(n n_ij / (x_i y_j))`` (not divided by ``n``), with
    ``P(j | token)`` clipped to ``[1e-6, 1 - 1e-6]`` and the labels whose co-occurrence is
    within ``min_diff_from_avg`` of its expectation ``x_i y_j / n`` left out; ``adjusted``
    subtracts the expected mutual information."""
    if n == 0:
        return math.nan
    if round(x_i) == round(n):  # a constant feature carries no information
        return 0.0
    mi = emi = 0.0
    for j, y_j in y.items():
        if y_j == 0:
            continue
        p = min(max(n_i.get(j, 0.0) / x_i, 1e-6), 1 - 1e-6) if x_i else 1e-6
        n_ij = p * x_i
        if abs(x_i * y_j / n - n_ij) < min_diff_from_avg:
            continue
        mi += partial_mutual_information(n_ij, x_i, y_j, n)
        if adjusted:
            emi += partial_expected_mutual_information(n, x_i, y_j)
    return mi - emi


class RankedVocabulary:
    """``tft.vocabulary`` with ``weights`` and/or ``labels``: sees ``(values, weights,
    labels)`` flat and aligned (``weights`` / ``labels`` ``None`` when not used), plus the
    rows' ``(weights, labels)`` for the label totals.

    The score of a value is its summed weight (its count without weights), or with labels its
    mutual information with the label (:func:`mutual_information`). Order: score descending,
    ties by the value's bytes descending (tf.Transform's); ``frequency_threshold`` keeps the
    values whose (weighted) frequency reaches it, then ``top_k``; with ``key_fn``, the
    ``coverage_top_k`` best values of each key (``key_fn(value)``) and those over
    ``coverage_frequency_threshold`` join them. Counts are exact without weights; weighted sums
    are float64 (their last bits can depend on the batching). ``Vocab.counts`` holds the
    frequencies rounded to integers.
    """

    reads_data = True

    def __init__(self, top_k: int | None = None, frequency_threshold: float | None = None,
                 labels: bool = False, use_adjusted_mutual_info: bool = False,
                 min_diff_from_avg: float | None = None, coverage_top_k: int | None = None,
                 coverage_frequency_threshold: float | None = None,
                 key_fn: Callable[[Any], Any] | None = None, dtype: str = "bytes") -> None:
        if (coverage_top_k is not None or coverage_frequency_threshold is not None) != (
                key_fn is not None):
            raise ValueError("coverage_top_k / coverage_frequency_threshold and key_fn go "
                             "together (as in tft.vocabulary)")
        self.top_k, self.frequency_threshold = top_k, frequency_threshold
        self.labels, self.adjusted = labels, use_adjusted_mutual_info
        self.min_diff_from_avg = min_diff_from_avg
        self.coverage_top_k = coverage_top_k
        self.coverage_frequency_threshold = coverage_frequency_threshold
        self.key_fn, self.dtype = key_fn, dtype

    def create(self) -> dict:
        return {"x": {}, "xy": {}, "y": {}, "n": 0.0}

    def add_batch(self, acc: dict, values: tuple) -> dict:
        tokens, weights, labels, row_weights, row_labels = values
        keys = (to_strbuf(tokens).to_objects() if isinstance(tokens, StrBuf)
                or np.asarray(tokens).dtype == object else np.asarray(tokens, np.int64))
        w = np.ones(len(keys)) if weights is None else np.asarray(weights, np.float64)
        uniq, inverse = np.unique(keys, return_inverse=True)
        sums = np.bincount(inverse, weights=w, minlength=len(uniq))
        for k, s in zip(uniq.tolist(), sums.tolist()):
            acc["x"][k] = acc["x"].get(k, 0) + (int(s) if weights is None else s)
        if self.labels:
            lab = np.asarray(labels, np.int64)
            pairs, pinv = np.unique(np.stack([inverse, lab], 1), axis=0, return_inverse=True)
            psums = np.bincount(pinv.ravel(), weights=w, minlength=len(pairs))
            names = uniq.tolist()
            for (t, j), s in zip(pairs.tolist(), psums.tolist()):
                cell = acc["xy"].setdefault(names[t], {})
                cell[j] = cell.get(j, 0.0) + s
            rw = np.ones(len(row_labels)) if row_weights is None else np.asarray(
                row_weights, np.float64)
            rl = np.asarray(row_labels, np.int64)
            for j, s in zip(*_grouped_sum(rl, rw)):
                acc["y"][j] = acc["y"].get(j, 0.0) + s
            acc["n"] += float(rw.sum())
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        for acc in accs:
            for k, s in acc["x"].items():
                out["x"][k] = out["x"].get(k, 0) + s
            for k, cell in acc["xy"].items():
                dst = out["xy"].setdefault(k, {})
                for j, s in cell.items():
                    dst[j] = dst.get(j, 0.0) + s
            for j, s in acc["y"].items():
                out["y"][j] = out["y"].get(j, 0.0) + s
            out["n"] += acc["n"]
        return out

    def frequencies(self, acc: dict) -> dict:
        """Each value's (weighted) frequency; empty strings and strings holding a newline are
        never entries (as in :class:`~shardforge.features.analyzers.Vocabulary`)."""
        if self.dtype != "bytes":
            return dict(acc["x"])
        return {k: v for k, v in acc["x"].items() if k and b"\n" not in k and b"\r" not in k}

    def scores(self, acc: dict) -> dict:
        """Each value's score: its mutual information with the label (with ``labels``), else
        its (weighted) frequency; what tf.Transform writes with ``store_frequency=True``."""
        freq = self.frequencies(acc)
        if not self.labels:
            return freq
        n = acc["n"]
        min_diff = (recommended_min_diff_from_avg(n) if self.min_diff_from_avg is None
                    else self.min_diff_from_avg)
        return {k: mutual_information(x_i, acc["xy"].get(k, {}), acc["y"], n, self.adjusted,
                                      min_diff) for k, x_i in freq.items()}

    def extract(self, acc: dict) -> Vocab:
        freq, score = self.frequencies(acc), self.scores(acc)
        kept = self._cut(score, freq, self.frequency_threshold, self.top_k)
        if self.key_fn is not None:
            by_key: dict[Any, dict] = {}
            for k, s in score.items():
                by_key.setdefault(self.key_fn(k), {})[k] = s
            for part in by_key.values():
                kept |= self._cut(part, freq, self.coverage_frequency_threshold,
                                  self.coverage_top_k)
        items = tft_order([(k, score[k]) for k in kept], self.dtype)
        if not items:
            return Vocab([EMPTY_VOCAB_PLACEHOLDER[self.dtype]], np.ones(1, np.int64), 0,
                         dtype=self.dtype)
        return Vocab([k for k, _ in items], np.asarray([round(freq[k]) for k, _ in items],
                                                       np.int64), len(freq), dtype=self.dtype)

    def _cut(self, score: dict, freq: dict, threshold: float | None, top_k: int | None) -> set:
        items = tft_order(list(score.items()), self.dtype)
        if threshold:
            items = [kv for kv in items if freq[kv[0]] >= threshold]
        return {k for k, _ in (items if top_k is None else items[:top_k])}


def _grouped_sum(keys: np.ndarray, weights: np.ndarray) -> tuple[list, list]:
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq.tolist(), np.bincount(inverse, weights=weights, minlength=len(uniq)).tolist()


@dataclass(frozen=True)
class RankedVocabColumn(VocabColumn):
    """Ids from a :class:`RankedVocabulary` (weights, labels, coverage); otherwise a
    ``categorical_vocab`` column (OOV buckets, ``default_value``). ``weight_input`` and
    ``label_input``: one float weight / one int64 label per row, shared by the row's values."""

    weight_input: Input | None = None
    label_input: Input | None = None
    use_adjusted_mutual_info: bool = False
    min_diff_from_avg: float | None = None
    coverage_top_k: int | None = None
    coverage_frequency_threshold: float | None = None
    key_fn: Callable[[Any], Any] | None = field(default=None, compare=False)
    column_type: str = "categorical_vocab_ranked"

    def inputs(self) -> tuple[Input | Column, ...]:
        return (self.source_input, *(i for i in (self.weight_input, self.label_input) if i))

    def analyzers(self) -> dict[str, Any]:
        return {"vocab": RankedVocabulary(
            self.top_k, self.frequency_threshold, self.label_input is not None,
            self.use_adjusted_mutual_info, self.min_diff_from_avg, self.coverage_top_k,
            self.coverage_frequency_threshold, self.key_fn, self.dtype)}

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        x, rest = values[0], list(values[1:])
        w = rest.pop(0) if self.weight_input is not None else None
        lab = rest.pop(0) if self.label_input is not None else None
        if isinstance(x, Ragged):
            per_value = np.repeat(np.arange(len(x)), x.row_lengths())
            flat = x.values
        else:
            per_value, flat = np.arange(len(x)), x
        return {"vocab": (flat, None if w is None else np.asarray(w)[per_value],
                          None if lab is None else np.asarray(lab)[per_value], w, lab)}


def categorical_vocab_ranked(
    key: str | Column,
    weights: str | Input | None = None,
    labels: str | Input | None = None,
    top_k: int | None = None,
    frequency_threshold: float | None = None,
    num_oov_buckets: int = 0,
    default_value: int = -1,
    use_adjusted_mutual_info: bool = False,
    min_diff_from_avg: float | None = 0.0,
    coverage_top_k: int | None = None,
    coverage_frequency_threshold: float | None = None,
    key_fn: Callable[[Any], Any] | None = None,
    dtype: str = "bytes",
    multivalued: bool = False,
    default: Any = "",
    name: str | None = None,
) -> RankedVocabColumn:
    """``tft.compute_and_apply_vocabulary(x, weights=, labels=, use_adjusted_mutual_info=,
    min_diff_from_avg=, coverage_top_k=, coverage_frequency_threshold=, key_fn=)``.

    ``weights``: a float input (one per row; a name declares it with default 1.0): values
    ranked by summed weight. ``labels``: an int64 input of label ids >= 0 (one per row; a name
    declares it required): values ranked by mutual
    information with the label (``min_diff_from_avg`` defaults to 0.0 as in
    ``tft.compute_and_apply_vocabulary``; ``None``: tf.Transform's recommended value for the
    data size, ``tft.vocabulary``'s default). ``key_fn`` with ``coverage_top_k``: the best
    values of each key are kept even past ``top_k``. A row's values should be distinct when
    ranking by labels (as in tf.Transform, e.g. ``deduplicate(split(...))``).

    >>> ids = categorical_vocab_ranked("token", labels="clicked", top_k=1000)
    """
    if weights is None and labels is None and key_fn is None:
        raise ValueError(f"categorical_vocab_ranked({key!r}) needs weights=, labels= or "
                         "key_fn=; use categorical_vocab otherwise")
    _check_oov(key, num_oov_buckets, default_value)
    if top_k is not None:
        check_int(top_k, f"column {key!r}: top_k", minimum=0)
    dtype = _key_dtype(dtype, key)
    src = _source(key, dtype, multivalued, default, "categorical_vocab_ranked")
    w = weights if weights is None or isinstance(weights, Input) else Input(
        check_name(weights, "weights"), "float32", (), False, 1.0)
    lab = labels if labels is None or isinstance(labels, Input) else Input(
        check_name(labels, "labels"), "int64", (), False, None)
    label = key if isinstance(key, str) else key.name
    return RankedVocabColumn(
        src, name or label, False, None, dtype=dtype, top_k=top_k,
        frequency_threshold=frequency_threshold, num_oov_buckets=num_oov_buckets,
        default_value=default_value, weight_input=w, label_input=lab,
        use_adjusted_mutual_info=use_adjusted_mutual_info, min_diff_from_avg=min_diff_from_avg,
        coverage_top_k=coverage_top_k, coverage_frequency_threshold=coverage_frequency_threshold,
        key_fn=key_fn)
