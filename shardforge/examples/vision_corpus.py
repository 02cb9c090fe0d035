"""A synthetic image–caption corpus drawn with Pillow, for the VLM demo and tests.

Each image is a canvas of a random size and aspect ratio (about 1:3 to 3:1) with one or two
shapes (circle, square, triangle) of a colour, size and position the caption names::

    {"images": ["images/000012.png"], "text": "a big red circle on the left"}
    {"images": ["images/000013.jpg", "images/000014.png"],
     "text": "<image> shows a small blue square at the top and <image> shows a big green
              triangle on the right"}

Captioning samples carry no ``<image>`` marker (the image comes first); interleaved samples put
one marker where each image goes. Paths are relative to the JSONL file. ``bad=True`` adds the
images a real crawl has: corrupt bytes, a truncated JPEG, an empty file, an unsupported format
and a decompression bomb (a PNG header claiming 40000 x 40000 pixels), each in a captioned row.

    python -m shardforge.examples.vision_corpus OUT_DIR --samples 2000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import zlib

import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220),
           "yellow": (235, 210, 20), "purple": (140, 40, 170), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "big")
PLACES = {"on the left": (0.25, 0.5), "on the right": (0.75, 0.5), "at the top": (0.5, 0.25),
          "at the bottom": (0.5, 0.75), "in the middle": (0.5, 0.5)}
MARKER = "<image>"
# every word a caption can use, in a fixed order: the text column's vocabulary
VOCAB = (MARKER, "a", "and", "shows", "on", "at", "in", "the", "left", "right", "top", "bottom",
         "middle", *SIZES, *COLOURS, *SHAPES)


def draw(rng: np.random.Generator, n_shapes: int):
    """A canvas with ``n_shapes`` shapes in distinct places; returns (PIL image, caption,
    colour of the first shape)."""
    from PIL import Image, ImageDraw

    aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
    area = float(rng.uniform(64 * 64, 320 * 320))
    width, height = max(24, int(np.sqrt(area * aspect))), max(24, int(np.sqrt(area / aspect)))
    shade = int(rng.integers(225, 256))
    img = Image.new("RGB", (width, height), (shade, shade, shade))
    pen = ImageDraw.Draw(img)
    places = rng.choice(list(PLACES), size=n_shapes, replace=False)
    parts, first = [], None
    for place in places:
        colour = str(rng.choice(list(COLOURS)))
        shape, size = str(rng.choice(SHAPES)), str(rng.choice(SIZES))
        first = first or colour
        cx, cy = PLACES[place]
        r = min(width, height) * (0.2 if size == "big" else 0.1)
        x, y = cx * width, cy * height
        box = (x - r, y - r, x + r, y + r)
        if shape == "circle":
            pen.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            pen.rectangle(box, fill=COLOURS[colour])
        else:
            pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=COLOURS[colour])
        parts.append(f"a {size} {colour} {shape} {place}")
    return img, " and ".join(parts), first


def _encode(img, rng: np.random.Generator) -> tuple[bytes, str]:
    fmt = str(rng.choice(["PNG", "JPEG", "WEBP"], p=[0.5, 0.35, 0.15]))
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt != "PNG" else {}))
    return buf.getvalue(), {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}[fmt]


def bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def bad_images(rng: np.random.Generator) -> dict[str, bytes]:
    """File name -> bytes of images that must go to errors/ (name says why)."""
    img, _, _ = draw(rng, 1)
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    jpeg = buf.getvalue()
    return {"corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 200, np.uint8)),
            "truncated.jpg": jpeg[: len(jpeg) // 2], "empty.png": b"",
            "unsupported.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            "bomb.png": bomb_png()}


def write_corpus(out_dir: str, samples: int = 2000, interleaved: float = 0.15,
                 two_shapes: float = 0.3, bad: bool = True, seed: int = 0) -> dict:
    """Write ``out_dir/corpus.jsonl`` and ``out_dir/images/``; returns counts."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    n_images = 0

    def save(img) -> str:
        nonlocal n_images
        data, ext = _encode(img, rng)
        rel = f"images/{n_images:06d}{ext}"
        n_images += 1
        with open(os.path.join(out_dir, rel), "wb") as f:
            f.write(data)
        return rel

    lines = []
    for _ in range(samples):
        if rng.random() < interleaved:
            paths, texts = [], []
            for _ in range(2):
                img, caption, _ = draw(rng, 1)
                paths.append(save(img))
                texts.append(f"{MARKER} shows {caption}")
            lines.append({"images": paths, "text": " and ".join(texts)})
        else:
            img, caption, _ = draw(rng, 2 if rng.random() < two_shapes else 1)
            lines.append({"images": [save(img)], "text": caption})
    n_bad = 0
    if bad:
        for name, data in bad_images(rng).items():
            with open(os.path.join(out_dir, "images", name), "wb") as f:
                f.write(data)
            lines.append({"images": [f"images/{name}"], "text": "a small red circle"})
            n_bad += 1
        lines.append({"images": ["images/missing.png"], "text": "a big blue square"})
        n_bad += 1
    order = rng.permutation(len(lines))
    with open(os.path.join(out_dir, "corpus.jsonl"), "w") as f:
        for i in order:
            f.write(json.dumps(lines[i]) + "\n")
    return {"samples": len(lines), "images": n_images, "bad": n_bad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bad", action="store_true", help="leave out the bad images")
    args = parser.parse_args()
    print(write_corpus(args.out_dir, args.samples, bad=not args.no_bad, seed=args.seed))


if __name__ == "__main__":
    main()
