"""Histograms and density estimates: ``tft.histogram`` and ``tft.estimated_probability_density``.

Bins follow tf.Transform's rule to the float32 bit: with boundaries ``b`` (``n + 1`` values,
``n`` bins) shifted down by ``1e-4`` in float32, a value's bin is the number of inner shifted
boundaries ``b[1..n-1] - 1e-4`` below it, so values below ``b[0]`` count in the first bin and
values from ``b[n]`` on in the last. Categorical histograms count each distinct value.

>>> density = estimated_probability_density(numeric("x", default=0.0), range(0, 101, 10))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import Vocab
from shardforge.features.column import Column, Input, Output
from shardforge.features.per_key import KeyedStats


def histogram_bins(x: np.ndarray, boundaries: Sequence[float]) -> np.ndarray:
    """tf.Transform's histogram bin of each value (int64 in ``[0, len(boundaries) - 2]``)."""
    shifted = np.asarray(boundaries, dtype=np.float32) - np.float32(1e-4)
    return np.searchsorted(shifted[1:-1], np.asarray(x).astype(np.float32).ravel(),
                           side="left").astype(np.int64)


class Histogram:
    """``tft.histogram(x, boundaries)``: how many values fall in each of the
    ``len(boundaries) - 1`` bins (see the module docstring). State: a :class:`Vocab` of the
    bin indices ``0..n-1`` with their counts. Exact counts: any batching and order.

    >>> an = Histogram(range(5))
    >>> an.extract(an.add_batch(an.create(), np.array([0, 1, 0, 1, 0, 3, 0, 1]))).counts.tolist()
    [4, 3, 0, 1]
    """

    reads_data = True

    def __init__(self, boundaries: Sequence[float]) -> None:
        b = tuple(float(v) for v in boundaries)
        if len(b) < 2 or any(b2 < b1 for b1, b2 in zip(b, b[1:])):
            raise ValueError(f"histogram boundaries must be at least 2 sorted values, got {b}")
        self.boundaries = b

    def create(self) -> dict:
        return {"counts": np.zeros(len(self.boundaries) - 1, np.int64)}

    def add_batch(self, acc: dict, values: np.ndarray) -> dict:
        bins = histogram_bins(values, self.boundaries)
        acc["counts"] = acc["counts"] + np.bincount(bins, minlength=len(acc["counts"]))
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        for acc in accs:
            out["counts"] = out["counts"] + acc["counts"]
        return out

    def extract(self, acc: dict) -> Vocab:
        n = len(acc["counts"])
        return Vocab(list(range(n)), acc["counts"], n, dtype="int64")


@dataclass(frozen=True)
class ProbabilityDensity(Column):
    """``tft.estimated_probability_density``: each value's density estimate, the share of the
    analyzed values in its bin divided by the mean bin width (``categorical``: the share of
    values equal to it, 0 for a value not seen). float32, one value per row."""

    source_input: Input | Column
    name: str
    boundaries: tuple[float, ...] = ()
    categorical: bool = False
    column_type = "probability_density"
    reads_strbuf = False

    def inputs(self) -> tuple[Input | Column, ...]:
        return (self.source_input,)

    def analyzers(self) -> dict[str, Any]:
        if self.categorical:
            return {"keys": KeyedStats("keys")}
        return {"histogram": Histogram(self.boundaries)}

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        x = np.asarray(values[0])
        if self.categorical:
            return {"keys": (np.zeros(len(x)), x)}
        return {"histogram": x}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> np.ndarray:
        x = np.asarray(values[0])
        if self.categorical:
            keys = state["keys"]
            counts = np.asarray(keys.counts, dtype=np.float32)
            if not len(counts):
                return np.zeros(len(x), np.float32)
            probs = np.r_[counts / np.float32(counts.sum()), np.float32(0)].astype(np.float32)
            return probs[keys.lookup(x)]  # id -1 (unseen) reads the trailing 0
        counts = np.asarray(state["histogram"].counts, dtype=np.float32)
        shifted = np.asarray(self.boundaries, dtype=np.float32) - np.float32(1e-4)
        width = (shifted[-1] - shifted[0]) / np.float32(len(counts))
        with np.errstate(invalid="ignore", divide="ignore"):
            density = (counts / np.float32(counts.sum())) / width
        return density.astype(np.float32)[histogram_bins(x, self.boundaries)].reshape(x.shape)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        if inputs[0].varlen or inputs[0].shape not in ((), (1,)):
            raise ValueError(f"estimated_probability_density({self.name!r}) needs one value a "
                             "row (as tf.Transform)")
        return Output.numeric(inputs[0].shape)


def estimated_probability_density(x: Input | Column, boundaries: Sequence[float] | None = None,
                                  categorical: bool = False,
                                  name: str | None = None) -> ProbabilityDensity:
    """``tft.estimated_probability_density(x, boundaries, categorical)``. ``boundaries``: the
    bin edges (default tf.Transform's ``0.0, 0.1, ..., 1.0``); a bin count (tf.Transform then
    reads the min and max first: two passes) is not supported. ``categorical=True``: ``x`` an
    int64 or bytes value, its frequency.

    >>> p = estimated_probability_density(Input("x", "float32", default=0.0), range(0, 101, 10))
    """
    if isinstance(boundaries, int):
        raise ValueError("estimated_probability_density: a bin count needs the min and max "
                         "first (a second pass); give the bin boundaries")
    b = tuple(np.arange(11, dtype=np.float32) / np.float32(10)) if boundaries is None else \
        tuple(float(v) for v in boundaries)
    col = ProbabilityDensity(x, name or f"{x.name}_density", () if categorical else
                             tuple(float(v) for v in b), bool(categorical))
    if not categorical:
        Histogram(col.boundaries)  # validates
    return col
