"""Discrete image tokens (Chameleon-style early fusion): a k-means codebook of image patches
learned in the analyze pass, each patch mapped to its nearest code, the codes offset into the
text vocabulary and framed by begin/end-of-image tokens, interleaved with the text.

**Mergeable k-means.** One pass, any number of workers, merged in any tree (a Beam
``CombineFn``): an accumulator is a weighted summary of at most ``capacity`` centroids.
``add_batch`` fills the summary with the first points it sees, then assigns every further point
to its nearest centroid and moves each centroid by the incremental mean (MacQueen's k-means, the
stochastic-approximation update ``c += (x - c) / n`` with step ``1/n``, applied to a batch at
once: ``c = (n·c + Σx) / (n + m)``). ``merge`` pools the summaries and, past ``capacity``,
compresses them with weighted k-means (k-means++ seeding from a fixed seed, Lloyd iterations).
``extract`` runs the same weighted k-means down to ``k`` codes, ordered by decreasing weight.

**Token layout** of a sample (``text_vocab_size = V``, ``k`` codes)::

    text ids in [0, V) ... BOI  code+V ... code+V EOL  code+V ... EOL  EOI ... text
                           V+k  (one row of patches per line, EOL = V+k+2)    V+k+1

Each ``marker_id`` in the text becomes one image (markers must match the images); text without
markers gets its images first.

>>> import numpy as np
>>> an = KMeansCodebook(k=2, dim=1, capacity=8)
>>> acc = an.add_batch(an.create(), np.array([[0.0], [0.1], [10.0], [10.2], [9.9]]))
>>> np.round(an.extract(an.merge([acc])).values, 2)
array([10.03,  0.05])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import Boundaries
from shardforge.features.column import Column, Output, WithErrors, check_int
from shardforge.features.image import ImageColumn, image
from shardforge.records.spec import Ragged
from shardforge.vision import (
    ImageError,
    VisionLayout,
    normalization_table,
    normalize_patches,
    patch_levels,
)

_SEED = 0x5EED  # k-means++ seeding: fixed, so a given summary always compresses the same way
_LLOYD_ITERS = 20


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared L2) of each point, ties to the lowest index."""
    d = (np.einsum("ij,ij->i", points, points)[:, None] - 2.0 * points @ centroids.T
         + np.einsum("ij,ij->i", centroids, centroids)[None, :])
    return np.argmin(d, axis=1)


def weighted_kmeans(points: np.ndarray, weights: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids [≤k, D], weights)`` of weighted k-means: k-means++ seeding from a fixed
    seed, then Lloyd iterations; deterministic for given inputs."""
    n = len(points)
    if n <= k:
        return points.copy(), weights.copy()
    rng = np.random.default_rng(_SEED)
    p = weights / weights.sum()
    chosen = [int(rng.choice(n, p=p))]
    dist = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        score = dist * weights
        total = score.sum()
        nxt = int(rng.choice(n, p=score / total)) if total > 0 else int(np.argmax(weights))
        chosen.append(nxt)
        dist = np.minimum(dist, ((points - points[nxt]) ** 2).sum(axis=1))
    centroids = points[chosen].copy()
    for _ in range(_LLOYD_ITERS):
        assign = _nearest(points, centroids)
        mass = np.bincount(assign, weights, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, points * weights[:, None])
        keep = mass > 0  # an empty cluster keeps its centroid
        new = centroids.copy()
        new[keep] = sums[keep] / mass[keep, None]
        if np.array_equal(new, centroids):
            break
        centroids = new
    assign = _nearest(points, centroids)
    mass = np.bincount(assign, weights, minlength=k)
    return centroids[mass > 0], mass[mass > 0]


class KMeansCodebook:
    """Mergeable k-means over patch vectors (module docstring). ``extract`` returns the ``k ×
    dim`` codebook row-major as the state's float list (:class:`Boundaries`' field)."""

    reads_data = True

    def __init__(self, k: int, dim: int, capacity: int | None = None) -> None:
        self.k, self.dim = int(k), int(dim)
        self.capacity = int(capacity) if capacity is not None else 8 * self.k

    def create(self) -> dict:
        return {"centroids": np.zeros((0, self.dim)), "counts": np.zeros(0)}

    def add_batch(self, acc: dict, points: np.ndarray) -> dict:
        x = np.asarray(points, dtype=np.float64).reshape(-1, self.dim)
        c, n = acc["centroids"], acc["counts"]
        room = self.capacity - len(c)
        if room > 0:
            c = np.concatenate([c, x[:room]])
            n = np.concatenate([n, np.ones(min(room, len(x)))])
            x = x[room:]
        if len(x):
            assign = _nearest(x, c)
            m = np.bincount(assign, minlength=len(c)).astype(np.float64)
            sums = np.zeros_like(c)
            np.add.at(sums, assign, x)
            hit = m > 0
            c = c.copy()
            c[hit] = (n[hit, None] * c[hit] + sums[hit]) / (n[hit] + m[hit])[:, None]
            n = n + m
        return {"centroids": c, "counts": n}

    def merge(self, accs) -> dict:
        accs = list(accs)
        c = np.concatenate([a["centroids"] for a in accs]) if accs else np.zeros((0, self.dim))
        n = np.concatenate([a["counts"] for a in accs]) if accs else np.zeros(0)
        if len(c) > self.capacity:
            c, n = weighted_kmeans(c, n, self.capacity)
        return {"centroids": c, "counts": n}

    def extract(self, acc: dict) -> Boundaries:
        c, n = acc["centroids"], acc["counts"]
        if len(c) == 0:
            raise ValueError("the codebook analyzer saw no patches (no valid image?)")
        codes, weight = weighted_kmeans(c, n, self.k)
        if len(codes) < self.k:  # fewer distinct patches than codes: repeat the heaviest
            extra = np.repeat(codes[np.argmax(weight)][None], self.k - len(codes), axis=0)
            codes = np.concatenate([codes, extra])
            weight = np.concatenate([weight, np.zeros(len(extra))])
        order = np.lexsort((np.arange(len(codes)), -weight))
        return Boundaries(tuple(codes[order].ravel().tolist()))


def codebook_of(state: dict[str, Any], k: int, dim: int) -> np.ndarray:
    """The ``[k, dim]`` codebook of an ``image_tokens`` column's state."""
    return np.asarray(state["codebook"].values, dtype=np.float64).reshape(k, dim)


@dataclass(frozen=True)
class ImageTokensColumn(Column):
    """Interleaved text and discrete image tokens; see :func:`image_tokens`."""

    images: ImageColumn  # decoding, resizing and normalization of the images
    text: Column | None
    name: str
    codebook_size: int = 256
    text_vocab_size: int = 0
    marker_id: int = -1

    column_type = "image_tokens"

    @property
    def dim(self) -> int:
        return 3 * self.images.layout.patch_size ** 2

    @property
    def vocab_size(self) -> int:
        """Ids the column produces: text, codes, BOI, EOI, EOL."""
        return self.text_vocab_size + self.codebook_size + 3

    @property
    def boi(self) -> int:
        return self.text_vocab_size + self.codebook_size

    def inputs(self) -> tuple:
        return self.images.inputs() + ((self.text,) if self.text is not None else ())

    def analyzers(self) -> dict[str, Any]:
        return {"codebook": KMeansCodebook(self.codebook_size, self.dim)}

    def _patches(self, value: Any, source_dir: bytes) -> tuple[np.ndarray, int]:
        """Normalized patch vectors ``[h·w, 3·p·p]`` of one image, row-major, and ``w``."""
        layout = self.images.layout
        pixels = self.images.resized(value, source_dir)
        flat = VisionLayout(layout.patch_size, 1, 1, layout.min_pixels, layout.max_pixels)
        table = normalization_table(self.images.mean, self.images.std)
        vectors = normalize_patches(patch_levels(pixels, flat), flat, table)
        return vectors.astype(np.float64), pixels.shape[1] // layout.patch_size

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        col, dirs = values[0], values[1]
        rows = col.value_rowids()
        parts = []
        for value, row in zip(col.values, rows):
            try:
                parts.append(self._patches(value, dirs[row])[0])
            except ImageError:
                continue  # the transform sends the row to errors/
        return {"codebook": np.concatenate(parts) if parts else np.zeros((0, self.dim))}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        col, dirs = values[0], values[1]
        text = values[2] if self.text is not None else None
        codebook = codebook_of(state, self.codebook_size, self.dim)
        boi, eoi, eol = self.boi, self.boi + 1, self.boi + 2
        rows_out, bad_rows, bad_values, reasons = [], [], [], []
        for r in range(len(col)):
            images = []
            try:
                for value in col[r]:
                    vectors, w = self._patches(value, dirs[r])
                    codes = _nearest(vectors, codebook).reshape(-1, w) + self.text_vocab_size
                    lines = np.concatenate([codes, np.full((len(codes), 1), eol)], axis=1)
                    images.append(np.concatenate([[boi], lines.ravel(), [eoi]]))
            except ImageError as err:
                bad_rows.append(r)
                bad_values.append(f"{len(col[r])} images")
                reasons.append(str(err))
                rows_out.append(np.zeros(0, np.int64))
                continue
            ids = np.asarray(text[r], dtype=np.int64) if text is not None else \
                np.zeros(0, np.int64)
            rows_out.append(self._interleave(ids, images, r, bad_rows, bad_values, reasons))
        out = Ragged.from_rows(rows_out, dtype=np.int64)
        if not bad_rows:
            return out
        distinct = set(reasons)
        return WithErrors(out, np.asarray(bad_rows, np.int64),
                          [f"{v}: {m}" for v, m in zip(bad_values, reasons)],
                          distinct.pop() if len(distinct) == 1 else "image could not be used",
                          self.images.key)

    def _interleave(self, ids, images, r, bad_rows, bad_values, reasons) -> np.ndarray:
        markers = np.flatnonzero(ids == self.marker_id)
        if len(markers) == 0:
            return np.concatenate(images + [ids]).astype(np.int64)
        if len(markers) != len(images):
            bad_rows.append(r)
            bad_values.append(f"{len(markers)} markers, {len(images)} images")
            reasons.append("the text's image markers do not match its images")
            return np.zeros(0, np.int64)
        parts = np.split(ids, markers)
        out = [parts[0]]
        for img, part in zip(images, parts[1:]):
            out += [img, part[1:]]  # part starts with its marker
        return np.concatenate(out).astype(np.int64)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        if self.text is not None and inputs[2].num_buckets > self.text_vocab_size:
            raise ValueError(f"column {self.name!r}: text_vocab_size={self.text_vocab_size} is "
                             f"below the text column's {inputs[2].num_buckets} ids")
        return Output.ids(self.vocab_size, varlen=True, sequence=True)

    def schema_source(self) -> str:
        return self.images.key


def image_tokens(
    key: str,
    *,
    text: Column | None = None,
    text_vocab_size: int = 0,
    marker_id: int = -1,
    codebook_size: int = 256,
    patch_size: int = 8,
    min_pixels: int = 32 * 32,
    max_pixels: int = 64 * 64,
    resample: str = "bicubic",
    root: str | None = None,
    name: str | None = None,
) -> ImageTokensColumn:
    """Images as discrete tokens interleaved with text (Chameleon-style early fusion).

    Each image of input ``key`` is decoded and resized as by :func:`~shardforge.features.image.
    image` (``smart_resize`` to multiples of ``patch_size``), cut into ``patch_size`` patches,
    and each CLIP-normalized patch mapped to the nearest of ``codebook_size`` codes learned by
    mergeable k-means in the analyze pass. ``text``: an id column (e.g. ``sf.text``) whose ids
    are below ``text_vocab_size``; each ``marker_id`` in it becomes one image's tokens. The
    output ids (``text_vocab_size + codebook_size + 3`` of them) feed a ``PackedLM`` directly.

    >>> import shardforge.features as sf
    >>> words = sf.text("caption", vocabulary_list=["<image>", "a", "red", "circle"])
    >>> col = image_tokens("images", text=words, text_vocab_size=5, marker_id=0,
    ...                    codebook_size=64)
    >>> col.vocab_size, col.boi
    (72, 69)
    """
    check_int(codebook_size, f"image_tokens({key!r}) codebook_size", minimum=2)
    check_int(text_vocab_size, f"image_tokens({key!r}) text_vocab_size", minimum=0)
    if text is not None and text_vocab_size == 0:
        raise ValueError(f"image_tokens({key!r}): give text_vocab_size with text=")
    images = image(key, patch_size=patch_size, merge_size=1, temporal_patch_size=1,
                   min_pixels=min_pixels, max_pixels=max_pixels, resample=resample, root=root)
    return ImageTokensColumn(images, text, name or f"{key}_tokens", int(codebook_size),
                             int(text_vocab_size), int(marker_id))
