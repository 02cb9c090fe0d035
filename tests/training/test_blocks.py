"""Every model kind at ZeRO stages 0-3 with activation checkpointing on: the blocks it lists
are the ones that are recomputed in backward and (stage 3) sharded one by one — for the VLM,
the vision encoder's blocks and the LM's (found through the TrainableModel protocol)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from shardforge.training.config import TrainConfig
from shardforge.training.models import TrainableModel
from shardforge.training.models.lm import LMConfig, PackedLM
from shardforge.training.models.vision import VisionConfig, VisionEncoder, VisionLanguageModel
from shardforge.training.parallel import clip_and_step, parallelize, setup_distributed

LM = dict(vocab_size=64, n_layer=2, n_head=2, n_kv_head=1, d_model=32)
VISION = dict(patch_dim=48, d_model=32, n_layer=3, n_head=2, out_dim=32)
T, PATCHES = 12, 16  # 16 patches of one 4x4 image merge 2x2 into 4 placeholder tokens


def text_inputs(g: torch.Generator) -> tuple:
    ids = torch.randint(1, 64, (T,), generator=g)
    ids[:4] = 0  # the image placeholders
    return ids, torch.arange(T), torch.tensor([0, T], dtype=torch.int32), T


def lm_case(g):
    model = PackedLM(LMConfig(**LM))
    ids, pos, cu, max_len = text_inputs(g)
    return model, list(model.blocks), lambda m: m(ids, pos, cu, max_len, targets=ids).loss


def vlm_case(g):
    model = VisionLanguageModel(VisionEncoder(VisionConfig(**VISION)), PackedLM(LMConfig(**LM)),
                                image_token_id=0)
    ids, pos, cu, max_len = text_inputs(g)
    batch = {"input_ids": ids, "position_ids": pos, "cu_seqlens": cu, "max_seqlen": max_len,
             "pixel_values": torch.randn(PATCHES, 48, generator=g),
             "patch_positions": torch.stack([torch.arange(PATCHES) // 4,
                                             torch.arange(PATCHES) % 4], 1),
             "vision_cu_seqlens": torch.tensor([0, PATCHES], dtype=torch.int32),
             "vision_max_seqlen": PATCHES}
    expected = list(model.encoder.blocks) + list(model.lm.blocks)
    return model, expected, lambda m: m(batch, ids).loss


def encoder_case(g):
    model = VisionEncoder(VisionConfig(**VISION))
    x, positions = torch.randn(PATCHES, 48, generator=g), torch.zeros(PATCHES, 2).long()
    cu = torch.tensor([0, PATCHES], dtype=torch.int32)
    return model, list(model.blocks), lambda m: m(x, positions, cu, PATCHES).pow(2).mean()


def tabular_case(g, tmp_path):
    import shardforge.features as sf
    from shardforge.training import shard_loader
    from shardforge.training.models.tabular import TabularConfig, TabularModel
    from tests.training.test_trainer import make_tabular_data

    data = make_tabular_data(tmp_path / "data", n_rows=200)
    model = TabularModel(sf.load_schema(str(data)), TabularConfig(hidden=(8,)))
    batch = next(iter(shard_loader(str(data / "train"), batch_size=32)))
    labels = torch.as_tensor(batch.pop("label")).reshape(-1)
    return model, [], lambda m: model.loss(m(batch), labels)


@pytest.fixture
def one_rank_group():
    """The one-rank group parallelize's stages 1-3 run in, removed again afterwards."""
    had = dist.is_initialized()
    yield
    if dist.is_initialized() and not had:
        dist.destroy_process_group()


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("kind", ["lm", "vlm", "vision_encoder", "tabular"])
def test_listed_blocks_are_recomputed_and_sharded(kind, stage, tmp_path, one_rank_group):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if kind == "tabular":
        model, expected, loss_of = tabular_case(g, tmp_path)
    else:
        model, expected, loss_of = {"lm": lm_case, "vlm": vlm_case,
                                    "vision_encoder": encoder_case}[kind](g)
    assert isinstance(model, TrainableModel)
    assert model.repeated_blocks() == expected
    calls = [0] * len(expected)
    for i, block in enumerate(expected):  # a child of the block runs again when it recomputes
        first = next(block.children())
        first.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    cfg = TrainConfig(zero_stage=stage, activation_checkpointing=True, device="cpu")
    model, optimizer = parallelize(model, cfg, setup_distributed("cpu", stage),
                                   torch.device("cpu"))
    loss = loss_of(model)
    assert calls == [1] * len(expected)
    loss.backward()
    assert calls == [2] * len(expected)  # each block's forward ran again in backward
    assert all(p.grad is not None for p in model.parameters())
    clip_and_step(model, optimizer, 1.0)
    if stage == 3:
        assert isinstance(model, FSDPModule)
        assert all(isinstance(block, FSDPModule) for block in expected)
