"""Tukey HH parameters and Gaussianization: ``tft.tukey_location``, ``tft.tukey_scale``,
``tft.tukey_h_params`` and ``tft.scale_to_gaussian``.

The parameters come from the first four L-moments of the values, as tf.Transform's: ``x`` is
modelled as ``location + scale * u * exp(h u^2 / 2)`` of a standard normal ``u`` (``hl`` left of
0, ``hr`` right), ``hl, hr`` found by tf.Transform's search on the L-skewness and L-kurtosis.
tf.Transform computes the sample L-moments of each batch and averages them across batches, so
its parameters depend on the batching; shardforge computes the sample L-moments of the whole
data set (Hosking's unbiased estimators over the exact sorted values of
:class:`~shardforge.features.analyzers.Quantiles`), the same for any batching. With one batch
the two agree.

>>> g = scale_to_gaussian(Input("income", "float32", default=0.0))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import Quantiles
from shardforge.features.column import Column, Input, Output
from shardforge.features.per_key import _pairs, _PerKey, _reshaped, per_key_rows

# --------------------------------------------------------------------------- L-moments


def l_moments(values: np.ndarray, counts: np.ndarray) -> tuple[float, float, float, float, int]:
    """Hosking's unbiased sample L-moments ``(l1, l2, l3, l4, n)`` of the sorted distinct
    ``values`` with their ``counts``: ``b_r = 1/n sum C(i-1, r) / C(n-1, r) x_(i)``, the
    binomial weights of a run of equal values summed exactly (``sum_{j=s}^{e} C(j, r) =
    C(e+1, r+1) - C(s, r+1)``); zeros where ``n`` is too small for a moment."""
    n = int(np.sum(counts))
    b = [0.0, 0.0, 0.0, 0.0]
    if n == 0:
        return 0.0, 0.0, 0.0, 0.0, 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
    for r in range(4):
        if n - 1 < r:
            break
        den = math.comb(n - 1, r) * n
        b[r] = math.fsum(
            v * ((math.comb(s + c, r + 1) - math.comb(s, r + 1)) / den)
            for v, s, c in zip(values.tolist(), starts, np.asarray(counts).tolist()))
    l1 = b[0]
    l2 = 2 * b[1] - b[0] if n > 1 else 0.0
    l3 = 6 * b[2] - 6 * b[1] + b[0] if n > 2 else 0.0
    l4 = 20 * b[3] - 30 * b[2] + 12 * b[1] - b[0] if n > 3 else 0.0
    return l1, l2, l3, l4, n


# --------------------------------------------------------------------------- Tukey HH
# tf.Transform's gaussianization.py, in float64: the L-moments of a Tukey HH distribution and
# the search for its h parameters.

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def tukey_hh_l_mean_and_scale(hl: float, hr: float) -> tuple[float, float]:
    """The L-mean and L-scale of the Tukey HH distribution with parameters ``hl, hr``."""
    l1 = _INV_SQRT_2PI * (1.0 / (hl - 1.0) + 1.0 / (1.0 - hr))
    l2 = _INV_SQRT_2PI * (
        (math.sqrt(2.0 - hl) + math.sqrt(2.0 - hr) - hl * math.sqrt(2.0 - hl)
         - hr * math.sqrt(2 - hr))
        / ((hl - 1.0) * (hr - 1.0) * math.sqrt((hl - 2.0) * (hr - 2.0))))
    return l1, l2


def _tukey_hh_l_skewness_and_kurtosis(hl: float, hr: float) -> np.ndarray:
    def skewness_num(h1, h2):
        return (12 * math.sqrt(2.0 - h1) * (h2 - 2.0) * (h2 - 1.0)
                * math.atan(1.0 / math.sqrt(2.0 - h1)))

    def den_part(h):
        return h * math.sqrt(2 - h) - math.sqrt(2 - h)

    skewness = ((skewness_num(hl, hr) - math.pi * (hl - hr) * (hl - 2.0) * (hr - 2.0)
                 - skewness_num(hr, hl))
                / (2 * math.pi * math.sqrt((hl - 2.0) * (hr - 2.0))
                   * (den_part(hl) + den_part(hr))))
    k1 = (hr * math.sqrt((hl - 4.0) * (hl - 2.0) * (hl - 1.0) * (hr - 2.0))
          - 2.0 * math.sqrt((hl - 4.0) * (hl - 1.0)))
    k2 = (hl * (hl - 3.0) * math.sqrt((hl - 4.0) * (hl - 1.0))
          + math.sqrt((hl - 4.0) * (hl - 2.0) * (hl - 1.0) * (hr - 2.0)))
    k3 = (30.0 * (hl - 1.0) * math.sqrt((hl - 4.0) * (hl - 2.0) * (hr - 2.0) / (hl - 1.0))
          * (hr - 1.0) * math.atan(math.sqrt(1.0 + 2.0 / (hl - 4.0))))
    k4 = (30.0 * (hl - 2) * math.sqrt((hl - 4.0) * (hl - 1.0)) * (hl - 1.0)
          * math.atan(math.sqrt(1.0 + 2.0 / (hr - 4.0))))
    kden = (math.pi * math.sqrt((4.0 - hl) * (2.0 - hl) * (1.0 - hl))
            * (den_part(hl) + den_part(hr)))
    kurtosis = (6.0 * math.pi * (k1 - k2) + k3 + k4) / kden
    return np.array([skewness, kurtosis])


def _binary_search(error_fn, low: float, high: float) -> tuple[float, float]:
    for _ in range(11):  # tf.Transform: at most 10 steps past the first, 1e-6 tolerances
        mid = (low + high) / 2.0
        err = error_fn(mid)
        if err < 0.0:
            low = mid
        else:
            high = mid
        if abs(err) < 1e-6 or high - low < 1e-6:
            break
    return low, high


def _errors(h: float, delta_h: float, target: np.ndarray) -> np.ndarray:
    return _tukey_hh_l_skewness_and_kurtosis(h - delta_h, h) - target


def tukey_hh_params(l_skewness: float, l_kurtosis: float) -> tuple[float, float]:
    """tf.Transform's ``compute_tukey_hh_params``: ``(hl, hr)`` whose Tukey HH distribution
    has this L-skewness and L-kurtosis (0, 0 below the normal's L-kurtosis 0.1226017)."""
    if l_kurtosis < 0.1226017:
        return 0.0, 0.0
    swap = l_skewness < 0.0
    target = np.array([abs(l_skewness), min(l_kurtosis, 1.0 - 1.0e-5)])
    initial_h = 3.0 - 1.0 / math.cos(math.pi / 15.0 * (target[1] - 6.0))
    params = np.array([initial_h, 0.0])
    lo = np.array([initial_h, 0.0])
    hi = np.array([1.0 - 1.0e-7, initial_h])
    previous = np.zeros(2)
    for _ in range(20):
        if _errors(params[0], hi[1], target)[0] > 0.0:
            _, high_delta = _binary_search(lambda d: _errors(params[0], d, target)[0],
                                           lo[1], hi[1])
            params[1] = hi[1] = high_delta
            found = True
        else:
            params[1] = lo[1] = hi[1]
            found = False
        low_h, high_h = _binary_search(lambda h: _errors(h, params[1], target)[1], lo[0], hi[0])
        if found:
            params[0] = hi[0] = high_h
        else:
            params[0] = lo[0] = low_h
            hi[1] = low_h
            low_delta, _ = _binary_search(lambda d: _errors(params[0], d, target)[0],
                                          lo[1], hi[1])
            params[1] = lo[1] = low_delta
            low_h, _ = _binary_search(lambda h: _errors(h, params[1], target)[1], lo[0], hi[0])
            params[0] = lo[0] = low_h
        error = _errors(params[0], params[1], target)
        delta = params - previous
        previous = params.copy()
        if np.all(np.abs(error) < 1e-6) or np.all(np.abs(delta) < 1e-6):
            break
    hl, hr = params[0] - params[1], params[0]
    return (hr, hl) if swap else (hl, hr)


def tukey_parameters(values: np.ndarray, counts: np.ndarray) -> tuple[float, ...]:
    """``(location, scale, hl, hr, std)`` of sorted distinct values with counts, as
    tf.Transform's ``_LMomentsCombiner.extract_output`` (plus the population std, which
    ``scale_to_gaussian`` divides by when neither tail is long)."""
    l1, l2, l3, l4, n = l_moments(values, counts)
    valid_scale = l2 > 0.0
    valid = valid_scale and n > 3
    hl, hr = tukey_hh_params(l3 / l2 if valid else 0.0, l4 / l2 if valid else 0.0)
    mean_hh, scale_hh = tukey_hh_l_mean_and_scale(hl, hr)
    scale = l2 / scale_hh if valid_scale else 1.0
    mean = l1
    var = (math.fsum(c * (v - mean) ** 2 for v, c in zip(values.tolist(), counts.tolist())) / n
           if n else 0.0)
    return (float(l1 - scale * mean_hh), float(scale), float(hl), float(hr),
            math.sqrt(var))


class TukeyParams(_PerKey):
    """``tft.tukey_location / tukey_scale / tukey_h_params`` per key (the element position for
    ``elementwise``, a single key 0 otherwise): ``values`` holds each key's ``location,
    scale, hl, hr, std`` (see :func:`tukey_parameters`). Exact sorted values while a key has
    at most ``exact_capacity`` distinct values (then the histogram's bucket midpoints)."""

    def __init__(self, part: str, exact_capacity: int = 1 << 18) -> None:
        super().__init__(part)
        self.inner = Quantiles(2, exact_capacity)

    def _row(self, inner_acc: Any) -> tuple[float, ...]:
        if inner_acc["hist"] is None:
            values, counts = inner_acc["exact"]
        else:
            _, _, counts, lo, hi = inner_acc["hist"]
            values = (lo + hi) / 2
        return tukey_parameters(np.asarray(values, np.float64), np.asarray(counts))


# --------------------------------------------------------------------------- scale_to_gaussian


def lambert_w(x: np.ndarray) -> np.ndarray:
    """The principal branch of Lambert's W for ``x >= 0``: tf.Transform's initial guess and 8
    Newton steps."""
    x = np.asarray(x, np.float64)
    e, inv_e = math.e, 1.0 / math.e
    s = (math.e - 1.0) / (math.e ** 2 - 1.0)
    c = 1 / math.e * (1 - s)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(x)
        w = np.where(x < inv_e, x, np.where(x < e, s * x + c,
                                             log_s + (1.0 / log_s - 1.0) * np.log(log_s)))
        for _ in range(8):
            expw = np.exp(w)
            wexpw = w * expw
            w = w - (wexpw - x) / (expw + wexpw)
    return w


def inverse_tukey_hh(x: np.ndarray, hl: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """``u`` with ``x = u exp(h u^2 / 2)`` (``h = hl`` for ``x < 0``, else ``hr``)."""
    def one_side(v, h):
        hx2 = h * v * v
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(hx2 < 1.0e-7, v, np.sqrt(lambert_w(hx2) / h))

    return np.where(x < 0.0, -one_side(-x, hl), one_side(x, hr))


@dataclass(frozen=True)
class GaussianScaled(Column):
    """``tft.scale_to_gaussian(x, elementwise)``: ``(x - location) / scale`` through the
    inverse Tukey HH transform (divided by the std instead of the Tukey scale when neither
    tail is long), so a long-tailed column comes out close to a standard normal. float32."""

    source_input: Input | Column
    name: str
    elementwise: bool = False
    column_type = "scale_to_gaussian"

    def inputs(self) -> tuple[Input | Column, ...]:
        return (self.source_input,)

    def analyzers(self) -> dict[str, Any]:
        return {"keys": TukeyParams("keys"), "values": TukeyParams("values")}

    def _pairs(self, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        if self.elementwise:
            return _pairs(values, True)
        x, _ = _pairs(values, True)
        return x, np.zeros(len(x), np.int64)

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        pairs = self._pairs(values)
        return {"keys": pairs, "values": pairs}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        x, keys = self._pairs(values)
        _, p = per_key_rows(state, keys, 5)
        loc, scale, hl, hr, std = p.T
        den = np.where((hl > 0.0) | (hr > 0.0), scale, std)
        num = x - loc
        scaled = np.where(den != 0, num / np.where(den != 0, den, 1.0), num)
        return _reshaped(inverse_tukey_hh(scaled, hl, hr).astype(np.float32), values[0])

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        if inputs[0].varlen and self.elementwise:
            raise ValueError(f"scale_to_gaussian({self.name!r}, elementwise=True) needs a "
                             "fixed shape (as tf.Transform)")
        if inputs[0].varlen:
            return Output("numeric", "float32", (), True, layer="none")
        return Output.numeric(inputs[0].shape)


def scale_to_gaussian(x: Input | Column, elementwise: bool = False,
                      name: str | None = None) -> GaussianScaled:
    """``tft.scale_to_gaussian(x, elementwise)`` (see :class:`GaussianScaled`).

    >>> g = scale_to_gaussian(Input("income", "float32", default=0.0))
    """
    if not isinstance(x, (Input, Column)):
        raise ValueError(f"scale_to_gaussian needs an Input or a numeric column, got {x!r}")
    return GaussianScaled(x, name or f"{x.name}_gaussian", bool(elementwise))
