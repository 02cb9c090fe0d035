"""Variable-length (packed) attention: public API, plain-PyTorch reference, SDPA path, dispatch.

The varlen convention (the same as flash-attention's ``flash_attn_varlen_func``):

* ``q`` is ``[T, H, D]``, ``k`` and ``v`` are ``[T, Hkv, D]``: the tokens of all documents of a
  batch concatenated along the first axis, no padding. ``H`` must be a multiple of ``Hkv``
  (grouped-query attention): query head ``h`` reads key/value head ``h // (H // Hkv)``.
* ``cu_seqlens`` is ``int32 [n_docs + 1]``, the cumulative document lengths starting at 0: document
  ``i`` is the token range ``cu_seqlens[i]:cu_seqlens[i + 1]``. Tokens never attend across
  documents. Tokens after ``cu_seqlens[-1]`` (if any) belong to no document: their output and
  gradients are zero.
* ``max_seqlen`` is the longest document length (a Python int): it sizes the kernel grid without
  reading ``cu_seqlens`` back from the GPU, so it must not be smaller than the longest document
  (rows past it would not be computed).
* ``causal=True`` masks keys after the query inside each document; ``softmax_scale`` defaults to
  ``1 / sqrt(D)``.

The Triton kernels live in :mod:`shardforge.kernels.attention_triton`, imported lazily on the
first CUDA call: importing this module needs only torch (no triton, no CUDA driver), which also
keeps triton's bundled LLVM out of processes that never run a kernel.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import torch
import torch.nn.functional as F

from shardforge.kernels.varlen import check_varlen_inputs

__all__ = ["flash_attn_varlen", "flash_attn_varlen_reference", "flash_attn_varlen_sdpa"]


def document_bounds(cu_seqlens: torch.Tensor, t: int) -> list[int]:
    """``cu_seqlens`` as a list, checked against the varlen convention for ``T = t`` tokens."""
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] > t or any(b < a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(
            f"cu_seqlens must start at 0, be non-decreasing and end at most at T={t}; got "
            f"{bounds[:4]}...{bounds[-2:]}"
        )
    return bounds


def flash_attn_varlen_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int | None = None,
    causal: bool = True,
    softmax_scale: float | None = None,
) -> torch.Tensor:
    """Per-document softmax attention in fp32 (fp64 for fp64 inputs) with plain PyTorch ops.

    The oracle for the Triton kernels and :func:`flash_attn_varlen_sdpa`. It builds one
    ``[H, L, L]`` score matrix per document, so memory grows with the longest document.
    ``max_seqlen`` is accepted for signature parity and otherwise unused. Returns ``q.dtype``.
    """
    t, h, hkv, d = check_varlen_inputs(q, k, v, cu_seqlens)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    group = h // hkv
    acc = torch.promote_types(q.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
    bounds = document_bounds(cu_seqlens, t)
    pieces = []
    for start, end in zip(bounds, bounds[1:]):
        if end == start:
            continue
        qd = q[start:end].to(acc).transpose(0, 1)  # [H, L, D]
        kd = k[start:end].to(acc).transpose(0, 1).repeat_interleave(group, dim=0)
        vd = v[start:end].to(acc).transpose(0, 1).repeat_interleave(group, dim=0)
        scores = torch.matmul(qd, kd.transpose(1, 2)) * scale  # [H, L, L]
        if causal:
            n = end - start
            future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        att = torch.softmax(scores, dim=-1)
        pieces.append(torch.matmul(att, vd).transpose(0, 1))  # [L, H, D]
    if bounds[-1] < t:
        pieces.append(q.new_zeros(t - bounds[-1], h, d, dtype=acc))
    if not pieces:
        return torch.zeros_like(q)
    return torch.cat(pieces, dim=0).to(q.dtype)


def flash_attn_varlen_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int | None = None,
    causal: bool = True,
    softmax_scale: float | None = None,
) -> torch.Tensor:
    """Per-document ``F.scaled_dot_product_attention``: the path without Triton (the CPU's).

    One SDPA call per document, so no score matrix spans two documents and none is materialized
    on the CPU: 4-D inputs reach torch's fused CPU flash-attention kernel (forward and backward,
    no ``[H, L, L]`` tensor kept for autograd; 3-D ones fall back to the unfused math). Measured
    on 2 cores, one thread, fwd+bwd at the LM example's shape (``H=4, Hkv=2, D=32``): 2-3x the
    reference for one 1,024-token document, on par for sixteen 64-token ones; one call over
    ``T`` with a block-diagonal mask computes every cross-document block and lost there (0.1-1x).
    Same signature and output rules as :func:`flash_attn_varlen_reference`, in the inputs' dtype.
    """
    t, h, _, d = check_varlen_inputs(q, k, v, cu_seqlens)
    bounds = document_bounds(cu_seqlens, t)
    pieces = []
    for start, end in zip(bounds, bounds[1:]):
        if end == start:
            continue
        qd, kd, vd = (x[start:end].transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # [1, H, L, D]
        out = F.scaled_dot_product_attention(
            qd, kd, vd, is_causal=causal, scale=softmax_scale, enable_gqa=True
        )
        pieces.append(out[0].transpose(0, 1))  # [L, H, D]
    if not pieces:
        return torch.zeros_like(q)
    if bounds[-1] < t:  # in the dtype SDPA computed in (autocast's, on a GPU)
        pieces.append(pieces[0].new_zeros(t - bounds[-1], h, d))
    return torch.cat(pieces, dim=0)


@functools.cache
def triton_available() -> bool:
    """True when triton can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def flash_attn_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    causal: bool = True,
    softmax_scale: float | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over packed documents, differentiable in q, k and v.

    Args:
        q: ``[T, H, D]`` queries of all documents concatenated.
        k, v: ``[T, Hkv, D]`` keys and values, ``H % Hkv == 0``.
        cu_seqlens: ``int32 [n_docs + 1]`` document boundaries, ``cu_seqlens[0] == 0``.
        max_seqlen: the longest document length.
        causal: mask future keys within each document.
        softmax_scale: defaults to ``1 / sqrt(D)``.
        backend: ``"auto"`` (Triton for CUDA tensors when triton is installed,
            :func:`flash_attn_varlen_sdpa` otherwise), ``"triton"``, ``"sdpa"`` or
            ``"reference"``.

    Returns:
        ``[T, H, D]`` in ``q.dtype`` (under CUDA autocast: in the autocast dtype, like SDPA).

    Example:
        >>> q = torch.randn(7, 4, 64); kv = torch.randn(7, 2, 64)
        >>> cu = torch.tensor([0, 3, 7], dtype=torch.int32)
        >>> flash_attn_varlen(q, kv, kv, cu, max_seqlen=4).shape
        torch.Size([7, 4, 64])
    """
    if backend not in ("auto", "triton", "sdpa", "reference"):
        raise ValueError(
            f"backend must be 'auto', 'triton', 'sdpa' or 'reference'; got {backend!r}"
        )
    if backend == "auto":
        backend = "triton" if q.is_cuda and triton_available() else "sdpa"
    if backend == "sdpa":
        return flash_attn_varlen_sdpa(q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale)
    if backend == "reference":
        return flash_attn_varlen_reference(q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale)
    from shardforge.kernels import attention_triton

    if q.is_cuda and torch.is_autocast_enabled("cuda"):
        # Like F.scaled_dot_product_attention, run in autocast's precision (q may arrive in
        # fp32 from a RoPE or norm computed in fp32 while v is already bf16).
        dtype = torch.get_autocast_dtype("cuda")
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    return attention_triton.flash_attn_varlen_triton(
        q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale
    )
