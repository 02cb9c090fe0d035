"""The image column, ``sf.image``: encoded images (bytes, ``data:`` URLs, paths) in, stored resized
images out, with per-channel normalization in the state. Reading an input value (bytes, a
``data:`` URL, a local or object-store path: :func:`image_bytes`) is the column's; the image
processing (decode, ``smart_resize``, patches, the stored format) is the engine
:mod:`shardforge.vision`, shared with the training loader.

>>> col = image("image", max_pixels=448 * 448)
>>> col.layout.factor
28
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.analyzers import Stats
from shardforge.features.column import Column, Input, Output, WithErrors, check_int, check_name
from shardforge.records.spec import Ragged
from shardforge.vision import (
    CHANNELS,
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_FORMATS,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_SOURCE_PIXELS,
    RESAMPLING,
    STORAGE,
    ImageError,
    VisionLayout,
    decode_image,
    encode_pixels,
    read_image_file,
    resize_image,
)

SOURCES = ("auto", "bytes", "path")
# The signatures of encoded images: a value starting with one is bytes, never a path.
IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


def image_bytes(value: bytes | str, root: str | None = None, source: str = "auto",
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The encoded bytes of an input value: the bytes themselves, a ``data:`` URL, or a path
    (relative paths resolve against ``root``, the input file's directory) to a regular file of
    at most ``max_file_bytes`` (see :func:`~shardforge.vision.read_image_file`).

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
    if source == "auto" and (len(raw) > 4096 or b"\x00" in raw or raw.startswith(IMAGE_SIGNATURES)):
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
        return _read_path(path, max_file_bytes)
    except FileNotFoundError:
        raise ImageError(f"image file {path!r} does not exist") from None
    except OSError as err:
        raise ImageError(f"cannot read image file {path!r}: {err}") from None


def _read_path(path: str, max_bytes: int) -> bytes:
    if "://" not in path:
        return read_image_file(path, max_bytes)
    from apache_beam.io.filesystems import FileSystems  # gs://, s3://: any Beam filesystem

    with FileSystems.open(path) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"image file {path!r} is more than max_file_bytes={max_bytes} bytes")
    return data


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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

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
        img = decode_image(image_bytes(value, root, self.source, self.max_file_bytes),
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
        return WithErrors(result, rows, [bad_values[k] for k in first],
                          [reasons[k] for k in first], self.key)

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.strings(varlen=True)

    def schema_source(self) -> str:
        return self.key


def _flat_values(value: Any) -> Any:
    return value.values if isinstance(value, Ragged) else value


def _describe(value: Any) -> str:
    """A short, printable description of a bad input value for errors/."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) <= 200 and not raw.startswith(IMAGE_SIGNATURES):
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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
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
    A path must name a regular file of at most ``max_file_bytes`` (64 MiB by default), checked
    before reading: a FIFO, a device or a bigger file fails its row.

    >>> col = image("image", max_pixels=448 * 448)                  # Qwen2-VL, 14-pixel patches
    >>> kimi = image("image", patch_size=14, merge_size=2, normalize="learned")
    """
    check_name(key, "image key")
    layout = VisionLayout(patch_size, merge_size, temporal_patch_size, min_pixels, max_pixels)
    if resample not in RESAMPLING:
        raise ValueError(f"image column {key!r}: resample={resample!r}; expected one of "
                         f"{RESAMPLING}")
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
    check_int(max_file_bytes, f"image column {key!r}: max_file_bytes")
    return ImageColumn(key, name or key, layout, resample, storage, normalize, mean, std, root,
                       source, int(max_source_pixels),
                       None if formats is None else tuple(f.upper() for f in formats),
                       bool(draft), int(max_file_bytes))


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
