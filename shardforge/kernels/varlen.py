"""The varlen convention, checked once for every attention path.

``q [T, H, D]``, ``k``/``v [T, Hkv, D]`` with ``H`` a multiple of ``Hkv`` (grouped-query
attention), and ``cu_seqlens int32 [n_docs + 1]``: document ``i`` is tokens
``cu_seqlens[i]:cu_seqlens[i + 1]`` of the flat token axis (flash-attention's convention).
"""

from __future__ import annotations

import torch


def check_varlen_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor
) -> tuple[int, int, int, int]:
    """Validate shapes of a varlen call; return ``(T, H, Hkv, D)``."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            f"q, k, v must be [T, heads, head_dim]; got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    t, h, d = q.shape
    if k.shape != v.shape or k.shape[0] != t or k.shape[2] != d:
        raise ValueError(
            f"k and v must be [T={t}, Hkv, D={d}]; got k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    hkv = k.shape[1]
    if hkv == 0 or h % hkv != 0:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({hkv})")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1 or cu_seqlens.dtype.is_floating_point:
        raise ValueError(
            f"cu_seqlens must be a 1-D integer tensor [n_docs + 1]; got {cu_seqlens.dtype} "
            f"{tuple(cu_seqlens.shape)}"
        )
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    return t, h, hkv, d
