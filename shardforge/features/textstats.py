"""Bag-of-words statistics of token columns: ``tft.tfidf``, ``tft.bag_of_words``,
``tft.word_count``, ``tft.deduplicate_tensor_per_row``, ``tft.segment_indices``.

A tf-idf feature is two aligned varlen columns, as ``tft.tfidf`` returns two sparse tensors: the
distinct ids of each row (ascending) and their weights::

    import shardforge.features as sf
    ids = sf.categorical_hash(sf.split("text"), 2**18)
    bag, weights = sf.tfidf(ids, vocab_size=2**18)
    fs = sf.FeatureSet([bag, weights])

The ids must come from a column that learns nothing (a hash, an identity, a vocabulary list or
file): the document frequencies are learned in the same single pass as every other analyzer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import NumericStats, Vocab
from shardforge.features.categorical import CategoricalColumn
from shardforge.features.column import Column, Input, Output, check_int
from shardforge.features.hashing import StrBuf, _verify_equal, fingerprint64
from shardforge.features.strings import NGrams, take_strings, to_strbuf
from shardforge.records.spec import Ragged


def _varlen(value: Any, what: str) -> Ragged:
    if not isinstance(value, Ragged):
        raise TypeError(f"{what} needs a varlen column (a list per row), got one value per row")
    return value


def first_occurrences(values: Any, row_splits: np.ndarray) -> np.ndarray:
    """Positions (ascending) of the first occurrence of each distinct value within its row:
    ``tf.unique`` per row. Strings are grouped by Fingerprint64 and then compared byte-wise,
    so a fingerprint collision never merges two values."""
    n = len(row_splits) - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(row_splits))
    strings = isinstance(values, StrBuf) or np.asarray(values).dtype == object
    if strings:
        sb = to_strbuf(values)
        keys = fingerprint64(sb).view(np.int64)
    else:
        keys = np.asarray(values, dtype=np.int64)
    order = np.lexsort((np.arange(len(keys)), keys, rows))  # stable: first occurrence first
    k, r = keys[order], rows[order]
    starts = np.r_[True, (k[1:] != k[:-1]) | (r[1:] != r[:-1])] if len(k) else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(starts, np.arange(len(k)), 0)) if len(k) else k
    if strings and len(k):
        same = _verify_equal(sb.buf, sb.offsets, order, sb.buf, sb.offsets, order[first])
        if not same.all():  # a 64-bit collision inside a row: group those rows exactly
            return _first_occurrences_exact(sb.to_objects(), row_splits)
    return np.sort(order[starts])


def _first_occurrences_exact(objs: np.ndarray, row_splits: np.ndarray) -> np.ndarray:
    keep = []
    for a, b in zip(row_splits[:-1].tolist(), row_splits[1:].tolist()):
        seen: set = set()
        for i in range(a, b):
            if objs[i] not in seen:
                seen.add(objs[i])
                keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def _take(values: Any, index: np.ndarray) -> Any:
    if isinstance(values, StrBuf):
        return take_strings(values, index)
    return np.asarray(values)[index]


def _kept_splits(index: np.ndarray, row_splits: np.ndarray) -> np.ndarray:
    rows = np.searchsorted(row_splits, index, side="right") - 1
    splits = np.zeros(len(row_splits), dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(row_splits) - 1), out=splits[1:])
    return splits


@dataclass(frozen=True)
class Deduplicated(Column):
    """Each row's distinct values in first-occurrence order (``tft.deduplicate_tensor_per_row``:
    ``tf.unique`` per row). Ids stay ids (same bucket count), strings stay strings."""

    source_input: Column | Input
    name: str = ""
    column_type = "deduplicated"
    reads_strbuf = True

    def inputs(self) -> tuple[Column | Input, ...]:
        return (self.source_input,)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Ragged:
        x = _varlen(values[0], f"deduplicate({self.name!r})")
        keep = first_occurrences(x.values, x.row_splits)
        return Ragged(_take(x.values, keep), _kept_splits(keep, x.row_splits))

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        src = inputs[0]
        if not src.varlen:
            raise ValueError(f"deduplicate({self.name!r}) needs a varlen column")
        if src.kind == "categorical":
            return Output.ids(src.num_buckets, varlen=True)
        return Output(src.kind, src.dtype, (), True, layer="none")


@dataclass(frozen=True)
class WordCount(Column):
    """The number of values of each row (``tft.word_count``), int64."""

    source_input: Column | Input
    name: str = ""
    column_type = "word_count"
    reads_strbuf = True

    def inputs(self) -> tuple[Column, ...]:
        return (self.source_input,)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> np.ndarray:
        return _varlen(values[0], f"word_count({self.name!r})").row_lengths().astype(np.int64)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.numeric(dtype="int64")


@dataclass(frozen=True)
class SegmentIndices(Column):
    """Each value's position within its row (``tft.segment_indices`` of a sparse tensor's row
    ids), int64, aligned with the values."""

    source_input: Column | Input
    name: str = ""
    column_type = "segment_indices"
    reads_strbuf = True

    def inputs(self) -> tuple[Column, ...]:
        return (self.source_input,)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Ragged:
        x = _varlen(values[0], f"segment_indices({self.name!r})")
        starts = np.repeat(x.row_splits[:-1], x.row_lengths())
        return Ragged(np.arange(len(starts), dtype=np.int64) - starts, x.row_splits)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output("numeric", "int64", (), True, layer="none")


# --------------------------------------------------------------------------- tf-idf


@dataclass(frozen=True)
class BagOfIds(CategoricalColumn):
    """The distinct ids of each row in ascending order, each taken modulo ``vocab_size``
    (``tft.tfidf``'s first output, the vocabulary index)."""

    source_input: CategoricalColumn
    vocab_size: int
    name: str = ""
    column_type = "bag_of_ids"

    @property
    def varlen(self) -> bool:
        return True

    def num_buckets(self, state: dict[str, Any]) -> int:
        return self.vocab_size

    def inputs(self) -> tuple[Column, ...]:
        return (self.source_input,)

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Ragged:
        bag, _ = term_counts(_varlen(values[0], f"tfidf({self.name!r})"), self.vocab_size)
        return bag

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.ids(self.vocab_size, varlen=True)


def term_counts(ids: Ragged, vocab_size: int) -> tuple[Ragged, np.ndarray]:
    """(distinct ids per row ascending, modulo ``vocab_size``; how often each occurs in its row)."""
    n = len(ids)
    rows = np.repeat(np.arange(n, dtype=np.int64), ids.row_lengths())
    v = np.mod(np.asarray(ids.values, dtype=np.int64), vocab_size)
    key = rows * vocab_size + v if n * vocab_size < 2**62 else None
    if key is not None:
        uniq, counts = np.unique(key, return_counts=True)
        u_rows, u_ids = uniq // vocab_size, uniq % vocab_size
    else:
        pairs, counts = np.unique(np.stack([rows, v], 1), axis=0, return_counts=True)
        u_rows, u_ids = pairs[:, 0], pairs[:, 1]
    splits = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(u_rows, minlength=n), out=splits[1:])
    return Ragged(u_ids.astype(np.int64), splits), counts.astype(np.int64)


class DocumentFrequency:
    """How many rows hold each id in ``[0, vocab_size)`` (ids taken modulo ``vocab_size``), for
    ``tft.tfidf``. The state is a :class:`Vocab` of the ids present (ascending) whose counts are
    their document frequencies. Exact integer counts: identical for any batching and order."""

    reads_data = True

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = check_int(vocab_size, "DocumentFrequency vocab_size")

    def create(self) -> dict:
        return {"df": {}}

    def add_batch(self, acc: dict, values: Ragged) -> dict:
        bag, _ = term_counts(values, self.vocab_size)
        ids, df = np.unique(bag.values, return_counts=True)
        table = acc["df"]
        for i, c in zip(ids.tolist(), df.tolist()):
            table[i] = table.get(i, 0) + c
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        for acc in accs:
            for i, c in acc["df"].items():
                out["df"][i] = out["df"].get(i, 0) + c
        return out

    def extract(self, acc: dict) -> Vocab:
        ids = sorted(acc["df"])
        return Vocab(ids, np.asarray([acc["df"][i] for i in ids], np.int64), len(ids),
                     dtype="int64")


def idf(document_frequency: np.ndarray, corpus_size: int, smooth: bool = True,
        add_baseline: bool = True) -> np.ndarray:
    """tf.Transform's inverse document frequency (``tft.experimental.idf``),
    ``1 + log((N + 1) / (df + 1))`` (smooth) or ``1 + log(N / df)`` (without the 1 when not
    ``add_baseline``), computed in float64 and rounded once to float32 (tf.Transform computes
    it in float32)."""
    df = np.asarray(document_frequency, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ratio = (corpus_size + 1.0) / (df + 1.0) if smooth else corpus_size / df
        return (np.log(ratio) + (1.0 if add_baseline else 0.0)).astype(np.float32)


@dataclass(frozen=True)
class TfidfWeights(Column):
    """``tft.tfidf``'s second output: for each id of :class:`BagOfIds`, its term frequency in
    the row (count / row length) times its inverse document frequency, float32, aligned with
    the bag's ids."""

    source_input: CategoricalColumn
    vocab_size: int
    smooth: bool = True
    name: str = ""
    column_type = "tfidf"

    def inputs(self) -> tuple[Column, ...]:
        return (self.source_input,)

    def analyzers(self) -> dict[str, Any]:
        return {"df": DocumentFrequency(self.vocab_size), "docs": NumericStats()}

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        ids = _varlen(values[0], f"tfidf({self.name!r})")
        return {"df": ids, "docs": np.zeros(len(ids))}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Ragged:
        ids = _varlen(values[0], f"tfidf({self.name!r})")
        bag, counts = term_counts(ids, self.vocab_size)
        df_state = state["df"]
        df = np.zeros(self.vocab_size, dtype=np.int64)
        df[np.asarray(df_state.values, dtype=np.int64)] = df_state.counts
        lengths = np.repeat(ids.row_lengths(), bag.row_lengths())
        tf = (counts / lengths).astype(np.float32)
        weights = tf * idf(df, state["docs"].count, self.smooth)[bag.values]
        return Ragged(weights.astype(np.float32), bag.row_splits)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output("weights", "float32", (), True)


def tfidf(ids: CategoricalColumn, vocab_size: int, smooth: bool = True,
          name: str | None = None) -> tuple[BagOfIds, TfidfWeights]:
    """``tft.tfidf(ids, vocab_size, smooth)``: ``(bag, weights)``, the distinct ids of each row
    (ascending, modulo ``vocab_size``) and their tf-idf weights (float32, aligned).

    ``vocab_size``: at least the id column's bucket count (vocabulary size plus OOV buckets);
    any such value gives the same outputs. ``smooth``: idf ``1 + log((N + 1) / (df + 1))``,
    else ``1 + log(N / df)``, with ``N`` the number of rows analyzed and ``df`` the rows holding
    the id. Outputs are named ``<name>_index`` and ``<name>_weight`` (``name`` defaults to
    ``<ids>_tfidf``).

    >>> bag, weights = tfidf(categorical_hash(split("text"), 1000), 1000)  # doctest: +SKIP
    """
    if not isinstance(ids, CategoricalColumn) or not ids.varlen:
        raise ValueError("tfidf needs a varlen id column, e.g. "
                         "categorical_vocab(split('text'), num_oov_buckets=1)")
    if any(an.reads_data for an in ids.analyzers().values()):
        raise ValueError(
            f"tfidf({ids.name!r}): the ids come from a learned vocabulary, and the document "
            "frequency of its ids (OOV buckets included) needs that vocabulary first: a second "
            "pass. Hash the tokens (categorical_hash(tokens, n), Spark's HashingTF) or use the "
            "vocabulary of an earlier fit (categorical_vocab_file / categorical_vocab_list)")
    vocab_size = check_int(vocab_size, f"tfidf({ids.name!r}): vocab_size")
    base = name or f"{ids.name}_tfidf"
    return (BagOfIds(ids, vocab_size, f"{base}_index"),
            TfidfWeights(ids, vocab_size, bool(smooth), f"{base}_weight"))


# --------------------------------------------------------------------------- factories


def bag_of_words(tokens: Column, ngram_range: tuple[int, int], separator: str | bytes = " ",
                 name: str | None = None) -> Deduplicated:
    """``tft.bag_of_words(tokens, ngram_range, separator)``: each row's distinct n-grams of
    widths ``lo..hi``, in ``tft.ngrams``'s order (by start position, then width), first
    occurrence kept.

    >>> bow = bag_of_words(split("text"), (1, 2))  # doctest: +SKIP
    """
    lo, hi = _ngram_range(ngram_range, "bag_of_words")
    sep = separator.encode() if isinstance(separator, str) else bytes(separator)
    grams = NGrams(tokens, tuple(range(lo, hi + 1)), sep, f"{tokens.name}_ngrams", "position")
    return Deduplicated(grams, name or f"{tokens.name}_bag_of_words")


def _ngram_range(ngram_range: Any, what: str) -> tuple[int, int]:
    if len(tuple(ngram_range)) != 2:
        raise ValueError(f"{what}: ngram_range must be a pair (lo, hi), got {ngram_range!r}")
    lo, hi = (check_int(v, f"{what}: ngram_range entry") for v in ngram_range)
    if lo > hi:
        raise ValueError(f"{what}: ngram_range {tuple(ngram_range)} must have lo <= hi "
                         "(as tft.ngrams requires)")
    return lo, hi


def deduplicate(source: Column | Input, name: str | None = None) -> Deduplicated:
    """``tft.deduplicate_tensor_per_row``: each row's distinct values, first occurrence first.

    >>> tags = deduplicate(split("tags", sep=","))  # doctest: +SKIP
    """
    _check_column(source, "deduplicate")
    return Deduplicated(source, name or f"{source.name}_dedup")


def word_count(tokens: Column | Input, name: str | None = None) -> WordCount:
    """``tft.word_count``: the number of tokens in each row (int64).

    >>> n_words = word_count(split("text"))  # doctest: +SKIP
    """
    _check_column(tokens, "word_count")
    return WordCount(tokens, name or f"{tokens.name}_word_count")


def segment_indices(source: Column | Input, name: str | None = None) -> SegmentIndices:
    """Each value's index within its row: what ``tft.segment_indices(x.indices[:, 0])`` gives
    for a sparse ``x``.

    >>> pos = segment_indices(split("text"))  # doctest: +SKIP
    """
    _check_column(source, "segment_indices")
    return SegmentIndices(source, name or f"{source.name}_segment_indices")


def _check_column(source: Any, what: str) -> None:
    if not (isinstance(source, Column) or isinstance(source, Input) and source.multivalued):
        raise ValueError(f"{what} needs a varlen column (e.g. split('text')) or a multivalued "
                         f"Input, got {source!r}")


__all__ = ["BagOfIds", "Deduplicated", "DocumentFrequency", "SegmentIndices", "TfidfWeights",
           "WordCount", "bag_of_words", "deduplicate", "idf", "segment_indices", "term_counts",
           "tfidf", "word_count"]
