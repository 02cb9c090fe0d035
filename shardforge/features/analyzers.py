"""Mergeable analyzers: ``create() / add_batch(acc, values) / merge(accs) / extract(acc)``.

Each analyzer learns one statistic over the flat values of a column in a single pass. Accumulators
are plain dicts of numpy arrays and Python scalars, so they pickle (Beam ships them between
workers) and merge in any tree. All results are deterministic for a given input order and merge
tree.

- :class:`NumericStats`: count, missing (NaN), mean and variance (Chan et al.'s parallel update,
  each batch reduced in float64 with two passes), min and max.
- :class:`Vocabulary`: values with counts, most frequent first, ties broken by value. Exact by
  default; ``capacity=m`` keeps a bounded Misra-Gries summary (counts underestimated by at most
  ``N / (m + 1)``, any value with frequency above that is kept).
- :class:`Quantiles`: a deterministic compactor hierarchy (MRL/KLL-style, fixed capacity ``2k``
  per level). Compacting a sorted level-``h`` buffer keeps every other item with double weight,
  which moves any rank by at most ``2**h``; the sketch adds up these amounts, so ``extract``
  returns a *proven* rank-error bound ``eps`` (fraction of the count). At most ``N / (2k)`` per
  level over ``log2(N / 2k) + 1`` levels: with the default ``k = 4096`` and 1M values,
  ``eps <= 0.1%``.
"""

from __future__ import annotations

import numpy as np

from shardforge.features.hashing import (
    StrBuf,
    _verify_equal,
    fingerprint64,
    group_fingerprints,
)


class NumericStats:
    """Count, missing count, mean, variance, min, max of float values (NaN = missing)."""

    def create(self) -> dict:
        return {"count": 0, "missing": 0, "mean": 0.0, "m2": 0.0, "min": np.inf, "max": -np.inf}

    def add_batch(self, acc: dict, values: np.ndarray) -> dict:
        x = np.asarray(values, dtype=np.float64).ravel()
        nan = np.isnan(x)
        n_missing = int(nan.sum())
        if n_missing:
            x = x[~nan]
        acc["missing"] += n_missing
        if len(x):
            mean = float(x.mean())
            part = {
                "count": len(x),
                "mean": mean,
                "m2": float(np.square(x - mean).sum()),
                "min": float(x.min()),
                "max": float(x.max()),
                "missing": 0,
            }
            _combine_moments(acc, part)
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        for acc in accs:
            out["missing"] += acc["missing"]
            _combine_moments(out, acc)
        return out

    def extract(self, acc: dict) -> dict:
        n = acc["count"]
        var = acc["m2"] / n if n else 0.0
        return {
            "count": n,
            "missing": acc["missing"],
            "mean": acc["mean"] if n else 0.0,
            "std": float(np.sqrt(var)),
            "min": acc["min"] if n else 0.0,
            "max": acc["max"] if n else 0.0,
        }


def _combine_moments(acc: dict, part: dict) -> None:
    # Chan, Golub & LeVeque: exact merge of (count, mean, M2) without catastrophic cancellation.
    na, nb = acc["count"], part["count"]
    if nb == 0:
        return
    n = na + nb
    delta = part["mean"] - acc["mean"]
    acc["mean"] = acc["mean"] + delta * nb / n
    acc["m2"] = acc["m2"] + part["m2"] + delta * delta * na * nb / n
    acc["count"] = n
    acc["min"] = min(acc["min"], part["min"])
    acc["max"] = max(acc["max"], part["max"])


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
    """Mergeable quantile sketch with a tracked, proven rank-error bound (see module docstring)."""

    def __init__(self, k: int = 4096) -> None:
        if k < 8:
            raise ValueError(f"quantile sketch k must be >= 8, got {k}")
        self.k = k

    def create(self) -> dict:
        return {"levels": [], "parity": [], "n": 0, "err": 0.0}

    def add_batch(self, acc: dict, values: np.ndarray) -> dict:
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        if len(x) == 0:
            return acc
        self._push(acc, 0, x)
        acc["n"] += len(x)
        self._compact(acc)
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        for acc in accs:
            for h, buf in enumerate(acc["levels"]):
                self._push(out, h, buf)
                out["parity"][h] ^= acc["parity"][h]
            out["n"] += acc["n"]
            out["err"] += acc["err"]
        self._compact(out)
        return out

    @staticmethod
    def _push(acc: dict, h: int, x: np.ndarray) -> None:
        while len(acc["levels"]) <= h:
            acc["levels"].append(np.zeros(0, dtype=np.float64))
            acc["parity"].append(0)
        acc["levels"][h] = np.concatenate([acc["levels"][h], x])

    def _compact(self, acc: dict) -> None:
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
    b = quantiles_at(summary, qs).astype(np.float32)
    return np.unique(b).astype(np.float64)
