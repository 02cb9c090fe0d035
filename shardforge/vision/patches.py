"""Resized pixels to model inputs: patches in Qwen2-VL's layout, their 2D positions, the
normalization a schema holds, and the self-describing format a shard stores an image in.

>>> layout = VisionLayout(min_pixels=56 * 56, max_pixels=224 * 224)
>>> pixels = np.zeros((56, 112, 3), dtype=np.uint8)
>>> patchify(pixels, layout).shape
(32, 1176)
>>> decode_pixels(encode_pixels(pixels, layout)).shape
(56, 112, 3)
"""

from __future__ import annotations

import io
import math
import struct
from typing import Any

import numba
import numpy as np

from shardforge.vision.decode import VisionLayout, grid_of

# CLIP's constants, the defaults of Qwen2-VL's processor (OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
STORAGE = ("png", "raw")
# The keys of an image column's state: one Stats per channel (see image_normalization).
CHANNELS = ("r", "g", "b")


# --------------------------------------------------------------------------- patches


def normalization_table(mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
    """``float32 [3, 256]``: the normalized value of every uint8 level per channel, computed the
    way the processor does (``float32(v · (1/255))``, then ``(x - mean) / std`` in float32), so a
    table lookup gives its values exactly."""
    levels = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1)
    return ((levels[None, :] - m) / s).astype(np.float32)


def patchify(pixels: np.ndarray, layout: VisionLayout, table: np.ndarray | None = None
             ) -> np.ndarray:
    """``pixel_values [h·w, C·T·p·p]`` (float32) of a resized ``uint8 [H', W', 3]`` image in
    ``Qwen2VLImageProcessor``'s layout: patches ordered by merge block (block row, block column,
    then the ``merge × merge`` patches inside it), features by channel, frame, patch row, patch
    column. ``table`` is :func:`normalization_table`'s (CLIP's constants by default).
    """
    return normalize_patches(patch_levels(pixels, layout), layout, table)


def patch_levels(pixels: np.ndarray, layout: VisionLayout) -> np.ndarray:
    """The uint8 levels of :func:`patchify`'s patches, ``[h·w, 3, p·p]``, before normalization
    and the temporal repeat: an eighth of the bytes, so this is what crosses process borders."""
    p, m = layout.patch_size, layout.merge_size
    height, width = pixels.shape[:2]
    gh, gw = height // p, width // p
    if gh * p != height or width != gw * p or gh % m or gw % m:
        raise ValueError(f"image {width}x{height} is not a whole number of {p * m}-pixel blocks")
    x = pixels.reshape(gh // m, m, p, gw // m, m, p, 3)
    x = x.transpose(0, 3, 1, 4, 6, 2, 5)  # (bh, bw, mh, mw, C, ph, pw)
    return np.ascontiguousarray(x).reshape(gh * gw, 3, p * p)


def normalize_patches(levels: np.ndarray, layout: VisionLayout, table: np.ndarray | None = None
                      ) -> np.ndarray:
    """``float32 [P, C·T·p·p]`` from :func:`patch_levels`' ``uint8 [P, 3, p·p]``: one table
    lookup per value (exactly the processor's arithmetic), the frame repeated T times."""
    table = _CLIP_TABLE if table is None else np.ascontiguousarray(table, dtype=np.float32)
    levels = np.ascontiguousarray(levels, dtype=np.uint8)
    return _normalize_kernel(levels, table, layout.temporal_patch_size)


@numba.njit(cache=True, nogil=True)
def _normalize_kernel(levels, table, t):
    # one pass writing each output value once: a gather through int64 indices costs more
    n, c, p2 = levels.shape
    out = np.empty((n, c * t * p2), dtype=np.float32)
    for i in range(n):
        for ch in range(c):
            for f in range(t):
                base = (ch * t + f) * p2
                for k in range(p2):  # contiguous writes
                    out[i, base + k] = table[ch, levels[i, ch, k]]
    return out


_CLIP_TABLE = normalization_table()


def patch_positions(grid_thw: np.ndarray, merge_size: int) -> np.ndarray:
    """``int64 [P, 2]``: (row, column) of every patch of the images of ``grid_thw [n, 3]``, in
    the order of :func:`patchify` (the 2D positions MoonViT's and Qwen2-VL's rotary embedding
    read)."""
    rows = []
    m = merge_size
    for t, h, w in np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3).tolist():
        r = np.arange(h).reshape(h // m, 1, m, 1)
        c = np.arange(w).reshape(1, w // m, 1, m)
        rr, cc = np.broadcast_arrays(r, c)
        pos = np.stack([rr.reshape(-1), cc.reshape(-1)], axis=1)
        rows.append(np.tile(pos, (t, 1)))
    if not rows:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(rows).astype(np.int64)


# --------------------------------------------------------------------------- storage

# A stored image: magic, (t, h, w) in patches, (patch, merge, temporal) sizes, then the pixels
# (PNG, or raw uint8 HWC). Self-describing, so the loader plans from the 28-byte header alone.
_HEADER = struct.Struct("<4s6I")
_MAGIC_STORED = b"SFI1"


def encode_pixels(pixels: np.ndarray, layout: VisionLayout, storage: str = "png") -> bytes:
    """What a shard stores of a resized image: a 28-byte header (grid and layout) and the
    pixels, lossless PNG (compact) or raw (no decode in the loader)."""
    if storage not in STORAGE:
        raise ValueError(f"storage={storage!r}; expected one of {STORAGE}")
    t, h, w = grid_of(pixels, layout)
    head = _HEADER.pack(_MAGIC_STORED, t, h, w, layout.patch_size, layout.merge_size,
                        layout.temporal_patch_size)
    if storage == "raw":
        return head + np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", compress_level=1)
    return head + buf.getvalue()


def stored_header(data: bytes) -> tuple[tuple[int, int, int], VisionLayout]:
    """``((t, h, w), layout)`` of a stored image, from its header alone."""
    if len(data) < _HEADER.size or data[:4] != _MAGIC_STORED:
        raise ValueError("not an image stored by sf.image (bad header)")
    _, t, h, w, p, m, tp = _HEADER.unpack_from(data)
    side = h * p
    # the bounds do not matter to a stored image: it is already resized
    return (t, h, w), VisionLayout(p, m, tp, min_pixels=1, max_pixels=max(side * w * p,
                                                                          (p * m) ** 2))


def stored_grids(values: np.ndarray) -> np.ndarray:
    """``int64 [n, 3]``: the grids of stored images (headers only)."""
    out = np.empty((len(values), 3), dtype=np.int64)
    for i, data in enumerate(values):
        if len(data) < _HEADER.size or data[:4] != _MAGIC_STORED:
            raise ValueError(f"stored image {i} is not an sf.image record (bad header)")
        out[i] = _HEADER.unpack_from(data)[1:4]
    return out


def decode_pixels(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_pixels`: ``uint8 [h·p, w·p, 3]``."""
    (_, h, w), layout = stored_header(data)
    shape = (h * layout.patch_size, w * layout.patch_size, 3)
    body = memoryview(data)[_HEADER.size:]
    if bytes(body[:4]) == b"\x89PNG":
        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.uint8)
    else:
        pixels = np.frombuffer(body, dtype=np.uint8)
        if pixels.size != math.prod(shape):
            raise ValueError(f"stored image has {pixels.size} bytes, its grid {h}x{w} needs "
                             f"{math.prod(shape)}")
        pixels = pixels.reshape(shape)
    if pixels.shape != shape:
        raise ValueError(f"stored image is {pixels.shape}, its grid says {shape}")
    return pixels


def image_normalization(schema: Any, feature: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel of the image column ``feature`` from a loaded schema (what the
    loader normalizes with); a learned std of 0 (a constant channel) reads as 1."""
    states = schema.state.columns.get(feature, {})
    if not all(c in states for c in CHANNELS):
        raise KeyError(f"schema has no image normalization for {feature!r} (is it an sf.image "
                       f"column?); columns with state: {sorted(schema.state.columns)}")
    mean = tuple(float(states[c].mean) for c in CHANNELS)
    std = tuple(float(states[c].std) or 1.0 for c in CHANNELS)
    return mean, std
