"""Triton kernels (varlen FlashAttention, fused AdamW), each beside a plain-PyTorch reference.

Importing this package needs only torch: the Triton modules (``attention_triton``,
``adamw_triton``) are imported on the first CUDA call, so no CUDA driver is touched at import time
and triton may be absent (then attention runs through torch's SDPA, one call per document,
and AdamW through its reference).
"""

from shardforge.kernels.adamw import FusedAdamW
from shardforge.kernels.attention import flash_attn_varlen, flash_attn_varlen_reference

__all__ = ["FusedAdamW", "flash_attn_varlen", "flash_attn_varlen_reference"]
