"""Chameleon-style discrete image tokens: the mergeable k-means codebook, nearest codes offset
into the text vocabulary with BOI/EOL/EOI, interleaving, and an early-fusion PackedLM."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import shardforge.features as sf
from shardforge.features.codebook import KMeansCodebook, codebook_of


def blobs(k=6, dim=5, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (k, dim))
    labels = rng.integers(0, k, n)
    return centers, centers[labels] + rng.normal(0, 0.3, (n, dim))


def _match(found, centers):
    # every true center has a code within 0.5, and vice versa
    d = np.linalg.norm(found[:, None] - centers[None], axis=2)
    return d.min(axis=0).max() < 0.5 and d.min(axis=1).max() < 0.5


@pytest.mark.parametrize("capacity", [24, 200])
def test_codebook_finds_the_clusters_in_one_pass_and_merged(capacity):
    centers, x = blobs()
    an = KMeansCodebook(k=6, dim=5, capacity=capacity)
    one = an.extract(an.add_batch(an.create(), x))
    # three workers with their own batches, merged in a tree (as Beam combines)
    parts = [an.add_batch(an.add_batch(an.create(), x[i:i + 500]), x[i + 500:i + 1000])
             for i in range(0, 3000, 1000)]
    tree = an.extract(an.merge([an.merge(parts[:2]), parts[2]]))
    for state in (one, tree):
        found = np.asarray(state.values).reshape(6, 5)
        assert _match(found, centers)


def png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


VOCAB = ["<image>", "a", "red", "blue", "square"]


def _feature_set(k=8):
    words = sf.text("text", vocabulary_list=VOCAB, num_oov_buckets=1, name="words")
    col = sf.image_tokens("img", text=words, text_vocab_size=len(VOCAB) + 1, marker_id=0,
                          codebook_size=k, patch_size=8, min_pixels=16 * 16, max_pixels=32 * 32,
                          name="tokens")
    return col, sf.FeatureSet([col])


def _images(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(12):
        arr = np.zeros((32, 32, 3), np.uint8)
        arr[:] = rng.choice([[200, 30, 30], [30, 30, 200], [240, 240, 240]])
        arr[8:24, 8:24] = rng.choice([[200, 30, 30], [30, 30, 200]])
        out.append(png(arr))
    return out


def test_tokens_are_text_then_framed_nearest_codes(tmp_path):
    col, fs = _feature_set()
    imgs = _images()
    raw = {"img": [[d] for d in imgs[:10]] + [[imgs[10], imgs[11]]],
           "text": ["a red square"] * 10 + ["<image> a red <image> square"]}
    batch, errors = fs.coerce(raw)
    assert not errors
    state = fs.fit([batch])
    state.save(str(tmp_path))
    reloaded = sf.load_schema(str(tmp_path)).state
    out = fs.transform(batch, reloaded)["tokens"]
    v, k = len(VOCAB) + 1, 8
    boi, eoi, eol = v + k, v + k + 1, v + k + 2
    codebook = codebook_of(reloaded.columns["tokens"], k, col.dim)
    # first row: an image (4x4 patches of 8 px: 4 lines of 4 codes + EOL), then the text
    row = out[0].tolist()
    assert row[0] == boi and row[21] == eoi and row[22:] == [1, 2, 4]
    lines = np.asarray(row[1:21]).reshape(4, 5)
    assert (lines[:, 4] == eol).all() and ((lines[:, :4] >= v) & (lines[:, :4] < v + k)).all()
    # the codes are the nearest codebook rows of the CLIP-normalized patches
    vectors, _ = col._patches(raw["img"][0][0], b"")
    nearest = ((vectors[:, None] - codebook[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (lines[:, :4].ravel() - v).tolist() == nearest.tolist()
    # markers: each becomes its image, in order
    last = out[10].tolist()
    assert last[0] == boi and last.count(boi) == 2 and last.count(eoi) == 2
    second = last.index(boi, 1)
    assert last[last.index(eoi) + 1:second] == [1, 2] and last[-1] == 4
    assert max(out.values) < col.vocab_size


def test_markers_must_match_images():
    _, fs = _feature_set()
    imgs = _images()
    raw = {"img": [[imgs[0]], [imgs[1]]], "text": ["a red square", "<image> <image> a"]}
    batch, _ = fs.coerce(raw)
    state = fs.fit([batch])
    out, errors = fs.transform(batch, state, errors="collect")
    assert [e.row for e in errors] == [1] and "markers" in errors[0].reason
    assert len(out["tokens"]) == 1


def test_early_fusion_lm_with_qk_norm_and_z_loss_learns_the_tokens():
    from shardforge.training.models.lm import LMConfig, PackedLM
    from shardforge.training.packing import pack_documents, shift_labels

    col, fs = _feature_set()
    imgs = _images()
    raw = {"img": [[d] for d in imgs], "text": ["a red square"] * len(imgs)}
    batch, _ = fs.coerce(raw)
    tokens = fs.transform(batch, fs.fit([batch]))["tokens"]
    torch.manual_seed(0)
    model = PackedLM(LMConfig(vocab_size=col.vocab_size, n_layer=1, n_head=2, n_kv_head=1,
                              d_model=32, qk_norm=True, z_loss=1e-4))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    (b,) = pack_documents(tokens, packing_length=512)
    losses = []
    for _ in range(30):
        out = model(b["input_ids"], b["position_ids"], b["cu_seqlens"], b["max_seqlen"],
                    shift_labels(b["labels"]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.ce.item())
    assert out.loss > out.ce  # the z-loss term is on
    assert losses[-1] < 0.5 * losses[0]
