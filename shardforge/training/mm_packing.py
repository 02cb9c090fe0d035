"""Multimodal packing: image–text samples into padding-free batches under two budgets.

A vision-language micro-batch feeds two models: the vision encoder sees every image's patches
(``P`` rows of ``pixel_values``), the LM sees every token (``T``). Both want steady shapes, so a
bin holds at most ``token_budget`` LM tokens *and* at most ``patch_budget`` patches.

A **sample** is a token sequence with one *image marker* (``image_token_id``) where each of its
images goes (no marker: its images go first, as in captioning), plus its images' grids
``(t, h, w)`` in patches. In the packed batch each marker becomes a run of
``t·h·w / merge²`` placeholder tokens (``image_token_id`` repeated), the positions the projected
image features replace (Qwen2-VL's ``<|image_pad|>`` convention). The sample's LM length is its
text tokens plus those runs; its vision length is its patches.

**Planning** (:func:`plan_multimodal`, on lengths only): samples with images, by decreasing
patches, go first-fit into bins with room on both budgets; then text-only documents, longest
first, fill the token space left whole where they fit, and the rest is poured into the remaining
gaps and then into new bins, cut at bin boundaries (as ``overflow="split"`` cuts long documents).
So every bin is full of tokens but the last, and patch fill is first-fit-decreasing's. Pick the
budgets in the data's ratio of LM tokens to patches (:func:`suggest_token_budget`) and both
efficiencies reach 99% on windows of a few thousand samples.

Keys of a multimodal packed batch: those of :mod:`shardforge.training.packing` (``input_ids``,
``labels`` with -100 at each document's first token **and at every placeholder**,
``position_ids``, ``cu_seqlens``, ``max_seqlen``, ``doc_ids``, ...) plus the vision part::

    pixel_values          float32 [P, C·T·p·p]  Qwen2VLImageProcessor's layout, images in order
    image_grid_thw        int64 [n_img, 3]
    vision_cu_seqlens     int32 [n_img + 1]     each image attends only to itself
    vision_max_seqlen     int
    patch_positions       int64 [P, 2]          (row, column) of each patch in its image
    image_doc             int64 [n_img]         the document (row of cu_seqlens) of each image
    num_patches, patch_efficiency               P and P / patch_budget
    image_token_id        int

>>> plan = plan_multimodal(np.array([70, 30, 50, 20]), np.array([256, 0, 128, 0]),
...                        token_budget=100, patch_budget=256)
>>> [plan.bin(i).tolist() for i in range(len(plan))], plan.efficiency()
([[0, 1], [2, 3]], (0.85, 0.75))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import torch

from shardforge.features.state import Schema
from shardforge.records.spec import Batch, Ragged, Spec, VarLen
from shardforge.training.dataset import DocumentError
from shardforge.training.loader import ShardLoader, build_loader
from shardforge.training.packing import (
    IGNORE_INDEX,
    build_packed_batch,
    consumed_documents,
    packed_to_numpy,
    packed_to_torch,
    spec_for,
)
from shardforge.vision import (
    VisionLayout,
    decode_pixels,
    normalization_table,
    normalize_patches,
    patch_levels,
    patch_positions,
    stored_grids,
    stored_header,
)

# --------------------------------------------------------------------------------------------
# Lengths
# --------------------------------------------------------------------------------------------


class SampleError(DocumentError):
    """A sample that cannot be packed; ``index`` is its row in the planned batch."""


def image_grids(images: Ragged) -> tuple[Ragged, VisionLayout | None]:
    """The grids ``(t, h, w)`` of each sample's stored images (3 int64 per image, read from the
    headers) and their common layout (``None`` without images)."""
    values = images.values
    grids = stored_grids(values)
    layout = None
    if len(values):
        layout = stored_header(values[0])[1]
        sizes = {_sizes(v) for v in values}
        if len(sizes) > 1:
            raise ValueError(f"stored images mix patch layouts (patch, merge, temporal) "
                             f"{sorted(sizes)}: one image column layout per dataset")
    return Ragged(grids.reshape(-1), images.row_splits * 3), layout


def _sizes(data: bytes) -> tuple[int, int, int]:
    _, layout = stored_header(data)
    return layout.patch_size, layout.merge_size, layout.temporal_patch_size


def image_runs(grids: Ragged, merge_size: int) -> Ragged:
    """Placeholder tokens of each image (``t·h·w / merge²``), one row per sample, from the
    grids (a Ragged of ``3 · n_images`` int64 per sample)."""
    g = np.asarray(grids.values, dtype=np.int64).reshape(-1, 3)
    runs = g.prod(axis=1) // (merge_size * merge_size)
    return Ragged(runs, grids.row_splits // 3)


def _row_sums(values: np.ndarray, splits: np.ndarray) -> np.ndarray:
    sums = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=sums[1:])
    return sums[splits[1:]] - sums[splits[:-1]]


def sample_lengths(tokens: Ragged, grids: Ragged, image_token_id: int, merge_size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lm_lengths, patch_lengths, head_lengths)`` of each sample after marker expansion;
    the head is the sample's LM tokens up to the end of its last image run (what
    :func:`plan_multimodal` keeps in one piece with the images).

    Raises :class:`SampleError` for a sample whose markers do not match its images (markers
    without images, or some markers but not one per image).
    """
    runs = image_runs(grids, merge_size)
    n_images = runs.row_lengths()
    is_marker = np.asarray(tokens.values) == image_token_id
    markers = _row_sums(is_marker, tokens.row_splits)
    bad = (markers != n_images) & (markers != 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SampleError(i, f"sample {i} has {markers[i]} image markers (token "
                          f"{image_token_id}) but {n_images[i]} images: put one marker per "
                          f"image, or none")
    run_sum = _row_sums(runs.values, runs.row_splits)
    # markers present: each becomes its run; absent: the runs are prepended
    lm = tokens.row_lengths() - markers + run_sum
    patches = _row_sums(np.asarray(grids.values, np.int64).reshape(-1, 3).prod(axis=1),
                        runs.row_splits)
    # index of the last marker in each sample (-1: none), from the marker positions
    where = np.flatnonzero(is_marker)
    last = np.full(len(tokens), -1, dtype=np.int64)
    rows = np.searchsorted(tokens.row_splits, where, side="right") - 1
    last[rows] = where - tokens.row_splits[rows]  # later markers overwrite earlier ones
    head = np.where(markers > 0, last + 1 - markers + run_sum, run_sum)
    return lm.astype(np.int64), patches.astype(np.int64), head.astype(np.int64)


def suggest_token_budget(lm_lengths: np.ndarray, patch_lengths: np.ndarray, patch_budget: int,
                         multiple: int = 16) -> int:
    """A token budget in the data's ratio of LM tokens to patches, to the nearest ``multiple``
    (at least the longest sample's image head should fit: check with :func:`plan_multimodal`),
    so that neither budget runs dry long before the other."""
    ratio = float(np.sum(lm_lengths)) / max(float(np.sum(patch_lengths)), 1.0)
    return max(multiple, int(round(ratio * patch_budget / multiple)) * multiple)


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _plan_kernel(lm, vis, head, token_budget, patch_budget, out_doc, out_start, out_len,
                 out_bin):
    """Pieces ``(doc, start, length, bin)``; returns ``(n_pieces, n_bins)``. See the module
    docstring for the three phases."""
    n = len(lm)
    tok_free = np.empty(n + 1, dtype=np.int64)
    pat_free = np.empty(n + 1, dtype=np.int64)
    pool_doc = np.empty(n, dtype=np.int64)  # text left for phases 2-3: (doc, start, length)
    pool_start = np.empty(n, dtype=np.int64)
    pool_len = np.empty(n, dtype=np.int64)
    n_pool = 0
    n_bins = 0
    k = 0
    # phase 1: samples with images, most patches first, best fit on patches among the bins
    # with room for the sample's head (its tokens up to the end of its last image); then the
    # text after each head, shortest first, goes into the head's bin as far as it fits, the
    # rest of it continues as a piece in the pool
    img = np.flatnonzero(vis > 0)
    order = img[np.argsort(-(vis[img] * (token_budget + 1) + lm[img]), kind="mergesort")]
    home = np.empty(n, dtype=np.int64)
    want = np.zeros(n + 1, dtype=np.int64)  # tokens of the whole samples homed in each bin
    for d in order:
        whole = n_bins
        part = n_bins
        for c in range(n_bins):
            if pat_free[c] < vis[d] or tok_free[c] < head[d]:
                continue
            if want[c] + lm[d] <= token_budget:
                if whole == n_bins or pat_free[c] < pat_free[whole]:
                    whole = c
            elif part == n_bins or pat_free[c] < pat_free[part]:
                part = c
        b = whole if whole < n_bins else part
        if b == n_bins:
            tok_free[b] = token_budget
            pat_free[b] = patch_budget
            want[b] = 0
            n_bins += 1
        tok_free[b] -= head[d]
        pat_free[b] -= vis[d]
        want[b] += lm[d]
        home[d] = b
    # shortest texts first: as many samples as possible stay whole
    for d in img[np.argsort(lm[img] - head[img], kind="mergesort")]:
        b = home[d]
        take = head[d] + min(lm[d] - head[d], tok_free[b])
        tok_free[b] -= take - head[d]
        out_doc[k], out_start[k], out_len[k], out_bin[k] = d, 0, take, b
        k += 1
        if take < lm[d]:
            pool_doc[n_pool], pool_start[n_pool], pool_len[n_pool] = d, take, lm[d] - take
            n_pool += 1
    for d in range(n):
        if vis[d] == 0 and lm[d] > 0:
            pool_doc[n_pool], pool_start[n_pool], pool_len[n_pool] = d, 0, lm[d]
            n_pool += 1
    # phase 2: text, longest first, whole into the first bin where it fits
    by_len = np.argsort(-pool_len[:n_pool], kind="mergesort")
    rest = np.empty(n_pool, dtype=np.int64)
    n_rest = 0
    for j in by_len:
        b = 0
        while b < n_bins and tok_free[b] < pool_len[j]:
            b += 1
        if b < n_bins:
            tok_free[b] -= pool_len[j]
            out_doc[k], out_start[k], out_len[k], out_bin[k] = \
                pool_doc[j], pool_start[j], pool_len[j], b
            k += 1
        else:
            rest[n_rest] = j
            n_rest += 1
    # phase 3: the rest poured into the gaps, then into new bins, cut at bin boundaries
    b = 0
    for r in range(n_rest):
        j = rest[r]
        start, stop = pool_start[j], pool_start[j] + pool_len[j]
        while start < stop:
            while b < n_bins and tok_free[b] == 0:
                b += 1
            if b == n_bins:
                tok_free[b] = token_budget
                pat_free[b] = patch_budget
                n_bins += 1
            take = min(stop - start, tok_free[b])
            out_doc[k], out_start[k], out_len[k], out_bin[k] = pool_doc[j], start, take, b
            k += 1
            tok_free[b] -= take
            start += take
    return k, n_bins


@dataclass
class MultimodalPackPlan:
    """Pieces and bins, as :class:`~shardforge.training.packing.PackPlan` (same fields), plus
    each piece's patches (a sample with images is never cut: its piece has them all)."""

    piece_doc: np.ndarray
    piece_start: np.ndarray
    piece_length: np.ndarray
    piece_patches: np.ndarray
    order: np.ndarray
    bin_splits: np.ndarray
    token_budget: int
    patch_budget: int

    def __len__(self) -> int:
        return len(self.bin_splits) - 1

    def bin(self, i: int) -> np.ndarray:
        """Piece indices of bin ``i`` (in document order)."""
        return self.order[self.bin_splits[i] : self.bin_splits[i + 1]]

    def bin_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens, patches)`` of every bin."""
        bins = np.repeat(np.arange(len(self)), np.diff(self.bin_splits))
        tokens = np.bincount(bins, self.piece_length[self.order], minlength=len(self))
        patches = np.bincount(bins, self.piece_patches[self.order], minlength=len(self))
        return tokens.astype(np.int64), patches.astype(np.int64)

    def efficiency(self) -> tuple[float, float]:
        """``(token, patch)`` efficiency: real tokens (patches) / budget over all bins."""
        if len(self) == 0:
            return 1.0, 1.0
        return (float(self.piece_length.sum()) / (len(self) * self.token_budget),
                float(self.piece_patches.sum()) / (len(self) * self.patch_budget))


def plan_multimodal(lm_lengths: np.ndarray, patch_lengths: np.ndarray, *, token_budget: int,
                    patch_budget: int, head_lengths: np.ndarray | None = None
                    ) -> MultimodalPackPlan:
    """Assign samples of the given LM and patch lengths to bins (module docstring).

    ``head_lengths``: the LM tokens of each sample up to the end of its last image run (the
    part that must stay in one piece with the images; default: the whole sample). A sample
    with images must have its head fit a bin (``head <= token_budget``, ``patches <=
    patch_budget``), else :class:`SampleError` names it: raise the budgets or lower
    ``max_pixels``.
    """
    lm = np.asarray(lm_lengths, dtype=np.int64)
    vis = np.asarray(patch_lengths, dtype=np.int64)
    head = lm if head_lengths is None else np.asarray(head_lengths, dtype=np.int64)
    if token_budget < 1 or patch_budget < 1:
        raise ValueError(f"budgets must be >= 1, got tokens={token_budget}, "
                         f"patches={patch_budget}")
    too_big = (vis > 0) & ((vis > patch_budget) | (head > token_budget))
    if too_big.any():
        i = int(np.flatnonzero(too_big)[0])
        raise SampleError(i, f"sample {i} has {head[i]} LM tokens up to its last image and "
                          f"{vis[i]} patches: more "
                          f"than a bin holds (token_budget={token_budget}, "
                          f"patch_budget={patch_budget}); "
                          f"raise the budgets or lower the image column's max_pixels")
    # each phase-1 sample, each pool item, and one cut per bin at most
    cap = 2 * len(lm) + int(np.sum(-(-lm // token_budget))) + len(lm) + 1
    doc, start, length, bins = (np.empty(cap, dtype=np.int64) for _ in range(4))
    k, _ = _plan_kernel(lm, vis, head, int(token_budget), int(patch_budget), doc, start, length,
                        bins)
    doc, start, length, bins = doc[:k], start[:k], length[:k], bins[:k]
    # pieces in document order, so a bin lists its documents in the order they were read
    by_doc = np.lexsort((start, doc))
    doc, start, length, bins = doc[by_doc], start[by_doc], length[by_doc], bins[by_doc]
    patches = np.where(start == 0, vis[doc], 0)
    order = np.argsort(bins, kind="stable")
    counts = np.bincount(bins, minlength=int(bins.max()) + 1 if k else 0)
    bin_splits = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=bin_splits[1:])
    return MultimodalPackPlan(doc, start, length, patches, order, bin_splits, int(token_budget),
                              int(patch_budget))


# --------------------------------------------------------------------------------------------
# Building batches
# --------------------------------------------------------------------------------------------


def expand_markers(tokens: np.ndarray, runs: np.ndarray, image_token_id: int) -> np.ndarray:
    """A sample's LM tokens: each marker repeated to its image's run (no marker: runs first)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(runs) == 0:
        return tokens
    is_marker = tokens == image_token_id
    if not is_marker.any():
        tokens = np.concatenate([np.full(len(runs), image_token_id, np.int64), tokens])
        is_marker = tokens == image_token_id
    counts = np.ones(len(tokens), dtype=np.int64)
    counts[is_marker] = runs
    return np.repeat(tokens, counts)


def build_multimodal_batch(
    tokens: Ragged,
    images: Ragged,
    plan: MultimodalPackPlan,
    i: int,
    *,
    image_token_id: int,
    table: np.ndarray | None = None,
    doc_ids: np.ndarray | None = None,
    side_features: Mapping[str, Any] | None = None,
    levels_only: bool = False,
) -> dict[str, Any]:
    """The multimodal packed batch of bin ``i`` (module docstring): ``tokens`` (with markers)
    and ``images`` (the stored bytes of each image, see
    :func:`shardforge.vision.encode_pixels`), one row per sample of the plan.

    ``levels_only=True`` leaves ``pixel_values`` out and returns the uint8 ``pixel_levels``
    instead (what worker processes send: :func:`mm_to_torch` normalizes them).
    """
    pieces = plan.bin(i)
    p_doc, p_start, p_len = plan.piece_doc[pieces], plan.piece_start[pieces], \
        plan.piece_length[pieces]
    grids, layout = image_grids(images)
    layout = layout or VisionLayout()
    runs = image_runs(grids, layout.merge_size)
    rows = []
    levels, grid_rows, image_doc = [], [], []
    for j, (d, start) in enumerate(zip(p_doc.tolist(), p_start.tolist())):
        n_img = int(runs.row_lengths()[d])
        doc_tokens = tokens[d]
        if n_img:
            doc_tokens = expand_markers(doc_tokens, runs[d], image_token_id)
        if n_img and start == 0:  # a continuation piece holds text only
            g = np.asarray(grids[d], dtype=np.int64).reshape(-1, 3)
            for k, data in enumerate(images[d].tolist()):
                levels.append(patch_levels(decode_pixels(data), layout))
                grid_rows.append(g[k])
                image_doc.append(j)
        rows.append(doc_tokens)
    ragged = Ragged.from_rows(rows, dtype=np.int64)
    batch = build_packed_batch(ragged, np.arange(len(rows)), p_start, p_len,
                               doc_ids=(p_doc if doc_ids is None else
                                        np.asarray(doc_ids, np.int64)[p_doc]),
                               packing_length=plan.token_budget)
    batch["labels"][batch["input_ids"] == image_token_id] = IGNORE_INDEX
    grid = np.asarray(grid_rows, dtype=np.int64).reshape(-1, 3)
    n_patch = grid.prod(axis=1)
    vcu = np.zeros(len(grid) + 1, dtype=np.int32)
    np.cumsum(n_patch, out=vcu[1:])
    lv = np.concatenate(levels) if levels else \
        np.zeros((0, 3, layout.patch_size ** 2), dtype=np.uint8)
    batch.update(
        image_grid_thw=torch.from_numpy(grid),
        vision_cu_seqlens=torch.from_numpy(vcu),
        vision_max_seqlen=int(n_patch.max()) if len(n_patch) else 0,
        patch_positions=torch.from_numpy(patch_positions(grid, layout.merge_size)),
        image_doc=torch.from_numpy(np.asarray(image_doc, dtype=np.int64)),
        num_patches=int(vcu[-1]),
        patch_efficiency=float(vcu[-1]) / plan.patch_budget,
        image_token_id=int(image_token_id),
    )
    if levels_only:
        batch["pixel_levels"] = lv
        batch["temporal_patch_size"] = layout.temporal_patch_size
        batch["pixel_table"] = _table_or_default(table)
    else:
        batch["pixel_values"] = torch.from_numpy(normalize_patches(lv, layout, table))
    for name, column in (side_features or {}).items():
        if name in batch:
            raise ValueError(f"side feature {name!r} clashes with a packed-batch key")
        col = column.take(p_doc) if isinstance(column, Ragged) else np.asarray(column)[p_doc]
        batch[name] = torch.from_numpy(col) if isinstance(col, np.ndarray) and \
            col.dtype.kind in "biuf" else col
    return batch


def _table_or_default(table: np.ndarray | None) -> np.ndarray:
    return normalization_table() if table is None else np.asarray(table, np.float32)


def mm_to_numpy(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The compact picklable form (``packed_to_numpy`` plus the uint8 patch levels)."""
    return packed_to_numpy(batch)


def mm_to_torch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`mm_to_numpy`: labels masked again at placeholders, ``pixel_values``
    normalized from ``pixel_levels``."""
    batch = dict(batch)
    levels = batch.pop("pixel_levels", None)
    table = batch.pop("pixel_table", None)
    t = batch.pop("temporal_patch_size", None)
    out = packed_to_torch(batch)
    out["labels"][out["input_ids"] == out["image_token_id"]] = IGNORE_INDEX
    if levels is not None:
        p2 = levels.shape[2]
        layout = VisionLayout(patch_size=int(round(p2 ** 0.5)), temporal_patch_size=int(t))
        out["pixel_values"] = torch.from_numpy(normalize_patches(levels, layout, table))
    return out


# --------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------


@dataclass
class MultimodalWindow:
    """One planned window of samples."""

    tokens: Ragged
    images: Ragged
    side: dict[str, Any]
    doc_ids: np.ndarray
    plan: MultimodalPackPlan

    def __len__(self) -> int:
        return len(self.plan)


@dataclass(frozen=True)
class MultimodalPacker:
    """Multimodal packed batches for :class:`~shardforge.training.dataset.ShardDataset`: each
    window of ``lookahead`` samples is planned under both budgets and read bin by bin, resumable
    exactly like text (a sample counts as consumed once all its pieces were).

    ``token_feature``: int64 tokens with image markers; ``image_feature``: the stored images
    of an ``sf.image`` column (their headers give grids and patch layout). ``mean`` / ``std``:
    the normalization (default: the image column's, from the job's schema; CLIP's constants for
    shards without one).

    >>> packer = MultimodalPacker(token_budget=4096, patch_budget=16384, image_token_id=3)
    >>> ds = ShardDataset("out/train", packer=packer)              # doctest: +SKIP
    """

    token_budget: int
    patch_budget: int
    image_token_id: int
    token_feature: str = "tokens"
    image_feature: str = "image"
    side_features: Sequence[str] = ()
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    lookahead: int = 4096

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (the schema's)")
        if self.lookahead < 1:
            raise ValueError(f"lookahead must be >= 1, got {self.lookahead}")

    def bind(self, schema: Schema | Spec) -> MultimodalPacker:
        """The packer with the image column's normalization from ``schema`` unless given."""
        from shardforge.vision import CLIP_MEAN, CLIP_STD, image_normalization

        if self.mean is not None:
            return self
        mean, std = (image_normalization(schema, self.image_feature)
                     if isinstance(schema, Schema) else (CLIP_MEAN, CLIP_STD))
        return dataclasses.replace(self, mean=mean, std=std)

    def features(self, spec: Spec) -> Spec:
        """The tokens, the side features and the stored images."""
        decoded = spec_for(self.token_feature, self.side_features, spec)
        if self.image_feature not in spec:
            raise KeyError(f"image feature {self.image_feature!r} is not in the spec "
                           f"({sorted(spec)})")
        return {**decoded, self.image_feature: VarLen("bytes")}

    def layout(self) -> dict:
        """The settings that decide how a window is cut into batches."""
        return {"token_budget": self.token_budget, "patch_budget": self.patch_budget,
                "image_token_id": self.image_token_id}

    def plan(self, docs: Batch, doc_ids: np.ndarray, layout: Mapping[str, Any]
             ) -> MultimodalWindow:
        """Bins of one window of decoded samples under ``layout``."""
        tokens, images = docs[self.token_feature], docs[self.image_feature]
        side = {name: column for name, column in docs.items()
                if name not in (self.token_feature, self.image_feature)}
        grids, vision = image_grids(images)
        lm, vis, head = sample_lengths(tokens, grids, layout["image_token_id"],
                                       (vision or VisionLayout()).merge_size)
        plan = plan_multimodal(lm, vis, token_budget=layout["token_budget"],
                               patch_budget=layout["patch_budget"], head_lengths=head)
        return MultimodalWindow(tokens, images, side, doc_ids, plan)

    def batch(self, window: MultimodalWindow, i: int) -> dict[str, Any]:
        """Batch ``i`` of ``window``, compact (:func:`mm_to_numpy`'s form: uint8 levels)."""
        table = None if self.mean is None else normalization_table(self.mean, self.std)
        return mm_to_numpy(build_multimodal_batch(
            window.tokens, window.images, window.plan, i, image_token_id=self.image_token_id,
            table=table, doc_ids=window.doc_ids, side_features=window.side, levels_only=True))

    def consumed(self, window: MultimodalWindow, items: int) -> np.ndarray:
        """Samples the first ``items`` batches of ``window`` hold entirely."""
        return consumed_documents(window.plan, items, len(window.doc_ids))

    def to_torch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The multimodal packed batch (module docstring) from :meth:`batch`'s form."""
        return mm_to_torch(batch)


def multimodal_loader(source: Any, **settings: Any) -> ShardLoader:
    """Multimodal packed batches (module docstring) from the shards of a job with an
    ``sf.image`` column, resumable exactly (``state_dict`` / ``load_state_dict``):
    ``ShardDataset(source, packer=MultimodalPacker(...))`` read by a ``ShardLoader``.

    Example (a job with ``sf.text("caption")`` and ``sf.image("image")`` columns)::

        loader = multimodal_loader("out/train", token_budget=4096, patch_budget=16384,
                                   image_token_id=3, token_feature="caption")
        batch = next(iter(loader))    # pixel_values [P, 1176], image_grid_thw [n, 3], ...

    ``settings``: :class:`MultimodalPacker`'s fields (``token_budget``, ``patch_budget``,
    ``image_token_id``, ``mean`` and ``std`` defaulting to the image column's, ...),
    :class:`~shardforge.training.loader.ShardLoader`'s (``num_workers``, ...) and
    :class:`~shardforge.training.dataset.ShardDataset`'s (``seed``, ``rank``, ...).
    """
    return build_loader(source, settings, MultimodalPacker)


def hf_vlm_inputs(batch: Mapping[str, Any], pad_token_id: int = 0) -> dict[str, Any]:
    """Keyword arguments for a transformers VLM that takes ``pixel_values`` and
    ``image_grid_thw`` (Qwen2-VL, Qwen2.5-VL): the packed batch's documents as right-padded rows
    (``input_ids``, ``attention_mask``, ``labels``, ``mm_token_type_ids``), the vision part as
    is (images already in row order). These models compute their own (M-)RoPE positions from
    the attention mask, so rows keep documents apart without ``cu_seqlens``.

    >>> kwargs = hf_vlm_inputs(batch)           # doctest: +SKIP
    >>> loss = Qwen2VLForConditionalGeneration(cfg)(**kwargs).loss     # doctest: +SKIP
    """
    cu = batch["cu_seqlens"].tolist()
    n, width = len(cu) - 1, int(batch["max_seqlen"])
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.int64)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.int64)
    mask = torch.zeros((n, width), dtype=torch.int64)
    for i, (a, b) in enumerate(zip(cu, cu[1:])):
        input_ids[i, : b - a] = batch["input_ids"][a:b]
        labels[i, : b - a] = batch["labels"][a:b]
        mask[i, : b - a] = 1
    # 1 marks image tokens for the model's M-RoPE (the processor's mm_token_type_ids)
    token_types = (input_ids == int(batch["image_token_id"])).to(torch.int64) * mask
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
            "mm_token_type_ids": token_types, "pixel_values": batch["pixel_values"],
            "image_grid_thw": batch["image_grid_thw"]}
