"""A small decoder-only language model for packed, padding-free batches (nanoGPT-like).

The whole batch is ONE flat sequence of ``T`` tokens holding many documents back to back;
``cu_seqlens`` (int32, ``[n_docs + 1]``) marks where each document starts, and ``position_ids``
restart at 0 in every document. Nothing in the model mixes documents: RMSNorm, the MLP and the
embeddings act per token, rotary embeddings read ``position_ids``, and attention goes through
:func:`shardforge.kernels.flash_attn_varlen`, which attends only within a document. So a packed
batch gives every document exactly the outputs it would get alone.

Architecture: token embedding -> n x [RMSNorm -> grouped-query attention with RoPE (and
optional QK-norm) -> residual, RMSNorm -> SwiGLU -> residual] -> RMSNorm -> tied LM head.
QK-norm and the z-loss (``z_loss · mean(logsumexp(logits)²)``) are the training-stability recipe
of Chameleon (Chameleon Team, 2024) and PaLM.

>>> import torch
>>> model = PackedLM(LMConfig(vocab_size=64, n_layer=1, n_head=2, n_kv_head=1, d_model=16))
>>> ids = torch.tensor([5, 6, 7, 8, 9])
>>> out = model(ids, position_ids=torch.tensor([0, 1, 2, 0, 1]),
...             cu_seqlens=torch.tensor([0, 3, 5], dtype=torch.int32), max_seqlen=3,
...             targets=torch.tensor([6, 7, -100, 9, -100]))
>>> out.logits.shape, out.loss.ndim
(torch.Size([5, 64]), 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shardforge.kernels import flash_attn_varlen

IGNORE_INDEX = -100


@dataclass
class LMConfig:
    vocab_size: int = 512
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 2  # grouped-query attention: n_head // n_kv_head query heads share a K/V head
    d_model: int = 128
    ffn_hidden: int | None = None  # default: 8/3 · d_model rounded up to a multiple of 32
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qk_norm: bool = False
    z_loss: float = 0.0  # Chameleon uses 1e-5
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for key in ("vocab_size", "n_layer", "n_head", "n_kv_head", "d_model", "ffn_hidden"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1, not {value!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}"
            )
        if (self.d_model // self.n_head) % 2:
            raise ValueError("the head dimension must be even for rotary embeddings")
        if self.ffn_hidden is None:
            self.ffn_hidden = 32 * math.ceil(8 * self.d_model / 3 / 32)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class LMOutput(NamedTuple):
    logits: torch.Tensor  # [T, vocab] in fp32
    loss: torch.Tensor | None  # ce + z_loss term, a scalar
    ce: torch.Tensor | None  # mean next-token cross-entropy over counted targets


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalize in fp32 whatever the autocast dtype: the mean square underflows in bf16
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).type_as(x)


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[T, head_dim // 2]`` for each token's position within its own document."""
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    )
    angles = position_ids.float()[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head's dims; x is ``[T, H, D]``."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        kv_dim = cfg.n_kv_head * cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wk = nn.Linear(cfg.d_model, kv_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, kv_dim, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen):
        T = x.shape[0]
        cfg = self.cfg
        q = self.wq(x).view(T, cfg.n_head, cfg.head_dim)
        k = self.wk(x).view(T, cfg.n_kv_head, cfg.head_dim)
        v = self.wv(x).view(T, cfg.n_kv_head, cfg.head_dim)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        att = flash_attn_varlen(q, k, v, cu_seqlens, max_seqlen, causal=True)  # [T, H, D]
        return self.wo(att.reshape(T, cfg.d_model))


class SwiGLU(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.w_down = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen):
        x = x + self.attn(self.attn_norm(x), cos, sin, cu_seqlens, max_seqlen)
        return x + self.mlp(self.mlp_norm(x))


class PackedLM(nn.Module):
    """Decoder-only LM over packed batches; see the module docstring."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2·n_layer) so the stream's variance
        # does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith(("attn.wo.weight", "mlp.w_down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def repeated_blocks(self) -> list[nn.Module]:
        """The transformer blocks (:class:`~shardforge.training.models.TrainableModel`)."""
        return list(self.blocks)

    def num_params(self) -> int:
        """Unique parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: torch.Tensor,  # [T] int64
        position_ids: torch.Tensor,  # [T], restarting at 0 per document
        cu_seqlens: torch.Tensor,  # [n_docs + 1] int32
        max_seqlen: int,
        targets: torch.Tensor | None = None,  # [T]: the NEXT token of each position, or -100
        inputs_embeds: torch.Tensor | None = None,  # [T, d_model]: instead of embed(input_ids)
    ) -> LMOutput:
        cos, sin = rope_cos_sin(position_ids, self.cfg.head_dim, self.cfg.rope_theta)
        # a VLM passes its own embeddings (image features at the placeholders)
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # [T, d_model]
        for block in self.blocks:
            x = block(x, cos, sin, cu_seqlens, max_seqlen)
        logits = self.lm_head(self.norm(x)).float()  # [T, vocab]
        if targets is None:
            return LMOutput(logits, None, None)
        counted = targets != IGNORE_INDEX
        n = counted.sum().clamp(min=1)  # a batch of only 1-token documents has no targets
        ce = F.cross_entropy(logits[counted], targets[counted], reduction="sum") / n
        loss = ce
        if self.cfg.z_loss:
            # pushes log Z towards 0 so the softmax normalizer cannot drift (Chameleon, PaLM)
            log_z = torch.logsumexp(logits[counted], dim=-1)
            loss = loss + self.cfg.z_loss * log_z.pow(2).sum() / n
        return LMOutput(logits, loss, ce)
