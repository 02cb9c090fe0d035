"""Triton kernels (varlen FlashAttention, fused AdamW), each beside a plain-PyTorch reference."""
