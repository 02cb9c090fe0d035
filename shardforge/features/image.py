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
import warnings
from dataclasses import dataclass

import numpy as np

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
                 formats: tuple[str, ...] | None = DEFAULT_FORMATS):
    """Decode encoded image bytes to an RGB ``PIL.Image``, as Qwen2-VL's processor sees it.

    EXIF orientation is applied (``ImageOps.exif_transpose``, as transformers' ``load_image``);
    grayscale, palette and CMYK convert to RGB; transparency is composited onto white
    (transformers' ``convert_to_rgb``); 16-bit and 32-bit integer images keep their top 8 bits of
    a 16-bit range. Raises :class:`ImageError` with the reason for empty, corrupt, truncated,
    unsupported, zero-sized or oversized (``> max_source_pixels``: decompression bomb) input.
    """
    from PIL import Image, ImageOps

    if not data:
        raise ImageError("empty image data (0 bytes)")
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
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"decompression bomb: {err}") from None
    except Image.UnidentifiedImageError:
        allowed = "any Pillow format" if formats is None else ", ".join(formats)
        raise ImageError(f"unsupported or unrecognized image format (accepted: {allowed})") \
            from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncated and corrupt data as OSError / SyntaxError / ValueError
        raise ImageError(f"corrupt or truncated image: {err}") from None
    return to_rgb(img)


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
    h, w = smart_resize(height, width, layout.factor, layout.min_pixels, layout.max_pixels)
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
    table = _CLIP_TABLE if table is None else np.asarray(table, dtype=np.float32)
    n = levels.shape[0]
    # channel c's levels live at c*256 + v in the flattened table
    idx = levels.astype(np.intp) + (np.arange(3, dtype=np.intp) * 256)[None, :, None]
    values = table.reshape(-1)[idx][:, :, None, :]  # [P, 3, 1, p*p]
    return np.repeat(values, layout.temporal_patch_size, axis=2).reshape(n, layout.patch_dim)


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


def encode_pixels(pixels: np.ndarray, storage: str = "png") -> bytes:
    """What a shard stores of a resized image: lossless PNG (compact) or the raw bytes (no
    decode in the loader). Its size comes from the grid stored beside it."""
    if storage == "raw":
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def decode_pixels(data: bytes, grid_thw, layout: VisionLayout) -> np.ndarray:
    """Inverse of :func:`encode_pixels`: ``uint8 [h·p, w·p, 3]`` (PNG or raw, by signature)."""
    _, h, w = (int(v) for v in grid_thw)
    shape = (h * layout.patch_size, w * layout.patch_size, 3)
    if data[:4] == b"\x89PNG":
        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
    else:
        pixels = np.frombuffer(data, dtype=np.uint8)
        if pixels.size != math.prod(shape):
            raise ValueError(f"stored image has {pixels.size} bytes, its grid {h}x{w} needs "
                             f"{math.prod(shape)}")
        pixels = pixels.reshape(shape)
    if pixels.shape != shape:
        raise ValueError(f"stored image is {pixels.shape}, its grid says {shape}")
    return pixels


# --------------------------------------------------------------------------- analyzer


class PixelStats:
    """Per-channel mean and std of pixel values in [0, 1], from exact per-channel histograms of
    the uint8 levels (mergeable in any order with bit-identical results).

    >>> an = PixelStats()
    >>> acc = an.add_batch(an.create(), np.zeros((2, 2, 3), np.uint8) + np.array([0, 255, 51],
    ...                                                                          np.uint8))
    >>> an.extract(acc)["mean"]
    [0.0, 1.0, 0.2]
    """

    def create(self) -> dict:
        return {"hist": np.zeros((3, 256), dtype=np.int64)}

    def add_batch(self, acc: dict, values: np.ndarray | list) -> dict:
        for pixels in values if isinstance(values, list) else [values]:
            flat = np.asarray(pixels, dtype=np.uint8).reshape(-1, 3)
            for c in range(3):
                acc["hist"][c] += np.bincount(flat[:, c], minlength=256)
        return acc

    def merge(self, accs) -> dict:
        out = self.create()
        for acc in accs:
            out["hist"] += acc["hist"]
        return out

    def extract(self, acc: dict) -> dict:
        levels = np.arange(256, dtype=object)
        mean, std = [], []
        for c in range(3):
            h = [int(v) for v in acc["hist"][c]]
            n = sum(h)
            if n == 0:
                mean.append(0.0)
                std.append(1.0)
                continue
            s = sum(int(v) * k for v, k in zip(levels, h))
            ss = sum(int(v) * int(v) * k for v, k in zip(levels, h))
            mean.append(s / (255 * n))  # exact integers, one correctly rounded division
            var_num = n * ss - s * s  # n² · 255² · variance
            std.append(math.sqrt(var_num) / (255 * n) if var_num else 1.0)
        return {"mean": mean, "std": std, "count": int(acc["hist"][0].sum())}
