"""The analyzer protocol, ``create() / add_batch(acc, values) / merge(accs) / extract(acc)``
(:class:`Analyzer`), and the public analyzer set.

Each analyzer learns one statistic over the values a column shows it, in the same single pass as
every other analyzer of the feature set. Accumulators are plain dicts of numpy arrays and Python
values, so they pickle (Beam ships them between workers) and merge in any tree. ``extract``
returns the typed state a column's transform reads (:class:`Stats`, :class:`Vocab`,
:class:`Boundaries`). Every analyzer here except ``Vocabulary(capacity=m)`` once it prunes
depends only on the multiset of values: any batching, order, worker count or merge tree learns
bit-identical state.

- :class:`NumericStats` (``tft.mean`` / ``tft.var`` / ``min`` / ``max``): count, mean and std
  from exact integer sums of ``x`` and ``x²`` (no rounding until ``extract``, so no cancellation
  and no merge-order effect; tf.Transform sums in float32 or float64 and rounds per batch).
- :class:`Vocabulary` (``tft.vocabulary``): values by count descending, ties by the value's
  bytes descending, ``frequency_threshold`` then ``top_k`` as tf.Transform cuts them.
- :class:`Quantiles` (``tft.quantiles``): ``num_buckets - 1`` boundaries, exact up to
  ``exact_capacity`` distinct values, then an order-free histogram sketch.
- :class:`FixedVocabulary`: a given vocabulary, stored in the state like a learned one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numba
import numpy as np

from shardforge.features.hashing import (
    StrBuf,
    StringTable,
    _verify_equal,
    fingerprint64,
    group_fingerprints,
    int_to_strbuf,
)
from shardforge.protos import schema_pb2

Acc = TypeVar("Acc")
Result = TypeVar("Result", covariant=True)


class Analyzer(Protocol[Acc, Result]):
    """What every analyzer is: a mergeable one-pass statistic.

    ``create()`` an empty accumulator; ``add_batch(acc, values)`` the accumulator with one
    batch's values added (it may update ``acc`` in place and return it); ``merge(accs)`` one
    accumulator of several, in any order and grouping; ``extract(acc)`` the result. Accumulators
    pickle (Beam ships them between workers). A column's analyzers extract typed state that
    writes itself into the schema (``to_proto``: :class:`Stats`, :class:`Vocab`,
    :class:`Boundaries`). ``reads_data = False`` marks an analyzer whose result is given, not
    learned: the analyze pass skips it, and ``extract(create())`` is its result.

    >>> an: Analyzer[dict, Stats] = NumericStats()
    >>> an.extract(an.merge([an.add_batch(an.create(), np.array([1.0, 3.0]))])).mean
    2.0
    """

    reads_data: bool

    def create(self) -> Acc: ...

    def add_batch(self, acc: Acc, values: Any) -> Acc: ...

    def merge(self, accs: Iterable[Acc]) -> Acc: ...

    def extract(self, acc: Acc) -> Result: ...


class NumericStats:
    """Count, missing count, mean, std, min, max of float values (NaN = missing).

    Sums are exact, so the result depends only on the multiset of values: any batching, order or
    merge tree gives bit-identical statistics. Every finite float64 is an integer multiple of
    ``2**-1074``, so the accumulator keeps ``sum = Σx·2**1074`` and ``sumsq = Σx²·2**2148`` as
    Python ints (a numba kernel sums each batch into per-exponent integer bins); merging adds
    integers. ``extract`` computes the mean and ``std = sqrt((n·Σx² - (Σx)²) / n²)`` from these
    exact integers, so there is no cancellation however large the offset (``1e9 + N(0, 1)``): the
    mean is correctly rounded and the std within an ulp. ``±inf`` values are counted apart (the
    mean is then ``±inf`` or NaN and the std NaN). Over no values the count, mean and std are 0
    and ``min`` / ``max`` are tf.Transform's: ``+inf`` / ``-inf``, or the int64 limits for
    ``dtype="int64"``.

    >>> an = NumericStats()
    >>> an.extract(an.add_batch(an.create(), np.array([1.0, 2.0, np.nan, 4.0]))).mean
    2.3333333333333335
    """

    reads_data = True

    def __init__(self, dtype: str = "float32") -> None:
        self.dtype = dtype

    def create(self) -> dict:
        return {"count": 0, "missing": 0, "sum": 0, "sumsq": 0, "posinf": 0, "neginf": 0,
                "min": np.inf, "max": -np.inf}

    def add_batch(self, acc: dict, values: np.ndarray) -> dict:
        x = np.ascontiguousarray(values, dtype=np.float64).ravel()
        for i in range(0, len(x), _CHUNK):
            part = x[i : i + _CHUNK]
            sums = np.zeros((_N_EXP, 3), dtype=np.int64)
            squares = np.zeros((_N_EXP, 5), dtype=np.int64)
            rows = np.empty(_N_EXP, dtype=np.int64)
            count, missing, posinf, neginf, lo, hi, n_rows = _moments_kernel(
                part, part.view(np.int64), sums, squares, rows
            )
            total, total_sq = _bins_to_ints(sums, squares, rows[:n_rows].tolist())
            acc["count"] += count
            acc["missing"] += missing
            acc["posinf"] += posinf
            acc["neginf"] += neginf
            acc["sum"] += total
            acc["sumsq"] += total_sq
            acc["min"] = min(acc["min"], lo)
            acc["max"] = max(acc["max"], hi)
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        for acc in accs:
            for f in ("count", "missing", "sum", "sumsq", "posinf", "neginf"):
                out[f] += acc[f]
            out["min"] = min(out["min"], acc["min"])
            out["max"] = max(out["max"], acc["max"])
        return out

    def extract(self, acc: dict) -> Stats:
        n = acc["count"]
        if n == 0:
            # tf.Transform's min / max of no values: the identity of each reduction
            mean = std = 0.0
            lo, hi = _EMPTY_MIN_MAX[self.dtype]
        else:
            # +0.0 turns -0.0 into 0.0: which zero min() keeps depends on the order
            lo, hi = acc["min"] + 0.0, acc["max"] + 0.0
            if acc["posinf"] or acc["neginf"]:
                mean = np.nan if acc["posinf"] and acc["neginf"] else (
                    np.inf if acc["posinf"] else -np.inf)
                std = np.nan
            else:
                # Python's int / int is correctly rounded, also for these ~4000-bit integers.
                mean = acc["sum"] / (n << _SUM_SHIFT)
                num = n * acc["sumsq"] - acc["sum"] * acc["sum"]  # n² · 2**2148 · variance
                t = max(0, 64 - num.bit_length() // 2)  # isqrt keeps >= 64 significant bits
                std = math.isqrt(num << (2 * t)) / (n << (_SUM_SHIFT + t))
        return Stats(n, acc["missing"], float(mean), float(std), float(lo), float(hi))


# min and max of no values, as tf.Transform returns them: +inf / -inf for floats, the int64
# limits for ints (as float64: 2**63 and -2**63)
_EMPTY_MIN_MAX = {"float32": (np.inf, -np.inf),
                  "int64": (float(np.iinfo(np.int64).max), float(np.iinfo(np.int64).min))}

# A finite float64 x is ±m·2**(p - 1074) with an integer significand m < 2**53 and 0 <= p <= 2045
# (p = biased exponent - 1; subnormals p = 0), so x·2**1074 and x²·2**2148 are integers. The
# kernel splits m into three 18-bit digits m = u·2**36 + v·2**18 + w and adds, per exponent p, the
# digits of ±m and the five digit products of m² = w² + 2vw·2**18 + (v² + 2uw)·2**36 + 2uv·2**54
# + u²·2**72 into int64 bins: fixed slots, no carries, no variable shifts in the loop.
_SUM_SHIFT = 1074
_N_EXP = 2046
# Every bin gains < 2**37 per value, so 2**25 values per kernel call cannot overflow int64.
_CHUNK = 1 << 25


@numba.njit(cache=True, nogil=True)
def _moments_kernel(x, bits, sums, squares, rows):
    """One pass: counts, min, max; digits of Σ±m into ``sums[p]``, of Σm² into ``squares[p]``;
    the exponents ``p`` used, in first-use order, into ``rows[:n_rows]``."""
    n_rows = 0
    count = 0
    missing = 0
    posinf = 0
    neginf = 0
    lo = np.inf
    hi = -np.inf
    for i in range(len(x)):
        val = x[i]
        if val != val:
            missing += 1
            continue
        count += 1
        lo = min(lo, val)
        hi = max(hi, val)
        b = bits[i]
        e = (b >> 52) & 0x7FF
        if e == 0x7FF:
            if val > 0:
                posinf += 1
            else:
                neginf += 1
            continue
        m = b & 0xFFFFFFFFFFFFF
        p = 0
        if e:
            m |= np.int64(1) << 52
            p = e - 1
        elif m == 0:
            continue  # ±0.0 adds nothing (and must not look like a new exponent below)
        if squares[p, 4] == 0 and squares[p, 0] == 0 and squares[p, 2] == 0:
            rows[n_rows] = p  # first value with this exponent (u > 0, w > 0 or v > 0)
            n_rows += 1
        sign = (b >> 63) | 1  # -1 or 1, without a branch on random signs
        u = m >> 36
        v = (m >> 18) & 0x3FFFF
        w = m & 0x3FFFF
        sums[p, 0] += sign * w
        sums[p, 1] += sign * v
        sums[p, 2] += sign * u
        squares[p, 0] += w * w
        squares[p, 1] += 2 * v * w
        squares[p, 2] += v * v + 2 * u * w
        squares[p, 3] += 2 * u * v
        squares[p, 4] += u * u
    return count, missing, posinf, neginf, lo, hi, n_rows


def _bins_to_ints(sums: np.ndarray, squares: np.ndarray, rows: list[int]) -> tuple[int, int]:
    """(Σx·2**1074, Σx²·2**2148) as Python ints from the kernel's per-exponent digit sums."""
    total = total_sq = 0
    for p, (w, v, u), sq in zip(rows, sums[rows].tolist(), squares[rows].tolist()):
        total += (w + (v << 18) + (u << 36)) << p
        sq_m = sq[0] + (sq[1] << 18) + (sq[2] << 36) + (sq[3] << 54) + (sq[4] << 72)
        total_sq += sq_m << (2 * p)
    return total, total_sq


def unique_strings(values: np.ndarray | StrBuf) -> tuple[np.ndarray, np.ndarray]:
    """Distinct byte strings (object array) and their counts, grouped by Fingerprint64
    (first-occurrence order).

    Only one Python ``bytes`` is made per distinct value. Every value is compared byte-wise with
    its group's representative, so a fingerprint collision can never merge two values.
    """
    sb = values if isinstance(values, StrBuf) else StrBuf.from_values(values)
    grouped = _group_strings(sb)
    if grouped is None:  # a 64-bit collision: count this batch exactly the slow way
        objs = sb.to_objects()
        uniq, inv = np.unique(objs.astype(np.bytes_), return_inverse=True)
        return np.asarray([bytes(u) for u in uniq], dtype=object), np.bincount(inv).astype(np.int64)
    _, first, counts = grouped
    return sb.to_objects(first), counts


def _group_strings(sb: StrBuf) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(fingerprints, first index, count)`` of each distinct string of ``sb`` in
    first-occurrence order, checked byte-wise; ``None`` on a fingerprint collision."""
    if len(sb) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    fp = fingerprint64(sb)
    gid, first, counts = group_fingerprints(fp)
    same = _verify_equal(
        sb.buf, sb.offsets, np.arange(len(sb), dtype=np.int64), sb.buf, sb.offsets, first[gid]
    )
    return (fp[first], first, counts.astype(np.int64)) if same.all() else None


# --------------------------------------------------------------------------- typed learned state


@dataclass(frozen=True)
class Stats:
    """What :class:`NumericStats` learns: ``count`` values analyzed (``missing`` NaNs apart),
    ``mean``, population ``std``, ``min``, ``max``."""

    count: int = 0
    missing: int = 0
    mean: float = 0.0
    std: float = 0.0
    min: float = 0.0
    max: float = 0.0

    def to_proto(self, cs: schema_pb2.ColumnState) -> None:
        cs.has_stats = True
        for f in _STAT_FIELDS:
            setattr(cs, f, getattr(self, f))

    @classmethod
    def from_proto(cls, cs: schema_pb2.ColumnState) -> Stats:
        return cls(**{f: getattr(cs, f) for f in _STAT_FIELDS})


_STAT_FIELDS = ("count", "missing", "mean", "std", "min", "max")


class Vocab:
    """A vocabulary (learned, listed or read from a file): ``values`` in id order, their
    ``counts`` (learned only), the number of distinct values seen before the cut, whether the
    counts are approximate. Built once per state, with its exact lookup index (``lookup``)."""

    def __init__(self, values: Sequence, counts: np.ndarray | None = None, distinct: int = 0,
                 approximate: bool = False, dtype: str = "bytes") -> None:
        self.dtype = dtype
        self.values = [int(v) for v in values] if dtype == "int64" else [bytes(v) for v in values]
        self.counts = np.zeros(0, np.int64) if counts is None else np.asarray(counts, np.int64)
        self.distinct = int(distinct)
        self.approximate = bool(approximate)
        if dtype == "int64":
            keys = np.asarray(self.values, dtype=np.int64)
            order = np.argsort(keys, kind="stable")
            self._int_index = (keys[order], order.astype(np.int64))
        else:
            objs = np.empty(len(self.values), dtype=object)
            objs[:] = self.values
            self._str_index = StringTable(StrBuf.from_values(objs))

    def __len__(self) -> int:
        return len(self.values)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Vocab) and self.values == other.values
                and np.array_equal(self.counts, other.counts))

    def lookup(self, values: Any, num_oov_buckets: int = 0, default_value: int = -1) -> np.ndarray:
        """Ids of flat ``values`` (object array or StrBuf of bytes, or int64) with TensorFlow's
        OOV rule: ``vocab_size + Fingerprint64(value) % num_oov_buckets`` (ints hashed as their
        decimal string, like ``tf.lookup.StaticVocabularyTable``), else ``default_value``."""
        if not len(self):  # every value is OOV, whatever its dtype
            if isinstance(values, StrBuf) or np.asarray(values).dtype == object:
                sb = values if isinstance(values, StrBuf) else StrBuf.from_values(values)
            else:
                sb = int_to_strbuf(np.asarray(values))
            if not num_oov_buckets:
                return np.full(len(sb), default_value, dtype=np.int64)
            return (fingerprint64(sb) % np.uint64(num_oov_buckets)).astype(np.int64)
        if self.dtype == "int64":
            v = np.asarray(values, dtype=np.int64)
            keys, order = self._int_index
            if len(keys):
                pos = np.minimum(np.searchsorted(keys, v), len(keys) - 1)
                ids = np.where(keys[pos] == v, order[pos], -1).astype(np.int64)
            else:
                ids = np.full(len(v), -1, dtype=np.int64)
            oov = ids < 0
            if oov.any():
                ids[oov] = (len(keys) + (fingerprint64(int_to_strbuf(v[oov]))
                                         % np.uint64(num_oov_buckets)).astype(np.int64)
                            if num_oov_buckets else default_value)
            return ids
        sb = values if isinstance(values, StrBuf) else StrBuf.from_values(values)
        fp = fingerprint64(sb)
        ids = self._str_index.lookup(sb, fp)
        oov = ids < 0
        if oov.any():
            ids[oov] = (len(self) + (fp[oov] % np.uint64(num_oov_buckets)).astype(np.int64)
                        if num_oov_buckets else default_value)
        return ids

    def to_proto(self, cs: schema_pb2.ColumnState) -> None:
        if self.dtype == "int64":
            cs.int_vocab.extend(self.values)
        else:
            cs.vocab.extend(self.values)
        cs.vocab_counts.extend(self.counts.tolist())
        cs.vocab_total_distinct = self.distinct
        cs.vocab_approximate = self.approximate

    @classmethod
    def from_proto(cls, cs: schema_pb2.ColumnState, dtype: str) -> Vocab:
        values = list(cs.int_vocab) if dtype == "int64" else list(cs.vocab)
        return cls(values, np.asarray(cs.vocab_counts, np.int64), cs.vocab_total_distinct,
                   cs.vocab_approximate, dtype)


@dataclass(frozen=True)
class Boundaries:
    """Bucket boundaries (float32 values, ascending, duplicates kept as tf.Transform does) and
    a bound on their rank error (fraction of the count; 0 = exact quantiles)."""

    values: tuple[float, ...] = ()
    rank_error: float = 0.0

    def to_proto(self, cs: schema_pb2.ColumnState) -> None:
        cs.boundaries.extend(self.values)
        cs.quantile_rank_error = self.rank_error

    @classmethod
    def from_proto(cls, cs: schema_pb2.ColumnState) -> Boundaries:
        return cls(tuple(cs.boundaries), cs.quantile_rank_error)


# --------------------------------------------------------------------------- vocabulary


def tft_order(items: Iterable[tuple[Any, int]], dtype: str) -> list[tuple[Any, int]]:
    """tf.Transform's vocabulary order: count descending, ties by the value's bytes descending
    (ints compare as their decimal strings, as tf.Transform writes them)."""
    if dtype == "int64":
        return sorted(items, key=lambda kv: (kv[1], str(kv[0]).encode()), reverse=True)
    return sorted(items, key=lambda kv: (kv[1], kv[0]), reverse=True)


# tf.Transform's entry of an empty vocabulary (analyzers.get_empy_vocabulary_dummy_value)
EMPTY_VOCAB_PLACEHOLDER = {"bytes": b"49d0cd50-04bb-48c0-bc6f-5b575dce351a", "int64": -1}


class Vocabulary:
    """``tft.vocabulary``: distinct values with counts, in tf.Transform's order, cut like it.

    Keeps the values with count >= ``frequency_threshold`` (filtered first), then the ``top_k``
    first. Like tf.Transform's text vocabulary files, empty strings and strings holding ``\\n``
    or ``\\r`` are never entries (they map to OOV). A vocabulary left empty holds
    tf.Transform's placeholder entry (``EMPTY_VOCAB_PLACEHOLDER``: a fixed UUID string, or -1
    for ints), so it has one id and OOV buckets start at 1, as in tf.Transform. Exact by
    default (the result depends only on the multiset of values); ``capacity=m`` keeps a
    bounded Misra-Gries summary (counts underestimated by at most ``N / (m + 1)``).

    >>> an = Vocabulary(top_k=2)
    >>> an.extract(an.add_batch(an.create(), np.array([b"b", b"a", b"c", b"a"], object))).values
    [b'a', b'c']
    """

    reads_data = True

    def __init__(self, top_k: int | None = None, frequency_threshold: int | None = None,
                 capacity: int | None = None, dtype: str = "bytes") -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"vocabulary capacity must be >= 1, got {capacity}")
        self.top_k, self.frequency_threshold = top_k, frequency_threshold
        self.capacity, self.dtype = capacity, dtype

    def create(self) -> dict:
        return {"counts": {}, "total": 0, "decrement": 0}

    def add_batch(self, acc: dict, values: np.ndarray | StrBuf) -> dict:
        if self.dtype == "bytes":
            sb = values if isinstance(values, StrBuf) else StrBuf.from_values(values)
            grouped = _group_strings(sb) if self.capacity is not None else None
            if grouped is not None:
                fp, first, counts = grouped
                return self._add_bounded(
                    acc, counts, fp, lambda i: sb.to_objects(first[i]),
                    lambda keys: fingerprint64(StrBuf.from_values(keys)))
            keys, counts = unique_strings(sb)
        else:
            ints, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
            if self.capacity is not None:
                return self._add_bounded(acc, counts, ints, lambda i: ints[i].tolist(),
                                         lambda keys: keys.astype(np.int64))
            keys = ints.tolist()
        return self._add_counts(acc, keys, counts)

    def _add_counts(self, acc: dict, keys: Sequence, counts: np.ndarray) -> dict:
        table = acc["counts"]
        for k, c in zip(keys, counts.tolist()):
            table[k] = table.get(k, 0) + c
        acc["total"] += int(counts.sum())
        self._prune(acc)
        return acc

    def _add_bounded(self, acc: dict, counts: np.ndarray, ids: np.ndarray, objects,
                     ids_of) -> dict:
        """:meth:`_add_counts` then :meth:`_prune`, with the cut found on arrays: of a batch's
        distinct values (``counts``, identified by ``ids``: fingerprints or the ints) only
        those in the table or above the cut become Python objects (``objects(index)``).
        ``ids_of(table keys)`` identifies the table's keys the same way; a fingerprint that
        two table keys share, or a match whose bytes differ, takes the plain path."""
        table = acc["counts"]
        tkeys = np.fromiter(table, dtype=object, count=len(table))
        tids = ids_of(tkeys) if len(tkeys) else np.zeros(0, dtype=ids.dtype)
        order = np.argsort(tids, kind="stable")
        sorted_ids = tids[order]
        pos = np.searchsorted(sorted_ids, ids)
        hit = pos < len(sorted_ids)
        hit[hit] = sorted_ids[pos[hit]] == ids[hit]
        at = order[pos[hit]]  # the table position of each hit
        hit_keys = objects(np.flatnonzero(hit))
        if (len(sorted_ids) and (sorted_ids[1:] == sorted_ids[:-1]).any()) or any(
                a != b for a, b in zip(hit_keys, tkeys[at].tolist())):
            return self._add_counts(acc, objects(np.arange(len(counts))), counts)
        merged = np.fromiter(table.values(), dtype=np.int64, count=len(table))
        merged[at] += counts[hit]
        new = np.flatnonzero(~hit)
        acc["total"] += int(counts.sum())
        if len(merged) + len(new) <= self.capacity:
            cut = 0
        else:
            every = np.concatenate([merged, counts[new]])
            k = len(every) - self.capacity - 1
            cut = int(np.partition(every, k)[k])
            new = new[counts[new] > cut]
            acc["decrement"] += cut
        out = {key: int(c) - cut for key, c in zip(tkeys.tolist(), merged.tolist()) if c > cut}
        out.update(zip(objects(new), (counts[new] - cut).tolist()))
        acc["counts"] = out
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        table = out["counts"]
        for acc in accs:
            for k, c in acc["counts"].items():
                table[k] = table.get(k, 0) + c
            out["total"] += acc["total"]
            out["decrement"] += acc["decrement"]
        self._prune(out)
        return out

    def _prune(self, acc: dict) -> None:
        # Mergeable Misra-Gries (Agarwal et al. 2012): subtract the (m+1)-th largest count.
        table = acc["counts"]
        if self.capacity is None or len(table) <= self.capacity:
            return
        cut = sorted(table.values(), reverse=True)[self.capacity]
        acc["counts"] = {k: c - cut for k, c in table.items() if c > cut}
        acc["decrement"] += cut

    def counted(self, acc: dict) -> tuple[list[tuple], int]:
        """Every value as counted (no vocabulary cut, empty strings included), most frequent
        first (ties by value), and how much any count may be low by (0 unless the bounded
        summary pruned; then the number of distinct values is only known to exceed
        ``capacity``)."""
        return sorted(acc["counts"].items(), key=lambda kv: (-kv[1], kv[0])), acc["decrement"]

    def extract(self, acc: dict) -> Vocab:
        items = acc["counts"].items()
        if self.dtype == "bytes":
            items = [(k, c) for k, c in items if k and b"\n" not in k and b"\r" not in k]
        items = tft_order(items, self.dtype)
        distinct = len(items)
        if self.frequency_threshold:
            items = [kv for kv in items if kv[1] >= self.frequency_threshold]
        if self.top_k is not None:
            items = items[: self.top_k]
        if not items:
            # tf.Transform writes one placeholder entry (count 1) into an empty vocabulary, so
            # the vocabulary size is 1, OOV ids start at 1 and an int -1 gets id 0.
            items = [(EMPTY_VOCAB_PLACEHOLDER[self.dtype], 1)]
        return Vocab([k for k, _ in items], np.asarray([c for _, c in items], np.int64),
                     distinct, self.capacity is not None, self.dtype)


class FixedVocabulary:
    """A given vocabulary as an analyzer that reads no data (``vocabulary_list`` / file): the
    state then holds it like a learned one, so the schema alone re-transforms."""

    reads_data = False

    def __init__(self, values: Sequence, dtype: str) -> None:
        self.values, self.dtype = tuple(values), dtype

    def create(self) -> dict:
        return {}

    def add_batch(self, acc: dict, values: Any) -> dict:
        return acc

    def merge(self, accs) -> dict:
        return {}

    def extract(self, acc: dict) -> Vocab:
        return Vocab(self.values, dtype=self.dtype)


# --------------------------------------------------------------------------- quantiles


class Quantiles:
    """``tft.quantiles``: ``num_buckets - 1`` boundaries, the ``i / num_buckets`` quantiles.

    Boundary ``i`` is the value at 0-based rank ``floor(i * n / num_buckets)`` of the sorted
    values (what tf.Transform's sketch returns when it is exact), cast to float32; duplicates
    are kept, as tf.Transform keeps them. The accumulator is a function of the multiset of
    values only, so every batching, input order, worker count and merge tree learns the same
    boundaries, bit for bit:

    - exact (distinct values with counts) while a column has at most ``exact_capacity``
      distinct values;
    - past that, a histogram over the float64 bit patterns at the finest resolution that keeps
      at most ``exact_capacity`` buckets: a bucket is the run of ``2**shift`` consecutive
      patterns sharing a key (about ``2**(shift - 52)`` wide relative to its values), with its
      exact count, min and max. ``shift`` is the smallest one for which the whole multiset
      fits, so it too depends on the values only (a merge re-keys its parts at the largest
      part's shift, then coarsens while over capacity). A boundary is interpolated by rank
      inside its bucket: exact when the bucket holds one value, else off in rank by at most
      the bucket's count (``Boundaries.rank_error`` is that bound, as a fraction).

    >>> an = Quantiles(num_buckets=4)
    >>> an.extract(an.add_batch(an.create(), np.arange(10.0))).values
    (2.0, 5.0, 7.0)
    """

    reads_data = True

    def __init__(self, num_buckets: int, exact_capacity: int = 1 << 18) -> None:
        if num_buckets < 2:
            raise ValueError(f"quantiles need num_buckets >= 2, got {num_buckets}")
        if exact_capacity < 2:
            raise ValueError(f"quantiles need exact_capacity >= 2, got {exact_capacity}")
        self.num_buckets, self.exact_capacity = num_buckets, exact_capacity

    def create(self) -> dict:
        return {"exact": (np.zeros(0), np.zeros(0, np.int64)), "hist": None}

    def add_batch(self, acc: dict, values: np.ndarray) -> dict:
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[~np.isnan(x)] + 0.0  # +0.0: -0.0 and 0.0 are one value
        if len(x) == 0:
            return acc
        return self.merge([acc, {"exact": np.unique(x, return_counts=True), "hist": None}])

    def merge(self, accs) -> dict:
        accs = list(accs)
        exact = [a["exact"] for a in accs if a["hist"] is None]
        if all(a["hist"] is None for a in accs):
            values = np.concatenate([e[0] for e in exact])
            counts = np.concatenate([e[1] for e in exact])
            values, inverse = np.unique(values, return_inverse=True)
            counts = np.bincount(inverse, weights=counts, minlength=len(values)).astype(np.int64)
            if len(values) <= self.exact_capacity:
                return {"exact": (values, counts), "hist": None}
            return {"exact": None, "hist": self._coarsen(_histogram(values, counts))}
        parts = [a["hist"] for a in accs if a["hist"] is not None]
        parts += [_histogram(*e) for e in exact if len(e[0])]
        shift = max(p[0] for p in parts)
        keys = np.concatenate([p[1] >> np.int64(shift - p[0]) for p in parts])
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        counts = np.add.reduceat(np.concatenate([p[2] for p in parts])[order], starts)
        lo = np.minimum.reduceat(np.concatenate([p[3] for p in parts])[order], starts)
        hi = np.maximum.reduceat(np.concatenate([p[4] for p in parts])[order], starts)
        return {"exact": None, "hist": self._coarsen((shift, keys[starts], counts, lo, hi))}

    def _coarsen(self, hist: tuple) -> tuple:
        """The histogram at the smallest larger shift with at most ``exact_capacity`` buckets."""
        shift, keys, counts, lo, hi = hist
        if len(keys) <= self.exact_capacity:
            return hist

        def n_buckets(d: int) -> int:
            k = keys >> np.int64(d)
            return 1 + int(np.count_nonzero(k[1:] != k[:-1]))

        low, high = 1, 63 - shift  # keys >> 63 are -1 or 0: 2 buckets fit any capacity
        while low < high:  # the bucket count only falls as the shift grows
            mid = (low + high) // 2
            if n_buckets(mid) <= self.exact_capacity:
                high = mid
            else:
                low = mid + 1
        k = keys >> np.int64(low)
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        stops = np.r_[starts[1:], len(k)] - 1
        # buckets are in value order, so a run's min is its first bucket's, its max its last's
        return shift + low, k[starts], np.add.reduceat(counts, starts), lo[starts], hi[stops]

    def points(self, acc: dict) -> tuple[np.ndarray, np.ndarray, float]:
        """The accumulated values as sorted weighted points ``(values, weights, eps)``: the exact
        distinct values with their counts, or past ``exact_capacity`` the buckets' midpoints
        with their counts. ``eps`` bounds the rank error of a quantile read off them, as a
        share of the values (the largest bucket spanning more than one value; 0 while exact)."""
        if acc["hist"] is None:
            values, weights = acc["exact"]
            return values, weights, 0.0
        _, _, counts, lo, hi = acc["hist"]
        n = int(counts.sum())
        eps = float(np.where(lo < hi, counts, 0).max()) / n if n else 0.0
        return (lo + hi) / 2, counts, eps

    def extract(self, acc: dict) -> Boundaries:
        n_q = self.num_buckets
        if acc["hist"] is None:
            values, counts = acc["exact"]
            if not len(values):
                return Boundaries(tuple([0.0] * (n_q - 1)))
            cum = np.cumsum(counts)
            ranks = (np.arange(1, n_q) * int(cum[-1])) // n_q
            b = values[np.searchsorted(cum, ranks, side="right")]
            error = 0.0
        else:
            _, _, counts, lo, hi = acc["hist"]
            cum = np.cumsum(counts)
            n = int(cum[-1])
            ranks = (np.arange(1, n_q) * n) // n_q
            j = np.searchsorted(cum, ranks, side="right")
            within = ranks - (cum[j] - counts[j])
            span = np.maximum(counts[j] - 1, 1)
            b = lo[j] + (hi[j] - lo[j]) * (within / span)
            # a bucket holding one value gives it exactly
            error = float(np.where(lo[j] < hi[j], counts[j], 0).max()) / n
        b = b.astype(np.float32) + np.float32(0)  # -0.0 -> 0.0
        return Boundaries(tuple(float(v) for v in b), error)


def _histogram(values: np.ndarray, counts: np.ndarray) -> tuple:
    """Sorted distinct float64 values with counts as a histogram at shift 0: (shift, keys,
    counts, mins, maxs), a key being a monotone int64 of the float's bit pattern."""
    bits = values.view(np.int64)
    # negative floats have their magnitude bits flipped, so the keys sort like the values
    keys = np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)
    return 0, keys, counts.astype(np.int64), values, values
