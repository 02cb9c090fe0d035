"""A native-resolution vision encoder (NaViT / MoonViT-like) and the VLM that feeds it to
:class:`~shardforge.training.models.lm.PackedLM`.

Images of any size arrive as one flat sequence of patches (``pixel_values [P, C·T·p·p]`` of a
multimodal packed batch, see :mod:`shardforge.training.mm_packing`); ``vision_cu_seqlens`` marks
where each image starts, exactly like ``cu_seqlens`` marks documents for the LM. Nothing mixes
images: the patch embedding, norms and MLPs act per patch, the 2D rotary embedding reads each
patch's (row, column) in its own image, and attention is
:func:`shardforge.kernels.flash_attn_varlen` with ``causal=False`` over the per-image
boundaries. So a packed batch gives every image the output it gets alone.

Architecture: linear patch embedding -> n x [RMSNorm -> bidirectional attention with 2D RoPE ->
residual, RMSNorm -> GELU MLP -> residual] -> RMSNorm -> 2×2 pixel-shuffle merger (the
``merge²`` patches of a block concatenated channel-major, ``F.pixel_unshuffle``'s order) ->
MLP projector to the LM's width. The merged features replace the LM's image placeholder
tokens, one per ``merge × merge`` block, in order (the patch order of Qwen2-VL's processor keeps
each block's patches contiguous, so the merge is a reshape).

>>> import torch
>>> enc = VisionEncoder(VisionConfig(patch_dim=48, d_model=32, n_layer=1, n_head=2, out_dim=16))
>>> grid = torch.tensor([[1, 4, 6], [1, 2, 2]])
>>> from shardforge.vision import patch_positions
>>> pos = torch.from_numpy(patch_positions(grid.numpy(), 2))
>>> feats = enc(torch.randn(28, 48), pos, torch.tensor([0, 24, 28], dtype=torch.int32), 24)
>>> feats.shape                       # (24 + 4) patches / 2² blocks, projected to out_dim
torch.Size([7, 16])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shardforge.kernels import flash_attn_varlen
from shardforge.training.models.lm import LMOutput, PackedLM, RMSNorm, apply_rope


@dataclass
class VisionConfig:
    patch_dim: int = 3 * 2 * 14 * 14  # C · T · p · p of the image column's layout
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    mlp_ratio: float = 4.0
    merge_size: int = 2
    out_dim: int = 128  # the LM's d_model
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for key in ("patch_dim", "d_model", "n_layer", "n_head", "merge_size", "out_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, not {getattr(self, key)!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_head={self.n_head}")
        if self.head_dim % 4:
            raise ValueError("the head dimension must be a multiple of 4 for 2D rotary "
                             "embeddings (a rotated pair per axis)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


def rope_2d(positions: torch.Tensor, head_dim: int, theta: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[P, head_dim // 2]`` for patches at ``positions [P, 2]`` (row, column):
    half of the rotated pairs turn with the row, half with the column (Qwen2-VL's and
    MoonViT's 2D RoPE), for :func:`~shardforge.training.models.lm.apply_rope`."""
    quarter = head_dim // 4
    inv_freq = 1.0 / theta ** (
        torch.arange(quarter, device=positions.device, dtype=torch.float32) / quarter)
    rows = positions[:, 0].float()[:, None] * inv_freq[None, :]
    cols = positions[:, 1].float()[:, None] * inv_freq[None, :]
    angles = torch.cat([rows, cols], dim=-1)
    return angles.cos(), angles.sin()


def pixel_unshuffle_merge(x: torch.Tensor, merge_size: int) -> torch.Tensor:
    """``[P, D] -> [P / m², D · m²]``: each ``m × m`` block of patches (contiguous in the
    processor's patch order, row-major inside the block) becomes one vector, channel-major:
    ``out[b, c·m² + i·m + j] = x[patch (i, j) of block b, c]``, which is
    ``F.pixel_unshuffle(grid [D, H, W], m)`` read at block ``b``."""
    m2 = merge_size * merge_size
    if x.shape[0] % m2:
        raise ValueError(f"{x.shape[0]} patches are not whole {merge_size}x{merge_size} blocks")
    return x.reshape(-1, m2, x.shape[1]).transpose(1, 2).reshape(-1, x.shape[1] * m2)


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen):
        n, cfg = x.shape[0], self.cfg
        q, k, v = self.qkv(x).view(n, 3, cfg.n_head, cfg.head_dim).unbind(1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        att = flash_attn_varlen(q, k, v, cu_seqlens, max_seqlen, causal=False)  # [P, H, D]
        return self.proj(att.reshape(n, cfg.d_model))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        hidden = int(cfg.d_model * cfg.mlp_ratio)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = VisionAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, cfg.d_model))

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen):
        x = x + self.attn(self.attn_norm(x), cos, sin, cu_seqlens, max_seqlen)
        return x + self.mlp(self.mlp_norm(x))


class VisionEncoder(nn.Module):
    """Patches of packed images -> one LM-width feature per ``merge × merge`` block."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.d_model)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        merged = cfg.d_model * cfg.merge_size ** 2
        self.projector = nn.Sequential(nn.Linear(merged, merged), nn.GELU(approximate="tanh"),
                                       nn.Linear(merged, cfg.out_dim))

    def repeated_blocks(self) -> list[nn.Module]:
        """The transformer blocks (:class:`~shardforge.training.models.TrainableModel`)."""
        return list(self.blocks)

    def forward(
        self,
        pixel_values: torch.Tensor,  # [P, patch_dim]
        patch_positions: torch.Tensor,  # [P, 2] (row, column) in its image
        cu_seqlens: torch.Tensor,  # [n_images + 1] int32
        max_seqlen: int,
    ) -> torch.Tensor:  # [P / merge², out_dim]
        cos, sin = rope_2d(patch_positions, self.cfg.head_dim, self.cfg.rope_theta)
        x = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype))
        for block in self.blocks:
            x = block(x, cos, sin, cu_seqlens, max_seqlen)
        return self.projector(pixel_unshuffle_merge(self.norm(x), self.cfg.merge_size))


class VisionLanguageModel(nn.Module):
    """:class:`VisionEncoder` + :class:`PackedLM`: image features replace the placeholder tokens
    (``image_token_id``) of a multimodal packed batch, in order.

    ``model(batch, targets)`` takes the batch of :func:`shardforge.training.mm_packing.
    multimodal_loader` and the next-token targets (``shift_labels(batch["labels"])``).
    """

    def __init__(self, encoder: VisionEncoder, lm: PackedLM, image_token_id: int) -> None:
        super().__init__()
        if encoder.cfg.out_dim != lm.cfg.d_model:
            raise ValueError(f"encoder out_dim={encoder.cfg.out_dim} != LM d_model="
                             f"{lm.cfg.d_model}")
        self.encoder, self.lm, self.image_token_id = encoder, lm, int(image_token_id)

    def repeated_blocks(self) -> list[nn.Module]:
        """The encoder's blocks, then the LM's
        (:class:`~shardforge.training.models.TrainableModel`)."""
        return self.encoder.repeated_blocks() + self.lm.repeated_blocks()

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """The LM's input embeddings ``[T, d_model]`` with the image features in place."""
        input_ids = batch["input_ids"]
        x = self.lm.embed(input_ids)
        # the encoder runs even on a batch without images (zero patches): under ZeRO-3 its
        # forward all-gathers its weights, which every rank must do the same number of times
        feats = self.encoder(batch["pixel_values"], batch["patch_positions"],
                             batch["vision_cu_seqlens"], batch["vision_max_seqlen"])
        slots = input_ids == self.image_token_id
        if int(slots.sum()) != feats.shape[0]:
            raise ValueError(f"{int(slots.sum())} image placeholders but {feats.shape[0]} "
                             f"merged image features: batch and merge_size disagree")
        x = x.clone()
        x[slots] = feats.to(x.dtype)
        return x

    def forward(self, batch: dict[str, Any], targets: torch.Tensor | None = None) -> LMOutput:
        return self.lm(batch["input_ids"], batch["position_ids"], batch["cu_seqlens"],
                       batch["max_seqlen"], targets, inputs_embeds=self.embed(batch))
