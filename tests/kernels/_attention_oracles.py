"""Shared helpers for the attention tests (CPU interpreter and GPU): inputs, oracles, tolerances."""

from __future__ import annotations

import math

import torch

from shardforge.kernels import flash_attn_varlen_reference


def make_inputs(lens, h, hkv, d, dtype, device="cpu", seed=0, trailing=0):
    """Random q/k/v for documents of lengths ``lens`` (+ ``trailing`` tokens in no document)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    t = sum(lens) + trailing
    q, k, v = (torch.randn(t, n, d, generator=g).to(device, dtype) for n in (h, hkv, hkv))
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu.to(device), max(lens, default=0)


def naive_attention(q, k, v, cu, causal=True, scale=None):
    """Per-document attention in the inputs' own dtype: the 'plain PyTorch in low precision'
    baseline whose error against fp32 sets the kernel's tolerance (flash-attention's test rule)."""
    t, h, d = q.shape
    group = h // k.shape[1]
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    bounds = cu.tolist()
    out = torch.zeros_like(q)
    pieces = []
    for s, e in zip(bounds, bounds[1:]):
        qd = q[s:e].transpose(0, 1)
        kd = k[s:e].transpose(0, 1).repeat_interleave(group, 0)
        vd = v[s:e].transpose(0, 1).repeat_interleave(group, 0)
        scores = (qd @ kd.transpose(1, 2)) * scale
        if causal:
            n = e - s
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1).to(q.device),
                                        float("-inf"))
        pieces.append((torch.softmax(scores, -1) @ vd).transpose(0, 1))
    if pieces:
        out = torch.cat([*pieces, out[bounds[-1]:]], 0)
    return out


def outputs_and_grads(fn, q, k, v, do):
    """Run ``fn(q, k, v)`` with fresh leaves; return ``[out, dq, dk, dv]``."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    out = fn(*leaves)
    out.backward(do.to(out.dtype))
    return [out.detach(), *(x.grad for x in leaves)]


def check_against_reference(kernel_fn, q, k, v, cu, max_seqlen, causal, scale=None):
    """Kernel output and grads vs fp32 reference, with flash-attention's tolerance rule."""
    g = torch.Generator(device="cpu").manual_seed(1)
    do = torch.randn(q.shape, generator=g).to(q.device)
    got = outputs_and_grads(kernel_fn, q, k, v, do)
    ref = outputs_and_grads(
        lambda a, b, c: flash_attn_varlen_reference(a, b, c, cu, max_seqlen, causal, scale),
        q.float(), k.float(), v.float(), do,
    )  # fmt: skip
    names = ["out", "dq", "dk", "dv"]
    if q.dtype == torch.float32:
        for name, a, b in zip(names, got, ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
        return
    base = outputs_and_grads(
        lambda a, b, c: naive_attention(a, b, c, cu, causal, scale), q, k, v, do
    )
    for i, (name, a, b, c) in enumerate(zip(names, got, ref, base)):
        kernel_err = (a.float() - b).abs().max().item()
        base_err = (c.float() - b).abs().max().item()
        # Rounding error of the dtype itself, so exact-zero baselines do not demand exactness.
        atol = 2 * (b + 0.3 - 0.3 - b).abs().max().item() + 2 * torch.finfo(q.dtype).eps
        factor = 2 if i == 0 else 3
        assert kernel_err <= factor * base_err + atol, (
            f"{name}: kernel error {kernel_err:.3g} > {factor} x torch {q.dtype} error "
            f"{base_err:.3g} + {atol:.3g}"
        )
