"""Image bytes to resized pixels: Pillow decoding and Qwen2-VL's ``smart_resize``.

>>> import io, PIL.Image
>>> buf = io.BytesIO(); PIL.Image.new("RGB", (100, 60), (255, 0, 0)).save(buf, "PNG")
>>> layout = VisionLayout(min_pixels=56 * 56, max_pixels=224 * 224)
>>> pixels = resize_image(decode_image(buf.getvalue()), layout)
>>> pixels.shape, grid_of(pixels, layout)
((56, 112, 3), (1, 4, 8))
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np

RESAMPLING = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
# Formats Pillow may open by default; anything else is "unsupported" (a row error).
DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "MPO")
# Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS), applied before decoding.
DEFAULT_MAX_SOURCE_PIXELS = 89_478_485
MAX_ASPECT = 200  # Qwen2-VL's smart_resize refuses anything more elongated


# The largest image file read from a path (``sf.image(max_file_bytes=)``): the size is checked
# before reading, so a path naming a device or a huge file never fills memory.
DEFAULT_MAX_FILE_BYTES = 64 << 20


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` goes to the errors output."""


def read_image_file(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of the local image file ``path``: a regular file of at most ``max_bytes``.

    Anything else is an :class:`ImageError` before a byte is read: a FIFO (opened without
    blocking, so a pipe nobody writes to cannot hang the job), a device such as ``/dev/zero``,
    a directory, a socket, or a file over the limit. A missing file raises ``FileNotFoundError``.

    >>> try:
    ...     read_image_file("/dev/zero")
    ... except ImageError as err:
    ...     print(err)
    image path '/dev/zero' is a character device, not a regular file
    """
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"image path {path!r} is {_file_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise ImageError(f"image file {path!r} is {st.st_size} bytes, more than "
                             f"max_file_bytes={max_bytes}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)  # a file growing while read is held to the limit too
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageError(f"image file {path!r} is more than max_file_bytes={max_bytes} bytes")
    return data


def _file_kind(mode: int) -> str:
    import stat

    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


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
