"""Images/s per core: decode + resize + patchify, shardforge vs transformers' Qwen2-VL image
processor on the same images in the same run; bytes per image; multimodal packing efficiency.

    .venv/bin/python benchmarks/vision_bench.py                  # 48 images, Qwen2-VL defaults
    .venv/bin/python benchmarks/vision_bench.py --images 200 --max-pixels 802816

Stages, each over the same encoded images (JPEG/PNG/WebP, 160-2000 px, aspect 1:3..3:1):

- ``shardforge``: ``decode_image`` -> ``resize_image`` (Qwen2-VL's smart_resize) ->
  ``patchify`` (pixel_values in Qwen2VLImageProcessor's layout, bit-identical: checked here);
- ``shardforge-draft``: the same with ``sf.image(draft=True)``: JPEGs much larger than the
  target decoded at 1/2..1/8 scale by libjpeg (not bit-identical; same grid);
- ``qwen2vl-pil``: ``Image.open`` + ``Qwen2VLImageProcessorPil`` (transformers' slow, PIL/numpy
  processor), one call per image;
- ``qwen2vl-fast``: ``Qwen2VLImageProcessor`` (torchvision backend), measured only when
  torchvision imports (PyPI's torchvision does not import beside torch 2.13.0+cpu);
- ``loader``: what an epoch costs once the shards exist: the stored, resized image (PNG) decoded
  and patchified.

One process, one torch/numpy thread: images/s is per core. Packing: both budgets' efficiency of
``plan_multimodal`` on a long-tailed mix (60% of samples with an image, text lognormal).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """Photo-like images (smooth gradients, shapes, noise) of varied size, aspect and format."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
        side = float(rng.uniform(160, 2000))
        w, h = max(32, int(side * np.sqrt(aspect))), max(32, int(side / np.sqrt(aspect)))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 / w), (y * 255 / h), ((x + y) * 127 / (w + h))], -1)
        noise = rng.normal(0, 18, (h, w, 3))
        img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        pen = ImageDraw.Draw(img)
        for _ in range(5):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(8, max(9, min(w, h) // 3)))
            pen.ellipse((x0 - r, y0 - r, x0 + r, y0 + r),
                        fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img = img.filter(ImageFilter.GaussianBlur(1))
        fmt = ("JPEG", "PNG", "WEBP")[i % 3 if i % 5 else 0]
        buf = io.BytesIO()
        img.save(buf, fmt, **({"quality": 88} if fmt != "PNG" else {}))
        out.append(buf.getvalue())
    return out


def rate(fn, items, repeat: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of ``fn`` over ``items``, best of
    ``repeat`` passes after one warm-up item."""
    fn(items[0])
    best_wall, best_cpu = 0.0, 0.0
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        for item in items:
            fn(item)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best_wall = max(best_wall, len(items) / wall)
        best_cpu = max(best_cpu, len(items) / max(cpu, 1e-9))
    return best_wall, best_cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--min-pixels", type=int, default=56 * 56)
    ap.add_argument("--max-pixels", type=int, default=28 * 28 * 1280)  # Qwen2-VL's default
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from PIL import Image

    from shardforge.vision import (
        VisionLayout,
        decode_image,
        decode_pixels,
        encode_pixels,
        patchify,
        resize_image,
    )

    layout = VisionLayout(min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    images = make_images(args.images, args.seed)
    print(f"{len(images)} images, {sum(map(len, images)) / len(images) / 1024:.0f} KiB each on "
          f"average, min_pixels={layout.min_pixels} max_pixels={layout.max_pixels}")

    def ours(data: bytes) -> np.ndarray:
        return patchify(resize_image(decode_image(data), layout), layout)

    def ours_draft(data: bytes) -> np.ndarray:
        img = decode_image(data, draft_for=layout)
        return patchify(resize_image(img, layout), layout)

    results: dict[str, tuple[float, float]] = {"shardforge": rate(ours, images, args.repeat)}
    results["shardforge-draft"] = rate(ours_draft, images, args.repeat)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    slow = Qwen2VLImageProcessorPil(min_pixels=layout.min_pixels, max_pixels=layout.max_pixels)

    def theirs(data: bytes) -> np.ndarray:
        return slow(images=[Image.open(io.BytesIO(data))], return_tensors="np")["pixel_values"]

    for data in images[:8]:  # same pixel_values, bit for bit; the draft gives the same grid
        assert np.array_equal(ours(data), theirs(data))
        assert ours_draft(data).shape == ours(data).shape
    results["qwen2vl-pil"] = rate(theirs, images, args.repeat)
    try:
        import torchvision  # noqa: F401
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import (
            Qwen2VLImageProcessor,
        )

        fast = Qwen2VLImageProcessor(min_pixels=layout.min_pixels, max_pixels=layout.max_pixels)
        results["qwen2vl-fast"] = rate(
            lambda d: fast(images=[Image.open(io.BytesIO(d))], return_tensors="pt"),
            images, args.repeat)
    except Exception as err:  # torchvision missing or not importable beside this torch
        print(f"qwen2vl-fast: not measured here: torchvision does not import ({err!s:.90})")
    stored = [encode_pixels(resize_image(decode_image(d), layout), layout) for d in images]
    results["loader"] = rate(lambda s: patchify(decode_pixels(s), layout), stored, args.repeat)

    print(f"\n{'stage':<14}{'images/s':>10}{'per CPU-s':>11}{'vs pil':>8}")
    ref = results["qwen2vl-pil"][1]
    for name, (wall, cpu) in results.items():
        print(f"{name:<14}{wall:>10.1f}{cpu:>11.1f}{cpu / ref:>7.2f}x")

    raw = [encode_pixels(resize_image(decode_image(d), layout), layout, "raw") for d in images]
    print(f"\nbytes per image: source {np.mean([len(d) for d in images]) / 1024:.0f} KiB, "
          f"stored PNG {np.mean([len(s) for s in stored]) / 1024:.0f} KiB, stored raw "
          f"{np.mean([len(s) for s in raw]) / 1024:.0f} KiB, pixel_values float32 "
          f"{np.mean([ours(d).nbytes for d in images[:8]]) / 1024:.0f} KiB")

    from shardforge.training.mm_packing import plan_multimodal, suggest_token_budget

    rng = np.random.default_rng(args.seed)
    n = 4096
    has_img = rng.random(n) < 0.6
    h, w = 2 * rng.integers(2, 33, n), 2 * rng.integers(2, 33, n)
    vis = np.where(has_img, h * w, 0)
    lm = np.minimum(rng.lognormal(4.5, 1.0, n).astype(np.int64) + 1, 6000) + vis // 4
    print(f"\npacking {n} samples (60% with an image of 16..4096 patches, text lognormal):")
    for patch_budget in (4096, 16384):
        token_budget = suggest_token_budget(lm, vis, patch_budget)
        t = time.perf_counter()
        plan = plan_multimodal(lm, vis, token_budget=token_budget, patch_budget=patch_budget,
                               head_lengths=vis // 4)
        ms = (time.perf_counter() - t) * 1e3
        tok, pat = plan.efficiency()
        cut = np.bincount(plan.piece_doc, minlength=n)[vis > 0]
        print(f"  patch_budget={patch_budget} token_budget={token_budget}: {len(plan)} bins, "
              f"token efficiency {tok:.2%}, patch efficiency {pat:.2%}, "
              f"samples with a cut caption {np.mean(cut > 1):.1%}, planned in {ms:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
