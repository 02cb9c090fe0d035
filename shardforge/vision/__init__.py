"""The image engine shared by the ``sf.image`` column and the training loader: images at native
resolution, Pillow decoding, Qwen2-VL's ``smart_resize``, normalization and
patches in the layout transformers' Qwen2-VL image processor produces.

The pipeline of one image (every step a pure function, shared by the Beam job, the loader and
serving)::

    bytes ──decode_image──▶ RGB (EXIF-rotated, alpha on white) ──resize_image──▶
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

from shardforge.vision.decode import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_SOURCE_PIXELS,
    RESAMPLING,
    ImageError,
    VisionLayout,
    decode_image,
    grid_of,
    read_image_file,
    resize_image,
    smart_resize,
    to_rgb,
)
from shardforge.vision.patches import (
    CHANNELS,
    CLIP_MEAN,
    CLIP_STD,
    STORAGE,
    decode_pixels,
    encode_pixels,
    image_normalization,
    normalization_table,
    normalize_patches,
    patch_levels,
    patch_positions,
    patchify,
    stored_grids,
    stored_header,
)

__all__ = [
    "CHANNELS",
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_FORMATS",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_SOURCE_PIXELS",
    "RESAMPLING",
    "STORAGE",
    "ImageError",
    "VisionLayout",
    "decode_image",
    "decode_pixels",
    "encode_pixels",
    "grid_of",
    "image_normalization",
    "normalization_table",
    "normalize_patches",
    "patch_levels",
    "patch_positions",
    "patchify",
    "read_image_file",
    "resize_image",
    "smart_resize",
    "stored_grids",
    "stored_header",
    "to_rgb",
]
