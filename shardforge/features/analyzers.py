"""Mergeable analyzers: ``create() / add_batch(acc, values) / merge(accs) / extract(acc)``.

Each analyzer learns one statistic over the flat values of a column in a single pass. Accumulators
are plain dicts of numpy arrays and Python scalars, so they pickle (Beam ships them between
workers) and merge in any tree. :class:`NumericStats` and the exact :class:`Vocabulary` depend only
on the multiset of values: any batching, order or merge tree learns bit-identical results. The
bounded summaries (:class:`Quantiles` past ``2k`` distinct values, ``Vocabulary(capacity=m)`` once
it prunes) are deterministic for a given input order and merge tree, and keep their error bounds
for any.

- :class:`NumericStats`: count, missing (NaN), mean and std from exact integer sums of ``x`` and
  ``x²`` (no rounding until ``extract``, so no cancellation and no merge-order effect), min, max.
- :class:`Vocabulary`: values with counts, most frequent first, ties broken by value. Exact by
  default; ``capacity=m`` keeps a bounded Misra-Gries summary (counts underestimated by at most
  ``N / (m + 1)``, any value with frequency above that is kept).
- :class:`Quantiles`: exact (distinct values with counts, independent of order) while a column
  has at most ``2k`` distinct values; past that a deterministic compactor hierarchy
  (MRL/KLL-style, fixed capacity ``2k`` per level). Compacting a sorted level-``h`` buffer keeps
  every other item with double weight, which moves any rank by at most ``2**h``; the sketch adds
  up these amounts, so ``extract`` returns a *proven* rank-error bound ``eps`` (fraction of the
  count). At most ``N / (2k)`` per level over ``log2(N / 2k) + 1`` levels (a level only compacts
  once ``2k`` items of weight ``2**h`` reached it): with the default ``k = 4096`` and 1M values,
  ``eps <= 0.1%``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from shardforge.features.hashing import (
    StrBuf,
    _verify_equal,
    fingerprint64,
    group_fingerprints,
)


class NumericStats:
    """Count, missing count, mean, std, min, max of float values (NaN = missing).

    Sums are exact, so the result depends only on the multiset of values: any batching, order or
    merge tree gives bit-identical statistics. Every finite float64 is an integer multiple of
    ``2**-1074``, so the accumulator keeps ``sum = Σx·2**1074`` and ``sumsq = Σx²·2**2148`` as
    Python ints (a numba kernel sums each batch into per-exponent integer bins); merging adds
    integers. ``extract`` computes the mean and ``std = sqrt((n·Σx² - (Σx)²) / n²)`` from these
    exact integers, so there is no cancellation however large the offset (``1e9 + N(0, 1)``): the
    mean is correctly rounded and the std within an ulp. ``±inf`` values are counted apart (the
    mean is then ``±inf`` or NaN and the std NaN).

    >>> an = NumericStats()
    >>> an.extract(an.add_batch(an.create(), np.array([1.0, 2.0, np.nan, 4.0])))["mean"]
    2.3333333333333335
    """

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

    def extract(self, acc: dict) -> dict:
        n = acc["count"]
        if n == 0:
            mean = std = lo = hi = 0.0
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
        return {"count": n, "missing": acc["missing"], "mean": float(mean), "std": float(std),
                "min": float(lo), "max": float(hi)}


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
    if len(sb) == 0:
        return np.empty(0, dtype=object), np.zeros(0, dtype=np.int64)
    gid, first, counts = group_fingerprints(fingerprint64(sb))
    same = _verify_equal(
        sb.buf, sb.offsets, np.arange(len(sb), dtype=np.int64), sb.buf, sb.offsets, first[gid]
    )
    if not same.all():  # a 64-bit collision: count this batch exactly the slow way
        objs = sb.to_objects()
        uniq, inv = np.unique(objs.astype(np.bytes_), return_inverse=True)
        return np.asarray([bytes(u) for u in uniq], dtype=object), np.bincount(inv).astype(np.int64)
    return sb.to_objects(first), counts.astype(np.int64)


class Vocabulary:
    """Distinct values with counts; exact, or a bounded Misra-Gries summary with ``capacity``."""

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"vocabulary capacity must be >= 1, got {capacity}")
        self.capacity = capacity

    def create(self) -> dict:
        return {"counts": {}, "total": 0, "decrement": 0}

    def add_batch(self, acc: dict, values: np.ndarray | StrBuf) -> dict:
        if isinstance(values, StrBuf) or (
            isinstance(values, np.ndarray) and values.dtype == object
        ):
            keys, counts = unique_strings(values)
        else:
            keys, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
            keys = keys.tolist()
        table = acc["counts"]
        for k, c in zip(keys, counts.tolist()):
            table[k] = table.get(k, 0) + c
        acc["total"] += int(counts.sum())
        self._prune(acc)
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

    def extract(self, acc: dict) -> dict:
        items = sorted(acc["counts"].items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "values": [k for k, _ in items],
            "counts": np.asarray([c for _, c in items], dtype=np.int64),
            "total": acc["total"],
            "distinct": len(items),
            "approximate": self.capacity is not None,
            "max_undercount": acc["decrement"],
        }


class Quantiles:
    """Mergeable quantile sketch with a tracked, proven rank-error bound (see module docstring).

    While a column has at most ``2k`` distinct values (integers, codes, small inputs) the
    accumulator is exact: sorted distinct values with counts, which depend only on the multiset
    of values, so any order or merge tree gives the same result and ``eps == 0``. Past that it
    becomes the compactor sketch, losslessly: a value with count ``c`` enters level ``h`` for
    each set bit ``2**h`` of ``c``.
    """

    def __init__(self, k: int = 4096) -> None:
        if k < 8:
            raise ValueError(f"quantile sketch k must be >= 8, got {k}")
        self.k = k

    def create(self) -> dict:
        empty = (np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64))
        return {"levels": [], "parity": [], "n": 0, "err": 0.0, "exact": empty}

    def add_batch(self, acc: dict, values: np.ndarray) -> dict:
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        if len(x) == 0:
            return acc
        acc["n"] += len(x)
        if acc["exact"] is not None:
            # +0.0: -0.0 and 0.0 are one value, stored as 0.0 whichever came first
            batch = np.unique(x + 0.0, return_counts=True)
            if len(batch[0]) <= 2 * self.k:
                acc["exact"] = _add_counts(acc["exact"], batch)
            else:
                self._to_sketch(acc)
                self._push_counts(acc, *batch)
        else:
            self._push(acc, 0, x)
        self._compact(acc)
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        for acc in accs:
            out["n"] += acc["n"]
            out["err"] += acc["err"]
            if acc["exact"] is not None and out["exact"] is not None:
                out["exact"] = _add_counts(out["exact"], acc["exact"])
                continue
            self._to_sketch(out)
            if acc["exact"] is not None:
                self._push_counts(out, *acc["exact"])
                continue
            for h, buf in enumerate(acc["levels"]):
                self._push(out, h, buf)
                out["parity"][h] ^= acc["parity"][h]
        self._compact(out)
        return out

    def _push_counts(self, acc: dict, values: np.ndarray, counts: np.ndarray) -> None:
        for h in range(int(counts.max(initial=0)).bit_length()):
            self._push(acc, h, values[(counts >> h) & 1 == 1])

    def _to_sketch(self, acc: dict) -> None:
        if acc["exact"] is not None:
            values, counts = acc["exact"]
            acc["exact"] = None
            self._push_counts(acc, values, counts)

    @staticmethod
    def _push(acc: dict, h: int, x: np.ndarray) -> None:
        while len(acc["levels"]) <= h:
            acc["levels"].append(np.zeros(0, dtype=np.float64))
            acc["parity"].append(0)
        acc["levels"][h] = np.concatenate([acc["levels"][h], x])

    def _compact(self, acc: dict) -> None:
        if acc["exact"] is not None:
            if len(acc["exact"][0]) <= 2 * self.k:
                return
            self._to_sketch(acc)
        h = 0
        while h < len(acc["levels"]):
            buf = acc["levels"][h]
            if len(buf) >= 2 * self.k:
                buf = np.sort(buf, kind="stable")
                even = len(buf) - len(buf) % 2
                # Alternate which half survives so that the rank errors of successive
                # compactions cancel on average; the bound below does not rely on it.
                kept = buf[acc["parity"][h] : even : 2]
                acc["parity"][h] ^= 1
                acc["levels"][h] = buf[even:]
                acc["err"] += float(2**h)
                self._push(acc, h + 1, kept)
            h += 1

    def extract(self, acc: dict) -> dict:
        """``values``/``weights`` (sorted) summarize the data; ``eps`` bounds the rank error."""
        if acc["exact"] is not None:
            values, counts = acc["exact"]
            return {"values": values, "weights": counts.astype(np.float64), "n": acc["n"],
                    "eps": 0.0}
        parts = [(buf, np.full(len(buf), 2.0**h)) for h, buf in enumerate(acc["levels"])]
        if not parts or acc["n"] == 0:
            return {"values": np.zeros(0), "weights": np.zeros(0), "n": 0, "eps": 0.0}
        values = np.concatenate([p[0] for p in parts])
        weights = np.concatenate([p[1] for p in parts])
        order = np.argsort(values, kind="stable")
        return {
            "values": values[order],
            "weights": weights[order],
            "n": acc["n"],
            "eps": acc["err"] / acc["n"],
        }


def _add_counts(a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Sum two (sorted distinct values, counts) summaries."""
    values, inverse = np.unique(np.concatenate([a[0], b[0]]), return_inverse=True)
    # float64 sums of integer counts are exact below 2**53
    counts = np.bincount(inverse, weights=np.concatenate([a[1], b[1]]), minlength=len(values))
    return values, counts.astype(np.int64)


def quantiles_at(summary: dict, qs: np.ndarray) -> np.ndarray:
    """The smallest summarized value whose estimated rank reaches ``q * n`` for each ``q``."""
    if summary["n"] == 0:
        return np.zeros(len(qs))
    cum = np.cumsum(summary["weights"])
    idx = np.searchsorted(cum, np.asarray(qs, dtype=np.float64) * summary["n"], side="left")
    return summary["values"][np.minimum(idx, len(cum) - 1)]


def bucket_boundaries(summary: dict, num_buckets: int) -> np.ndarray:
    """``num_buckets - 1`` quantile boundaries (deduplicated, float32-exact) for bucketizing."""
    qs = np.arange(1, num_buckets) / num_buckets
    b = quantiles_at(summary, qs).astype(np.float32) + np.float32(0)  # -0.0 -> 0.0, as in min()
    return np.unique(b).astype(np.float64)
