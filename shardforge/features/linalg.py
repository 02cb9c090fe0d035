"""Covariance and PCA of a fixed-shape numeric value (``tft.covariance``, ``tft.pca``), and
exact sums (``tft.sum``).

The analyzers keep exact integer sums of every ``x_i`` and every exact product ``x_i * x_j``
(Dekker's error-free product: the float64 product plus its rounding error), so the covariance
is the exact covariance of the float64 rows, rounded once: identical for any batching, worker
count and merge order, without the cancellation of ``E[xx^T] - uu^T`` that tf.Transform's
float64 sums suffer at a large offset.

>>> proj = pca_projection(Input("emb", "float32", (64,), default=0.0), output_dim=8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import _SUM_SHIFT, Boundaries, NumericStats
from shardforge.features.column import Column, Input, Output, check_int

_STATS = NumericStats()


class Covariance:
    """``tft.covariance``: the ``dim x dim`` population covariance matrix of rows of ``dim``
    finite values (``E[x x^T] - E[x] E[x]^T``), exact (see the module docstring), rounded once
    to float64; zeros over no rows, as tf.Transform. State: the matrix row-major as a
    :class:`Boundaries`.

    >>> an = Covariance(2)
    >>> an.extract(an.add_batch(an.create(), np.array([[0, 0], [4, 0], [2, -2], [2, 2.0]]))).values
    (2.0, 0.0, 0.0, 2.0)
    """

    reads_data = True

    def __init__(self, dim: int) -> None:
        self.dim = check_int(dim, "Covariance dim")

    def create(self) -> dict:
        pairs = self.dim * (self.dim + 1) // 2
        return {"n": 0, "x": [_STATS.create() for _ in range(self.dim)],
                "xx": [_STATS.create() for _ in range(pairs)]}

    def add_batch(self, acc: dict, values: np.ndarray) -> dict:
        x = np.asarray(values, dtype=np.float64).reshape(-1, self.dim)
        acc["n"] += len(x)
        for i in range(self.dim):
            _STATS.add_batch(acc["x"][i], x[:, i])
        for p, (i, j) in enumerate(zip(*np.triu_indices(self.dim))):
            _STATS.add_batch(acc["xx"][p], np.concatenate(two_product(x[:, i], x[:, j])))
        return acc

    def merge(self, accs) -> dict:
        accs = list(accs)
        return {"n": sum(a["n"] for a in accs),
                "x": [_STATS.merge([a["x"][i] for a in accs]) for i in range(self.dim)],
                "xx": [_STATS.merge([a["xx"][p] for a in accs])
                       for p in range(len(accs[0]["xx"]) if accs else 0)]}

    def matrix(self, acc: dict) -> np.ndarray:
        """The covariance matrix (float64) of an accumulator."""
        n, d = acc["n"], self.dim
        cov = np.zeros((d, d))
        if n == 0:
            return cov
        sx = [a["sum"] for a in acc["x"]]  # sum(x_i) * 2**1074, exact
        for p, (i, j) in enumerate(zip(*np.triu_indices(d))):
            # n² · cov · 2**2148 = n · sum(x_i x_j) · 2**2148 - sum(x_i) sum(x_j) · 2**2148
            num = n * (acc["xx"][p]["sum"] << _SUM_SHIFT) - sx[i] * sx[j]
            cov[i, j] = cov[j, i] = _ratio(num, n * n << (2 * _SUM_SHIFT))
        return cov

    def extract(self, acc: dict) -> Boundaries:
        return Boundaries(tuple(self.matrix(acc).ravel().tolist()))


def two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(p, e)`` with ``p = fl(a * b)`` and ``p + e == a * b`` exactly (Dekker's product with
    Veltkamp's split; exact while nothing overflows or underflows)."""
    p = a * b
    with np.errstate(over="ignore", invalid="ignore"):
        ca, cb = _SPLIT * a, _SPLIT * b
        a_hi, b_hi = ca - (ca - a), cb - (cb - b)
        a_lo, b_lo = a - a_hi, b - b_hi
        e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, np.where(np.isfinite(e), e, 0.0)


_SPLIT = 134217729.0  # 2**27 + 1


def _ratio(num: int, den: int) -> float:
    """``num / den`` correctly rounded (Python's int division of big ints), signed."""
    return abs(num) / den * (1 if num > 0 else -1) if num else 0.0


class PCA(Covariance):
    """``tft.pca``: the ``output_dim`` eigenvectors of the covariance matrix with the largest
    eigenvalues, as the columns of a ``dim x output_dim`` matrix (``numpy.linalg.eigh``, as
    tf.Transform, so the same signs); the identity's first columns over no rows. State: the
    matrix row-major as a :class:`Boundaries`."""

    def __init__(self, dim: int, output_dim: int) -> None:
        super().__init__(dim)
        self.output_dim = check_int(output_dim, "PCA output_dim")
        if self.output_dim > self.dim:
            raise ValueError(f"PCA output_dim {output_dim} > input dim {dim}")

    def extract(self, acc: dict) -> Boundaries:
        if acc["n"] == 0:
            m = np.eye(self.dim, self.output_dim)
        else:
            vals, vecs = np.linalg.eigh(self.matrix(acc))
            m = vecs[:, np.argsort(vals)[::-1]][:, : self.output_dim]
        return Boundaries(tuple(m.ravel().tolist()))


@dataclass(frozen=True)
class PCAProjection(Column):
    """Rows of ``dim`` values projected on their ``output_dim`` principal components:
    ``x @ tft.pca(x, output_dim)`` (float32, shape ``[output_dim]``)."""

    source_input: Input | Column
    dim: int
    output_dim: int
    name: str
    column_type = "pca"

    def inputs(self) -> tuple[Input | Column, ...]:
        return (self.source_input,)

    def analyzers(self) -> dict[str, Any]:
        return {"pca": PCA(self.dim, self.output_dim)}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> np.ndarray:
        m = np.asarray(state["pca"].values, dtype=np.float64).reshape(self.dim, self.output_dim)
        x = np.asarray(values[0], dtype=np.float64).reshape(-1, self.dim)
        return (x @ m).astype(np.float32)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        if inputs[0].varlen or int(np.prod(inputs[0].shape)) != self.dim:
            raise ValueError(f"pca_projection({self.name!r}) needs rows of shape ({self.dim},), "
                             f"got {inputs[0].shape}")
        return Output.numeric((self.output_dim,))


def pca_projection(x: Input | Column, output_dim: int, dim: int | None = None,
                   name: str | None = None) -> PCAProjection:
    """``tf.matmul(x, tft.pca(x, output_dim))``: each row projected on the principal
    components, learned in the one analyze pass. ``dim``: the row width (read from an
    ``Input``'s shape).

    >>> proj = pca_projection(Input("emb", "float32", (64,), default=0.0), output_dim=8)
    """
    if dim is None:
        if not isinstance(x, Input) or len(x.shape) != 1:
            raise ValueError("pca_projection needs dim= unless x is an Input of shape (dim,)")
        dim = x.shape[0]
    dim = check_int(dim, "pca_projection dim")
    k = check_int(output_dim, "pca_projection output_dim")
    if k > dim:
        raise ValueError(f"pca_projection: output_dim {k} > dim {dim}")
    return PCAProjection(x, dim, k, name or f"{x.name}_pca{k}")


class Sum:
    """``tft.sum``: the sum of the values, exact (integer sums, see
    :class:`~shardforge.features.analyzers.NumericStats`) and rounded once; ``dim > 1`` sums
    each of ``dim`` element positions apart (``reduce_instance_dims=False``). Non-finite values
    give ``inf`` / NaN as IEEE sums do. State: the sums as a :class:`Boundaries`.

    >>> an = Sum()
    >>> an.extract(an.add_batch(an.create(), np.array([1e16, 1.0, -1e16]))).values
    (1.0,)
    """

    reads_data = True

    def __init__(self, dim: int = 1) -> None:
        self.dim = check_int(dim, "Sum dim")

    def create(self) -> list:
        return [_STATS.create() for _ in range(self.dim)]

    def add_batch(self, acc: list, values: np.ndarray) -> list:
        x = np.asarray(values, dtype=np.float64).reshape(-1, self.dim)
        for i in range(self.dim):
            _STATS.add_batch(acc[i], x[:, i])
        return acc

    def merge(self, accs) -> list:
        accs = list(accs)
        return [_STATS.merge([a[i] for a in accs]) for i in range(self.dim)]

    def extract(self, acc: list) -> Boundaries:
        sums = []
        for a in acc:
            if a["posinf"] or a["neginf"]:
                sums.append(math.nan if a["posinf"] and a["neginf"] else
                            math.inf if a["posinf"] else -math.inf)
            else:
                sums.append(_ratio(a["sum"], 1 << _SUM_SHIFT))
        return Boundaries(tuple(sums))
