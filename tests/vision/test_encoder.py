"""The vision encoder: packed images get their solo outputs, the merger is pixel_unshuffle, and
the VLM puts image features at the placeholders."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shardforge.training.models.lm import LMConfig, PackedLM
from shardforge.training.models.vision import (
    VisionConfig,
    VisionEncoder,
    VisionLanguageModel,
    pixel_unshuffle_merge,
)
from shardforge.vision import patch_positions

CFG = VisionConfig(patch_dim=48, d_model=32, n_layer=2, n_head=2, out_dim=24)


def _images(grids, seed=0):
    g = torch.Generator().manual_seed(seed)
    pv = [torch.randn(h * w, CFG.patch_dim, generator=g) for _, h, w in grids]
    return pv


def _run(enc, pv_list, grids):
    pv = torch.cat(pv_list)
    pos = torch.from_numpy(patch_positions(np.array(grids), 2))
    n = [h * w for _, h, w in grids]
    cu = torch.tensor(np.concatenate([[0], np.cumsum(n)]), dtype=torch.int32)
    return enc(pv, pos, cu, max(n))


def test_packed_images_get_their_solo_outputs():
    torch.manual_seed(0)
    enc = VisionEncoder(CFG).eval()
    grids = [(1, 4, 6), (1, 2, 2), (1, 8, 2), (1, 6, 6)]
    pv = _images(grids)
    with torch.no_grad():
        packed = _run(enc, pv, grids)
        solo = torch.cat([_run(enc, [p], [g]) for p, g in zip(pv, grids)])
    assert packed.shape == (sum(h * w for _, h, w in grids) // 4, CFG.out_dim)
    torch.testing.assert_close(packed, solo, rtol=1e-5, atol=1e-5)


def test_attention_sees_the_whole_image_not_only_the_past():
    torch.manual_seed(0)
    enc = VisionEncoder(CFG).eval()
    grids = [(1, 4, 4)]
    pv = _images(grids)[0]
    changed = pv.clone()
    changed[-1] += 1.0  # the last patch: a causal encoder would not see it from the first block
    with torch.no_grad():
        a, b = _run(enc, [pv], grids), _run(enc, [changed], grids)
    assert not torch.allclose(a[0], b[0])


def test_positions_matter():
    # the same patches in another arrangement (4x6 vs 6x4) give different features: 2D RoPE
    torch.manual_seed(0)
    enc = VisionEncoder(CFG).eval()
    pv = _images([(1, 4, 6)])[0]
    with torch.no_grad():
        a, b = _run(enc, [pv], [(1, 4, 6)]), _run(enc, [pv], [(1, 6, 4)])
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("merge", [2, 3])
def test_merger_matches_pixel_unshuffle(merge):
    d, gh, gw = 5, 2 * merge, 3 * merge
    grid = torch.randn(d, gh, gw)  # patch features on the image grid, channels first
    # the processor's patch order: blocks row-major, the merge x merge patches inside each
    pos = patch_positions(np.array([[1, gh, gw]]), merge)
    x = grid[:, pos[:, 0], pos[:, 1]].T  # [P, D]
    merged = pixel_unshuffle_merge(x, merge)  # [blocks, D * m²]
    ref = F.pixel_unshuffle(grid[None], merge)[0]  # [D * m², gh / m, gw / m]
    assert torch.equal(merged, ref.reshape(d * merge * merge, -1).T)


def test_vlm_puts_image_features_at_the_placeholders():
    torch.manual_seed(0)
    lm = PackedLM(LMConfig(vocab_size=50, n_layer=1, n_head=2, n_kv_head=1, d_model=24))
    vlm = VisionLanguageModel(VisionEncoder(CFG), lm, image_token_id=3)
    grids = [(1, 2, 4), (1, 2, 2)]
    pv = torch.cat(_images(grids))
    ids = torch.tensor([7, 3, 3, 8, 9, 3, 10])
    batch = {
        "input_ids": ids, "position_ids": torch.tensor([0, 1, 2, 3, 0, 1, 2]),
        "cu_seqlens": torch.tensor([0, 4, 7], dtype=torch.int32), "max_seqlen": 4,
        "pixel_values": pv, "patch_positions": torch.from_numpy(patch_positions(
            np.array(grids), 2)),
        "vision_cu_seqlens": torch.tensor([0, 8, 12], dtype=torch.int32),
        "vision_max_seqlen": 8,
    }
    x = vlm.embed(batch)
    feats = vlm.encoder(pv, batch["patch_positions"], batch["vision_cu_seqlens"], 8)
    assert torch.equal(x[ids == 3], feats)
    assert torch.equal(x[ids != 3], lm.embed(ids[ids != 3]))
    out = vlm(batch, targets=torch.tensor([-100, -100, 8, -100, -100, 10, -100]))
    out.loss.backward()
    assert vlm.encoder.patch_embed.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="placeholders"):
        vlm.embed(dict(batch, input_ids=torch.tensor([7, 3, 8, 8, 9, 3, 10])))
