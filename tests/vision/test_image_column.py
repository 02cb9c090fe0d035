"""sf.image: bytes or paths to stored images, bad images to errors with a reason, learned or
constant normalization in the schema, and the Beam job to shards to the multimodal loader."""

import glob
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import shardforge.features as sf
from shardforge.examples.vision_corpus import VOCAB, bad_images, write_corpus
from shardforge.vision import (
    CLIP_MEAN,
    decode_image,
    decode_pixels,
    image_normalization,
    resize_image,
    stored_header,
)


def png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def fit_transform(fs, raw):
    batch, errors = fs.coerce(raw)
    assert not errors
    state = fs.fit([batch])
    return state, fs.transform(batch, state, errors="collect")


def test_bytes_and_paths_give_the_same_stored_image(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(png(arr))
    col = sf.image("img", min_pixels=28 * 28, max_pixels=112 * 112, root=str(tmp_path))
    fs = sf.FeatureSet([col])
    _, (out, errors) = fit_transform(fs, {"img": [png(arr), "a.png", ["a.png", png(arr)]]})
    assert not errors
    stored = out["img"]
    assert stored.row_lengths().tolist() == [1, 1, 2]
    expected = resize_image(decode_image(png(arr)), col.layout)
    for data in stored.values:
        assert np.array_equal(decode_pixels(data), expected)
        (t, h, w), layout = stored_header(data)
        assert (t, h * 14, w * 14) == (1, *expected.shape[:2]) and layout.merge_size == 2


def test_bad_images_fail_their_row_with_the_reason():
    rng = np.random.default_rng(1)
    good = png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    bad = bad_images(rng)
    names = list(bad)
    fs = sf.FeatureSet([sf.image("img", max_pixels=112 * 112, source="bytes"),
                        sf.text("t", vocabulary_list=["word"])])
    raw = {"img": [good] + [bad[n] for n in names] + [[good, bad["truncated.jpg"]]],
           "t": ["word"] * (len(names) + 2)}
    batch, parse_errors = fs.coerce(raw, row_ids=list(range(len(raw["t"]))))
    # an empty value is a value of a bytes list (as in a tf.Example): the image column rejects it
    assert parse_errors == []
    state = fs.fit([batch])
    out, errors = fs.transform(batch, state, errors="collect", row_ids=list(range(len(raw["t"]))))
    assert out["img"].row_lengths().tolist() == [1]  # only the good row is left
    reasons = {e.row: e.reason for e in errors}
    assert sorted(reasons) == list(range(1, len(names) + 2))
    expect = {"corrupt.png": "unrecognized image", "truncated.jpg": "truncated",
              "empty.png": "empty image data", "unsupported.svg": "unrecognized image",
              "bomb.png": "decompression bomb"}
    for i, name in enumerate(names, start=1):
        assert expect[name] in reasons[i], (name, reasons[i])
    assert "truncated" in reasons[len(names) + 1]


def test_zero_sized_and_elongated_images_are_rejected():
    from shardforge.vision import ImageError, smart_resize

    with pytest.raises(ImageError, match="aspect ratio"):
        smart_resize(10, 3000)
    with pytest.raises(ImageError, match="zero-sized"):
        smart_resize(0, 30)


def test_learned_normalization_is_the_pixel_mean_and_std(tmp_path):
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 256, (int(rng.integers(30, 200)), int(rng.integers(30, 200)), 3),
                           dtype=np.uint8) for _ in range(6)]
    col = sf.image("img", max_pixels=112 * 112, normalize="learned")
    fs = sf.FeatureSet([col])
    state, _ = fit_transform(fs, {"img": [png(a) for a in arrays]})
    pixels = np.concatenate([resize_image(decode_image(png(a)), col.layout).reshape(-1, 3)
                             for a in arrays]).astype(np.float64) / 255
    state.save(str(tmp_path))
    mean, std = image_normalization(sf.load_schema(str(tmp_path)), "img")
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-12)
    # merged from two halves (as Beam combines): the same state, bit for bit
    b1, _ = fs.coerce({"img": [png(a) for a in arrays[:3]]})
    b2, _ = fs.coerce({"img": [png(a) for a in arrays[3:]]})
    an = fs.analyzer()
    merged = an.extract(an.merge([an.add_batch(an.create(), b1), an.add_batch(an.create(), b2)]))
    assert merged == state


def test_constant_normalization_is_in_the_schema(tmp_path):
    fs = sf.FeatureSet([sf.image("img")])
    fs.fit([fs.coerce({"img": [png(np.zeros((30, 30, 3), np.uint8))]})[0]]).save(str(tmp_path))
    mean, _ = image_normalization(sf.load_schema(str(tmp_path)), "img")
    assert mean == CLIP_MEAN
    with pytest.raises(ValueError, match="normalize"):
        sf.image("img", normalize="imagenet")


@pytest.mark.slow
def test_jsonl_corpus_to_shards_to_multimodal_batches(tmp_path, monkeypatch):
    from shardforge.pipelines import run_pipeline
    from shardforge.training.mm_packing import multimodal_loader

    corpus = tmp_path / "corpus"
    counts = write_corpus(str(corpus), samples=120, seed=3)
    monkeypatch.chdir(tmp_path)  # image paths resolve against the input file's directory
    fs = sf.FeatureSet([
        sf.text("text", vocabulary_list=VOCAB, num_oov_buckets=1, name="tokens"),
        sf.image("images", min_pixels=28 * 28, max_pixels=112 * 112, normalize="learned",
                 name="image")])
    out = tmp_path / "out"
    summary = run_pipeline(fs, str(corpus / "corpus.jsonl"), str(out), num_shards=2,
                           max_error_fraction=0.2)
    assert summary.errors == counts["bad"]
    errors = [json.loads(line) for p in glob.glob(str(out / "errors" / "*.jsonl"))
              for line in open(p)]
    assert {e["feature"] for e in errors} == {"images"}
    assert all(e["source"].startswith(str(corpus / "corpus.jsonl") + ":") for e in errors)
    image_files = glob.glob(str(corpus / "images" / "0*"))
    source_bytes = sum(os.path.getsize(p) for p in image_files)
    shard_bytes = sum(os.path.getsize(p) for s in summary.shards.values() for p in s)
    assert shard_bytes < 2 * source_bytes  # resized PNGs: about the size of the sources
    loader = multimodal_loader(str(out / "train"), token_budget=256, patch_budget=512,
                               image_token_id=VOCAB.index("<image>"), token_feature="tokens",
                               image_feature="image", lookahead=64)
    n_images = 0
    for batch in loader:
        assert batch["pixel_values"].shape[1] == 3 * 2 * 14 * 14
        n_images += len(batch["image_grid_thw"])
    assert n_images > 0.8 * counts["images"] * summary.splits["train"] / (
        counts["samples"] - counts["bad"])


def test_jpeg_draft_keeps_the_grid_and_stays_close():
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:1500, 0:1100]
    arr = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    arr = np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    col = sf.image("img", max_pixels=224 * 224)
    full = resize_image(decode_image(buf.getvalue()), col.layout)
    fast = resize_image(decode_image(buf.getvalue(), draft_for=col.layout), col.layout)
    assert fast.shape == full.shape
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 6


def test_data_urls_and_path_detection(tmp_path):
    import base64

    from shardforge.features.image import image_bytes
    from shardforge.vision import ImageError

    data = png(np.zeros((8, 8, 3), np.uint8))
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert image_bytes(url) == data
    assert image_bytes(data) == data  # an image signature: the bytes themselves
    (tmp_path / "x.png").write_bytes(data)
    assert image_bytes("x.png", root=str(tmp_path)) == data
    assert image_bytes(str(tmp_path / "x.png")) == data  # absolute paths ignore root
    with pytest.raises(ImageError, match="does not exist"):
        image_bytes("nope.png", root=str(tmp_path))
    with pytest.raises(ImageError, match="base64"):
        image_bytes("data:image/png;base64,@@@")
