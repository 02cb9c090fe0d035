"""Multimodal packing: two budgets, placeholder runs, labels, vision keys, efficiency, resume."""

import numpy as np
import pytest
import torch

from shardforge.records import TFRecordWriter, build_index, encode_example
from shardforge.records.spec import Ragged
from shardforge.training.mm_packing import (
    SampleError,
    multimodal_loader,
    plan_multimodal,
    sample_lengths,
    suggest_token_budget,
)
from shardforge.vision import VisionLayout, encode_pixels, patchify

IMG = 3  # image marker / placeholder id
LAYOUT = VisionLayout(patch_size=4, merge_size=2, min_pixels=8 * 8, max_pixels=64 * 64)


def realistic_mix(n, seed=0):
    """60% samples with one image of varied size and aspect ratio, long-tailed text lengths."""
    rng = np.random.default_rng(seed)
    has_img = rng.random(n) < 0.6
    h, w = 2 * rng.integers(2, 33, n), 2 * rng.integers(2, 33, n)
    vis = np.where(has_img, h * w, 0)
    text = np.minimum(rng.lognormal(4.5, 1.0, n).astype(np.int64) + 1, 6000)
    return text + vis // 4, vis, vis // 4


def check_plan(plan, lm, vis):
    # every token of every sample exactly once, in order, and patches with their sample
    for d in range(len(lm)):
        pieces = np.flatnonzero(plan.piece_doc == d)
        starts, lengths = plan.piece_start[pieces], plan.piece_length[pieces]
        assert starts.tolist() == np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
        assert lengths.sum() == lm[d]
        assert plan.piece_patches[pieces].sum() == vis[d]
    tokens, patches = plan.bin_totals()
    assert tokens.max() <= plan.token_budget and patches.max() <= plan.patch_budget


@pytest.mark.parametrize("patch_budget", [4096, 16384])
def test_both_budgets_reach_99_percent_on_a_realistic_mix(patch_budget):
    lm, vis, head = realistic_mix(4096)
    token_budget = suggest_token_budget(lm, vis, patch_budget)
    plan = plan_multimodal(lm, vis, token_budget=token_budget, patch_budget=patch_budget,
                           head_lengths=head)
    check_plan(plan, lm, vis)
    tok_eff, patch_eff = plan.efficiency()
    assert tok_eff >= 0.99 and patch_eff >= 0.99, (tok_eff, patch_eff)
    # a sample's images and everything before them stay in one piece
    first = plan.piece_start == 0
    assert np.all(plan.piece_length[first] >= np.minimum(head, lm)[plan.piece_doc[first]])


def test_samples_too_big_for_a_bin_are_named():
    with pytest.raises(SampleError, match="sample 1 .* 300 patches"):
        plan_multimodal(np.array([10, 80]), np.array([16, 300]), token_budget=100,
                        patch_budget=256)


def test_markers_must_match_images():
    tokens = Ragged.from_rows([[5, IMG, 6, IMG], [IMG, 7], [8, 9]], dtype=np.int64)
    grids = Ragged.from_rows([[1, 2, 2], [1, 4, 2], []], dtype=np.int64)
    with pytest.raises(SampleError, match="sample 0 has 2 image markers .* but 1 images"):
        sample_lengths(tokens, grids, IMG, 2)
    ok = Ragged.from_rows([[5, IMG, 6], [7], [8, 9]], dtype=np.int64)
    grids = Ragged.from_rows([[1, 2, 2], [1, 4, 2, 1, 2, 2], []], dtype=np.int64)
    lm, vis, head = sample_lengths(ok, grids, IMG, 2)
    # marker -> 1 placeholder (4 patches / 2²); no marker -> runs first (2 + 1) before the text
    assert lm.tolist() == [3, 4, 2] and vis.tolist() == [4, 12, 0] and head.tolist() == [2, 3, 0]


def _image(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_samples(directory, n=60, seed=0, storage="png"):
    """Shards of {tokens with markers, image (stored images)}; returns the samples."""
    rng = np.random.default_rng(seed)
    samples = []
    directory.mkdir(parents=True, exist_ok=True)
    for s in range(2):
        path = directory / f"part-{s:05d}-of-00002.tfrecord"
        with TFRecordWriter(path) as w:
            for _ in range(n // 2):
                n_img = int(rng.integers(0, 3))
                images = [_image(rng, 8 * int(rng.integers(1, 5)), 8 * int(rng.integers(1, 5)))
                          for _ in range(n_img)]
                text = rng.integers(10, 100, int(rng.integers(1, 30))).tolist()
                tokens = text[:]
                if n_img and rng.random() < 0.5:  # interleaved: a marker per image
                    for _ in range(n_img):
                        tokens.insert(int(rng.integers(0, len(tokens) + 1)), IMG)
                w.write(encode_example({
                    "tokens": tokens,
                    "image": [encode_pixels(im, LAYOUT, storage) for im in images]}))
                samples.append((tokens, images))
        build_index(path)
    return samples


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mm") / "train"
    return str(directory), write_samples(directory)


def _loader(path, **kw):
    kw.setdefault("lookahead", 40)
    return multimodal_loader(path, token_budget=96, patch_budget=160, image_token_id=IMG,
                             seed=1, **kw)


def _expected(tokens, images):
    runs = [im.shape[0] * im.shape[1] // 16 // 4 for im in images]
    if images and IMG not in tokens:
        tokens = [IMG] * len(images) + tokens
    out, k = [], 0
    for t in tokens:
        if t == IMG:
            out += [IMG] * runs[k]
            k += 1
        else:
            out.append(t)
    return out


def test_batches_hold_every_sample_once_with_its_patches(shards):
    path, samples = shards
    seen_tokens = {}
    seen_images = {}
    for batch in _loader(path):
        cu = batch["cu_seqlens"].tolist()
        ids, offs = batch["doc_ids"].tolist(), batch["doc_offsets"].tolist()
        assert batch["num_tokens"] <= 96 and batch["num_patches"] <= 160
        labels, inp = batch["labels"], batch["input_ids"]
        assert torch.all(labels[inp == IMG] == -100)
        assert torch.all(labels[batch["cu_seqlens"][:-1].long()] == -100)
        for j, (a, b) in enumerate(zip(cu, cu[1:])):
            seen_tokens.setdefault(ids[j], {})[offs[j]] = inp[a:b].tolist()
            assert batch["position_ids"][a:b].tolist() == list(range(b - a))
        vcu = batch["vision_cu_seqlens"].tolist()
        assert vcu[-1] == batch["pixel_values"].shape[0] == batch["patch_positions"].shape[0]
        for k, doc in enumerate(batch["image_doc"].tolist()):
            grid = batch["image_grid_thw"][k].tolist()
            assert vcu[k + 1] - vcu[k] == grid[0] * grid[1] * grid[2]
            # the image's placeholder run is in its document
            a, b = cu[doc], cu[doc + 1]
            assert (inp[a:b] == IMG).sum() >= (vcu[k + 1] - vcu[k]) // 4
            seen_images.setdefault(ids[doc], []).append(batch["pixel_values"][vcu[k]:vcu[k + 1]])
    assert sorted(seen_tokens) == list(range(len(samples)))
    for rid, (tokens, images) in enumerate(samples):
        pieces = seen_tokens[rid]
        assert [t for o in sorted(pieces) for t in pieces[o]] == _expected(tokens, images)
        got = seen_images.get(rid, [])
        assert len(got) == len(images)
        for pv, im in zip(got, images):
            assert np.array_equal(pv.numpy(), patchify(im, LAYOUT))


def _stream(loader, n=None):
    out = []
    for batch in loader:
        out.append((batch["input_ids"].tolist(), batch["pixel_values"].sum().item()))
        if n is not None and len(out) == n:
            break
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact(shards, num_workers):
    path, _ = shards
    full = _stream(_loader(path, num_workers=num_workers))
    loader = _loader(path, num_workers=num_workers)
    head = _stream(loader, 5)
    resumed = _loader(path, num_workers=num_workers)
    resumed.load_state_dict(loader.state_dict())
    assert head + _stream(resumed) == full


def test_raw_storage_gives_the_same_batches(tmp_path, shards):
    write_samples(tmp_path / "raw", storage="raw")
    a = [b["pixel_values"] for b in _loader(shards[0])]
    b = [b["pixel_values"] for b in _loader(str(tmp_path / "raw"))]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)


def test_normalization_comes_from_the_schema_the_loader_is_given(tmp_path, shards):
    """``spec_or_schema`` as a path: its image column's learned mean/std normalize the pixels
    (not CLIP's constants, which shards without a schema above them get)."""
    import io

    from PIL import Image

    import shardforge.features as sf
    from shardforge.vision import image_normalization

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 80, (16, 16, 3), np.uint8)).save(
        buf, "PNG")
    fs = sf.FeatureSet([sf.text("text", vocabulary_list=["a", "b"], name="tokens"),
                        sf.image("images", normalize="learned", name="image")])
    batch, _ = fs.coerce({"text": ["a b"], "images": [[buf.getvalue()]]})
    fs.fit([batch]).save(str(tmp_path))
    mean, std = image_normalization(sf.load_schema(str(tmp_path)), "image")
    by_path = [b["pixel_values"] for b in _loader(shards[0], spec_or_schema=str(tmp_path))]
    by_value = [b["pixel_values"] for b in _loader(shards[0], mean=mean, std=std)]
    clip = [b["pixel_values"] for b in _loader(shards[0])]
    assert len(by_path) == len(by_value) == len(clip)
    assert all(torch.equal(x, y) for x, y in zip(by_path, by_value))
    assert not all(torch.equal(x, y) for x, y in zip(by_path, clip))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_sample_that_cannot_be_packed_is_named_by_shard_and_record(tmp_path, num_workers):
    rng = np.random.default_rng(4)
    (tmp_path / "train").mkdir()
    path = tmp_path / "train" / "part-00000-of-00001.tfrecord"
    with TFRecordWriter(path) as w:
        for i in range(6):
            markers = [IMG, IMG] if i == 4 else [IMG]  # sample 4: two markers, one image
            w.write(encode_example({"tokens": [11, *markers, 12],
                                    "image": [encode_pixels(_image(rng, 8, 8), LAYOUT, "png")]}))
    build_index(path)
    with pytest.raises((ValueError, RuntimeError),
                       match=f"{path}: record 4: sample 4 has 2 image markers"):
        for _ in _loader(str(tmp_path / "train"), shuffle=False, num_workers=num_workers):
            pass
