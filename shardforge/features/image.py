"""Images at native resolution: Pillow decoding, Qwen2-VL's ``smart_resize``, normalization and
patches in the layout transformers' Qwen2-VL image processor produces.

The pipeline of one image (every step a pure function, shared by the Beam job, the loader and
serving)::

    bytes / path ──decode_image──▶ RGB (EXIF-rotated, alpha on white) ──resize_image──▶
    uint8 [H', W', 3] with H', W' multiples of patch·merge  (stored in the shards, PNG or raw)
    ──patchify──▶ float32 pixel_values [h·w, C·T·p·p], grid (t=1, h, w)   (rebuilt in the loader)

``patchify`` equals ``Qwen2VLImageProcessor``'s output for the same settings, bit for bit: the
same rescale (``x · (1/255)`` in float64, cast to float32), the same float32 normalization, the
same patch order (2×2 merge blocks contiguous, block rows first) and the temporal axis of size
``temporal_patch_size`` holding the frame repeated. KimiVL/MoonViT's settings are
``VisionLayout(patch_size=14, merge_size=2)`` (the default); SigLIP-style 16-pixel patches are
``patch_size=16``.

>>> import io, PIL.Image
>>> buf = io.BytesIO(); PIL.Image.new("RGB", (100, 60), (255, 0, 0)).save(buf, "PNG")
>>> layout = VisionLayout(min_pixels=56 * 56, max_pixels=224 * 224)
>>> pixels = resize_image(decode_image(buf.getvalue()), layout)
>>> pixels.shape, grid_of(pixels, layout)
((56, 112, 3), (1, 4, 8))
>>> patchify(pixels, layout).shape
(32, 1176)
"""

from __future__ import annotations

import base64
import io
import math
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from shardforge.features.analyzers import Stats
from shardforge.features.column import Column, Input, Output, WithErrors, check_int, check_name
from shardforge.records.spec import Ragged

# CLIP's constants, the defaults of Qwen2-VL's processor (OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLING = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
STORAGE = ("png", "raw")
SOURCES = ("auto", "bytes", "path")
# Formats Pillow may open by default; anything else is "unsupported" (a row error).
DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "MPO")
# Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS), applied before decoding.
DEFAULT_MAX_SOURCE_PIXELS = 89_478_485
MAX_ASPECT = 200  # Qwen2-VL's smart_resize refuses anything more elongated
_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` goes to the errors output."""


@dataclass(frozen=True)
class VisionLayout:
    """Patch geometry and resize bounds (Qwen2-VL's processor options of the same names).

    ``factor = patch_size * merge_size``: resized heights and widths are multiples of it, so each
    image is a whole number of ``merge_size × merge_size`` blocks of patches. ``min_pixels`` /
    ``max_pixels`` bound ``H' · W'`` (Qwen2-VL's defaults: 56² and 28²·1280).
    """

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280

    def __post_init__(self) -> None:
        for name in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels",
                     "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} > max_pixels={self.max_pixels}")
        if self.max_pixels < self.factor ** 2:
            raise ValueError(f"max_pixels={self.max_pixels} is below one {self.factor}² block")

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Length of one row of ``pixel_values``: ``C · T · p · p`` with C = 3."""
        return 3 * self.temporal_patch_size * self.patch_size ** 2

    @property
    def max_patches(self) -> int:
        """The most patches one image can have under ``max_pixels``."""
        return self.max_pixels // self.patch_size ** 2


# --------------------------------------------------------------------------- decoding


def image_bytes(value: bytes | str, root: str | None = None, source: str = "auto") -> bytes:
    """The encoded bytes of an input value: the bytes themselves, a ``data:`` URL, or a path
    (relative paths resolve against ``root``, the input file's directory).

    ``source="auto"`` takes a value as a path when it is short UTF-8 text without an image
    signature; ``"bytes"`` / ``"path"`` say which it is.
    """
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if source == "bytes":
        return raw
    if raw.startswith(b"data:"):
        head, _, payload = raw.partition(b",")
        if not head.endswith(b";base64"):
            raise ImageError("data URL is not base64-encoded")
        try:
            return base64.b64decode(payload, validate=True)
        except ValueError as err:
            raise ImageError(f"data URL has invalid base64: {err}") from None
    if source == "auto" and (len(raw) > 4096 or b"\x00" in raw or raw.startswith(_MAGIC)):
        return raw
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        if source == "path":
            raise ImageError("image path is not valid UTF-8") from None
        return raw
    if not path:
        raise ImageError("empty image value")
    if root is not None and "://" not in path and not os.path.isabs(path):
        path = os.path.join(root, path)
    try:
        return _read_path(path)
    except FileNotFoundError:
        raise ImageError(f"image file {path!r} does not exist") from None
    except OSError as err:
        raise ImageError(f"cannot read image file {path!r}: {err}") from None


def _read_path(path: str) -> bytes:
    if "://" in path:  # gs://, s3://: any Beam filesystem
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def decode_image(data: bytes, *, max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
                 formats: tuple[str, ...] | None = DEFAULT_FORMATS,
                 draft_for: VisionLayout | None = None):
    """Decode encoded image bytes to an RGB ``PIL.Image``, as Qwen2-VL's processor sees it.

    EXIF orientation is applied (``ImageOps.exif_transpose``, as transformers' ``load_image``);
    grayscale, palette and CMYK convert to RGB; transparency is composited onto white
    (transformers' ``convert_to_rgb``); 16-bit and 32-bit integer images keep their top 8 bits of
    a 16-bit range. Raises :class:`ImageError` with the reason for empty, corrupt, truncated,
    unsupported, zero-sized or oversized (``> max_source_pixels``: decompression bomb) input.

    ``draft_for``: a JPEG much larger than ``smart_resize``'s target for this layout is decoded
    at 1/2, 1/4 or 1/8 scale by libjpeg's scaled IDCT (Pillow's ``draft``), never below the
    target: several times faster, but no longer bit-identical to the processor's full decode.
    """
    from PIL import Image, ImageOps

    if not data:
        raise ImageError("empty image data (0 bytes)")
    if formats is not None:
        Image.init()  # registers every plugin, so each accepted format can be opened
        formats = tuple(f for f in formats if f in Image.OPEN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=formats)
            width, height = img.size
            if width == 0 or height == 0:
                raise ImageError(f"zero-sized image ({width}x{height})")
            if width * height > max_source_pixels:
                raise ImageError(
                    f"decompression bomb: {width}x{height} = {width * height} pixels > "
                    f"max_source_pixels={max_source_pixels}")
            upright = None
            if draft_for is not None and img.format == "JPEG":
                upright = _draft(img, draft_for)
            img.load()
            img = ImageOps.exif_transpose(img)
            if upright is not None:  # resize_image's target follows the full-size image
                img.info["source_size"] = upright
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"decompression bomb: {err}") from None
    except Image.UnidentifiedImageError:
        allowed = "any Pillow format" if formats is None else ", ".join(formats)
        raise ImageError(f"unrecognized image: unsupported format or corrupt header "
                         f"(accepted: {allowed})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncated and corrupt data as OSError / SyntaxError / ValueError
        raise ImageError(f"corrupt or truncated image: {err}") from None
    return to_rgb(img)


def _draft(img, layout: VisionLayout) -> tuple[int, int]:
    """Ask libjpeg for the smallest scale still >= the target; returns the upright full size."""
    # the target is computed on the upright image; an EXIF rotation of 90° swaps the sides
    width, height = img.size
    turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    if turned:
        width, height = height, width
    h, w = smart_resize(height, width, layout.factor, layout.min_pixels, layout.max_pixels)
    img.draft("RGB", (h, w) if turned else (w, h))
    return width, height


def to_rgb(img):
    """An RGB ``PIL.Image`` of any mode (see :func:`decode_image`)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit gray: keep the high byte (Pillow's own convert would clip at 255)
        gray = np.asarray(img, dtype=np.int64)
        img = Image.fromarray((np.clip(gray, 0, 65535) >> 8).astype(np.uint8), "L")
    elif img.mode == "F":
        gray = np.nan_to_num(np.asarray(img, dtype=np.float64))
        img = Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), "L")
    if img.mode == "RGB":
        return img
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


# --------------------------------------------------------------------------- resizing


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Qwen2-VL's target size: multiples of ``factor`` with ``min_pixels <= H·W <= max_pixels``
    and the aspect ratio kept as closely as possible (the same arithmetic, Python's rounding).

    >>> smart_resize(480, 640), smart_resize(10, 10), smart_resize(4000, 3000, max_pixels=448**2)
    ((476, 644), (56, 56), (504, 364))
    """
    if min(height, width) <= 0:
        raise ImageError(f"zero-sized image ({width}x{height})")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ImageError(f"aspect ratio {max(height, width) / min(height, width):.1f} > "
                         f"{MAX_ASPECT} ({width}x{height})")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _resample(name: str) -> int:
    from PIL import Image

    if name not in RESAMPLING:
        raise ValueError(f"resample={name!r}; expected one of {RESAMPLING}")
    return getattr(Image.Resampling, name.upper())


def resize_image(img, layout: VisionLayout, resample: str = "bicubic") -> np.ndarray:
    """The RGB image resized to :func:`smart_resize`'s size as ``uint8 [H', W', 3]``.

    Pillow's filters antialias when shrinking (the filter support widens with the scale) and
    interpolate when enlarging, like the processor's own ``resize``.
    """
    height, width = img.height, img.width
    # a draft-decoded JPEG is resized to the full-size image's target
    full_w, full_h = img.info.get("source_size", (width, height))
    h, w = smart_resize(full_h, full_w, layout.factor, layout.min_pixels, layout.max_pixels)
    if (h, w) != (height, width):
        img = img.resize((w, h), resample=_resample(resample))
    return np.asarray(img, dtype=np.uint8)


def grid_of(pixels: np.ndarray, layout: VisionLayout) -> tuple[int, int, int]:
    """``(t, h, w)`` in patches of a resized image (``image_grid_thw``'s row; t = 1)."""
    return 1, pixels.shape[0] // layout.patch_size, pixels.shape[1] // layout.patch_size


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


# --------------------------------------------------------------------------- the column


class ChannelStats:
    """Mean and std of one channel's pixel values in [0, 1] as a :class:`Stats`, from an exact
    histogram of its uint8 levels (any batching or merge order: bit-identical)."""

    reads_data = True

    def __init__(self, channel: int) -> None:
        self.channel = channel

    def create(self) -> np.ndarray:
        return np.zeros(256, dtype=np.int64)

    def add_batch(self, acc: np.ndarray, hist: np.ndarray) -> np.ndarray:
        return acc + hist[self.channel]

    def merge(self, accs) -> np.ndarray:
        out = self.create()
        for acc in accs:
            out = out + acc
        return out

    def extract(self, acc: np.ndarray) -> Stats:
        counts = [int(v) for v in acc]
        n = sum(counts)
        if n == 0:
            return Stats()
        s = sum(v * k for v, k in enumerate(counts))
        ss = sum(v * v * k for v, k in enumerate(counts))
        levels = [v for v, k in enumerate(counts) if k]
        # exact integer moments, one rounding each: mean = s / 255n, var = (n·ss - s²) / (255n)²
        std = math.sqrt(n * ss - s * s) / (255 * n)
        return Stats(count=n, mean=s / (255 * n), std=std, min=levels[0] / 255,
                     max=levels[-1] / 255)


class FixedStats:
    """Given per-channel constants as an analyzer that reads no data (the state then holds them
    like learned ones, so the schema alone tells the loader how to normalize)."""

    reads_data = False

    def __init__(self, mean: float, std: float) -> None:
        self.mean, self.std = float(mean), float(std)

    def create(self) -> None:
        return None

    def add_batch(self, acc: None, values: Any) -> None:
        return None

    def merge(self, accs) -> None:
        return None

    def extract(self, acc: None) -> Stats:
        return Stats(mean=self.mean, std=self.std)


CHANNELS = ("r", "g", "b")
# The raw input a reader fills with the directory of each row's input file (see ImageColumn).
SOURCE_DIR = "_source_dir"


@dataclass(frozen=True)
class ImageColumn(Column):
    """Encoded images (bytes, ``data:`` URLs or paths) to stored, resized images; see
    :func:`image`. One or several images per row (a varlen output)."""

    key: str
    name: str
    layout: VisionLayout = VisionLayout()
    resample: str = "bicubic"
    storage: str = "png"
    normalize: str = "clip"  # "clip" | "learned" | "fixed"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    root: str | None = None
    source: str = "auto"
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS
    formats: tuple[str, ...] | None = DEFAULT_FORMATS
    draft: bool = False

    column_type = "image"

    def inputs(self) -> tuple[Input, ...]:
        # the directory of the row's input file, where a reader provides it: relative paths
        # resolve against it (else against root, else the working directory)
        return (Input(self.key, "bytes", multivalued=True),
                Input(SOURCE_DIR, "bytes", default=b""))

    def analyzers(self) -> dict[str, Any]:
        if self.normalize == "learned":
            return {c: ChannelStats(i) for i, c in enumerate(CHANNELS)}
        return {c: FixedStats(self.mean[i], self.std[i]) for i, c in enumerate(CHANNELS)}

    def resized(self, value: Any, source_dir: bytes = b"") -> np.ndarray:
        """One input value decoded and resized (raises :class:`ImageError`)."""
        root = self.root if self.root is not None else (source_dir.decode() or None)
        img = decode_image(image_bytes(value, root, self.source),
                           max_source_pixels=self.max_source_pixels, formats=self.formats,
                           draft_for=self.layout if self.draft else None)
        return resize_image(img, self.layout, self.resample)

    def analyze(self, values: Sequence[Any]) -> dict[str, Any]:
        hist = np.zeros((3, 256), dtype=np.int64)
        col, dirs = values
        rows = col.value_rowids() if isinstance(col, Ragged) else range(len(col))
        for value, row in zip(_flat_values(col), rows):
            try:
                pixels = self.resized(value, dirs[row])
            except ImageError:
                continue  # the transform sends this row to errors/
            for c in range(3):
                hist[c] += np.bincount(pixels[..., c].reshape(-1), minlength=256)
        return {c: hist for c in CHANNELS}

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Any:
        col, dirs = values
        flat, splits = (col.values, col.row_splits) if isinstance(col, Ragged) else \
            (np.asarray(col, dtype=object), np.arange(len(col) + 1, dtype=np.int64))
        rows = np.repeat(np.arange(len(splits) - 1), np.diff(splits))
        out = np.empty(len(flat), dtype=object)
        bad_rows, bad_values, reasons = [], [], []
        for i, value in enumerate(flat):
            try:
                out[i] = encode_pixels(self.resized(value, dirs[rows[i]]), self.layout,
                                       self.storage)
            except ImageError as err:
                out[i] = b""
                bad_rows.append(int(rows[i]))
                bad_values.append(_describe(value))
                reasons.append(str(err))
        result = Ragged(out, splits)
        if not bad_rows:
            return result
        # one reason per failed row (the first of its images that failed)
        rows, first = np.unique(np.asarray(bad_rows, np.int64), return_index=True)
        distinct = {reasons[k] for k in first}
        reason = distinct.pop() if len(distinct) == 1 else "image could not be used"
        return WithErrors(result, rows, [f"{bad_values[k]}: {reasons[k]}" for k in first],
                          reason, self.key)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.strings(varlen=True)

    def schema_source(self) -> str:
        return self.key


def _flat_values(value: Any) -> Any:
    return value.values if isinstance(value, Ragged) else value


def _describe(value: Any) -> str:
    """A short, printable description of a bad input value for errors/."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) <= 200 and not raw.startswith(_MAGIC):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return f"<{len(raw)} bytes: {raw[:8]!r}...>"


def image(
    key: str,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
    resample: str = "bicubic",
    normalize: str | tuple = "clip",
    storage: str = "png",
    root: str | None = None,
    source: str = "auto",
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
    formats: Sequence[str] | None = DEFAULT_FORMATS,
    draft: bool = False,
    name: str | None = None,
) -> ImageColumn:
    """An image column at native resolution (Qwen2-VL / KimiVL style).

    Input ``key``: encoded image bytes (PNG, JPEG, WebP, GIF, BMP, TIFF), a ``data:`` URL, or a
    path; a list of them for several images per row (missing: no image). Relative paths resolve
    against ``root`` when given, else against the directory of the row's input file (the
    ``_source_dir`` input a reader provides), else the working directory.
    Each image is decoded with Pillow (:func:`decode_image`), resized with :func:`smart_resize`
    to multiples of ``patch_size · merge_size`` within ``[min_pixels, max_pixels]``
    (``resample``: bicubic | bilinear | nearest | lanczos | box | hamming) and stored with its
    grid (``storage``: ``png`` lossless and compact, or ``raw``). The loader rebuilds
    ``pixel_values`` in ``Qwen2VLImageProcessor``'s layout from it.

    ``normalize``: ``"clip"`` (CLIP's mean/std, Qwen2-VL's default), ``"learned"`` (per-channel
    mean/std of the resized pixels, learned in the analyze pass) or ``(mean, std)`` constants.
    The state holds the three channels' ``Stats`` (``<name>/r``, ``/g``, ``/b``).

    ``draft=True`` decodes large JPEGs at a reduced scale first (see :func:`decode_image`):
    faster, not bit-identical to the processor.

    Corrupt, truncated, empty, zero-sized, unsupported or oversized images (more than
    ``max_source_pixels`` before resizing: a decompression bomb) fail their row with the reason.

    >>> col = image("image", max_pixels=448 * 448)                  # Qwen2-VL, 14-pixel patches
    >>> kimi = image("image", patch_size=14, merge_size=2, normalize="learned")
    """
    check_name(key, "image key")
    layout = VisionLayout(patch_size, merge_size, temporal_patch_size, min_pixels, max_pixels)
    _resample(resample)
    if storage not in STORAGE:
        raise ValueError(f"image column {key!r}: storage={storage!r}; expected one of {STORAGE}")
    if source not in SOURCES:
        raise ValueError(f"image column {key!r}: source={source!r}; expected one of {SOURCES}")
    mean, std = CLIP_MEAN, CLIP_STD
    if isinstance(normalize, (tuple, list)):
        if len(normalize) != 2 or any(len(v) != 3 for v in normalize):
            raise ValueError(f"image column {key!r}: normalize=(mean, std) takes 3 values each")
        mean, std = tuple(map(float, normalize[0])), tuple(map(float, normalize[1]))
        if min(std) <= 0:
            raise ValueError(f"image column {key!r}: std must be > 0, got {std}")
        normalize = "fixed"
    elif normalize not in ("clip", "learned"):
        raise ValueError(f"image column {key!r}: normalize={normalize!r}; expected 'clip', "
                         "'learned' or (mean, std)")
    check_int(max_source_pixels, f"image column {key!r}: max_source_pixels")
    return ImageColumn(key, name or key, layout, resample, storage, normalize, mean, std, root,
                       source, int(max_source_pixels),
                       None if formats is None else tuple(f.upper() for f in formats),
                       bool(draft))


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


def from_segments(segments: Sequence[dict], marker: str = "<image>") -> dict[str, Any]:
    """A chat/VLM-style list of segments as the sample ``sf.image`` + ``sf.text`` read: the text
    with one ``marker`` per image, and the images in order.

    >>> from_segments([{"text": "look:"}, {"image": "a.png"}, {"text": "a red circle"}])
    {'text': 'look: <image> a red circle', 'images': ['a.png']}
    """
    words, images = [], []
    for seg in segments:
        if "image" in seg:
            words.append(marker)
            images.append(seg["image"])
        elif "text" in seg:
            words.append(str(seg["text"]))
        else:
            raise ValueError(f"a segment has 'text' or 'image', got keys {sorted(seg)}")
    return {"text": " ".join(words), "images": images}
