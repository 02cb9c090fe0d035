"""Triton multi-tensor AdamW: one launch updates every tensor of a bucket through a pointer table.

Why a pointer table rather than a flat parameter buffer: a flat buffer needs the parameters (and,
every step, the gradients) to live in one allocation, which means re-pointing ``param.data`` and
copying gradients in — an extra 8 bytes/param of traffic for an update that moves 28. The table
leaves every tensor where it is: row ``i`` holds the addresses of param ``i``, its gradient,
``exp_avg``, ``exp_avg_sq`` and (master mode) its fp32 master copy, and a chunk list maps each
program to (tensor, chunk). Per step the host rebuilds the table only when an address changed
(a gradient re-allocated after ``zero_grad(set_to_none=True)``), then does one small copy and one
launch.

Bytes per parameter and step: fp32 reads p, g, m, v and writes p, m, v (28 B); master mode reads
master (fp32), g (bf16), m, v and writes master, m, v, p (bf16) — also 28 B.

The kernel's arithmetic follows torch's CUDA AdamW step by step (decay, lerp, addcmul, sqrt,
div, addcdiv) with IEEE-rounded sqrt and division, so fp32 results agree to within an ulp or two.
"""

from __future__ import annotations

import itertools
import os

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRET", "adamw_triton_"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if INTERPRET:
    # Small chunks so that test tensors of a few hundred elements span several programs and a
    # ragged tail.
    BLOCK, CHUNK, NUM_WARPS = 64, 256, 4
else:
    # 1024 fp32 = 8 per thread at 4 warps (two 16-byte vectors); a program walks 64 such blocks
    # (256 KB per tensor stream) so 1B parameters need ~15k programs, not ~1M tiny ones.
    BLOCK, CHUNK, NUM_WARPS = 1024, 65536, 4
_N_COLS = 5  # param, grad, exp_avg, exp_avg_sq, master


@triton.jit
def _adamw_block(
    p_ptr, g_ptr, m_ptr, v_ptr, w_ptr, offs, n,
    decay, lerp_w, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps,
    HAS_MASTER: tl.constexpr, MAXIMIZE: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    if MASKED:
        mask = offs < n
    else:
        mask = None
    src = w_ptr if HAS_MASTER else p_ptr
    p = tl.load(src + offs, mask=mask).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
    m = tl.load(m_ptr + offs, mask=mask).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask).to(tl.float32)
    if MAXIMIZE:
        g = -g
    p = p * decay
    # torch.lerp's two-sided formula, so exp_avg matches torch bit for bit.
    m = tl.where(lerp_w < 0.5, m + lerp_w * (g - m), g - (g - m) * (1.0 - lerp_w))
    v = v * beta2
    v = v + one_minus_beta2 * g * g
    denom = tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps
    p = p + neg_step_size * tl.div_rn(m, denom)
    tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)
    tl.store(v_ptr + offs, v.to(v_ptr.dtype.element_ty), mask=mask)
    if HAS_MASTER:
        tl.store(w_ptr + offs, p, mask=mask)
    tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _adamw_kernel(
    table, numels, chunk_tensor, chunk_index, p_ref, g_ref, s_ref,
    decay, lerp_w, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps,
    HAS_MASTER: tl.constexpr, MAXIMIZE: tl.constexpr, ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    t = tl.load(chunk_tensor + pid).to(tl.int64)
    # chunk index times a constexpr: the compiler knows `start` is a multiple of CHUNK.
    start = tl.load(chunk_index + pid).to(tl.int64) * CHUNK
    n = tl.load(numels + t)
    row = table + t * 5
    # The *_ref arguments are only there to carry the element types of the table's pointers.
    p_ptr = tl.load(row).to(p_ref.dtype)
    g_ptr = tl.load(row + 1).to(g_ref.dtype)
    m_ptr = tl.load(row + 2).to(s_ref.dtype)
    v_ptr = tl.load(row + 3).to(s_ref.dtype)
    w_ptr = tl.load(row + 4).to(s_ref.dtype)
    if ALIGNED:
        # Addresses from the table are opaque to the compiler; promising 16-byte alignment lets
        # it emit vector loads (the launcher checks every address first).
        p_ptr = tl.multiple_of(p_ptr, 16)
        g_ptr = tl.multiple_of(g_ptr, 16)
        m_ptr = tl.multiple_of(m_ptr, 16)
        v_ptr = tl.multiple_of(v_ptr, 16)
        w_ptr = tl.multiple_of(w_ptr, 16)
    length = tl.minimum(n - start, CHUNK)
    n_full = (length // BLOCK) * BLOCK
    offs0 = start + tl.arange(0, BLOCK)
    # Whole blocks without a mask (a mask of unknown alignment would block vectorization),
    # then the ragged tail of the tensor with one.
    for i in range(0, n_full, BLOCK):
        _adamw_block(
            p_ptr, g_ptr, m_ptr, v_ptr, w_ptr, offs0 + i, n,
            decay, lerp_w, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps,
            HAS_MASTER=HAS_MASTER, MAXIMIZE=MAXIMIZE, MASKED=False,
        )  # fmt: skip
    if n_full < length:
        _adamw_block(
            p_ptr, g_ptr, m_ptr, v_ptr, w_ptr, offs0 + n_full, n,
            decay, lerp_w, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps,
            HAS_MASTER=HAS_MASTER, MAXIMIZE=MAXIMIZE, MASKED=True,
        )  # fmt: skip


class _LaunchPlan:
    """Device-side pointer table and chunk list for one set of tensors (reused while the
    addresses stay the same)."""

    def __init__(self, columns: list[list[torch.Tensor]], device: torch.device) -> None:
        n = len(columns[0])
        self.key = self.key_of(columns)
        ptrs = [[t.data_ptr() for t in col] for col in columns]
        self.aligned = all(p % 16 == 0 for col in ptrs for p in col)
        rows = [[ptrs[c][i] for c in range(_N_COLS)] for i in range(n)]
        numels = torch.tensor([t.numel() for t in columns[0]], dtype=torch.int64)
        n_chunks = (numels + CHUNK - 1) // CHUNK
        chunk_tensor = torch.repeat_interleave(torch.arange(n, dtype=torch.int32), n_chunks)
        first = torch.cumsum(n_chunks, 0) - n_chunks
        chunk_index = torch.arange(int(n_chunks.sum()), dtype=torch.int64)
        chunk_index = (chunk_index - torch.repeat_interleave(first, n_chunks)).to(torch.int32)
        self.table = torch.tensor(rows, dtype=torch.int64).to(device)
        self.numels = numels.to(device)
        self.chunk_tensor = chunk_tensor.to(device)
        self.chunk_index = chunk_index.to(device)
        self.grid = (int(n_chunks.sum()),)

    @staticmethod
    def key_of(columns: list[list[torch.Tensor]]) -> tuple:
        # map() over C methods: this runs every step for every tensor, so no Python frames.
        return (
            *map(torch.Tensor.data_ptr, itertools.chain.from_iterable(columns)),
            *map(torch.Tensor.numel, columns[0]),
        )


_plans: dict[tuple, _LaunchPlan] = {}
_MAX_PLANS = 16


def _plan(columns: list[list[torch.Tensor]], device: torch.device) -> _LaunchPlan:
    key = _LaunchPlan.key_of(columns)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= _MAX_PLANS:
            _plans.pop(next(iter(_plans)))
        plan = _plans[key] = _LaunchPlan(columns, device)
    return plan


def adamw_triton_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    masters: list[torch.Tensor] | None,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool = False,
) -> None:
    """One AdamW step in place over tensors of one dtype combination, in one launch.

    Same contract as :func:`shardforge.kernels.adamw.adamw_reference_`. All tensors must be
    contiguous (the caller sends non-contiguous ones through the reference); params share one
    dtype, grads one dtype, and moments/masters one dtype.
    """
    states = masters if masters is not None else exp_avgs
    if not params:
        return
    columns = [params, grads, exp_avgs, exp_avg_sqs, states]
    plan = _plan(columns, params[0].device)
    if plan.grid[0] == 0:
        return
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    _adamw_kernel[plan.grid](
        plan.table, plan.numels, plan.chunk_tensor, plan.chunk_index,
        params[0], grads[0], exp_avgs[0],
        1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2,
        -lr / (1 - beta1**step), bias_correction2_sqrt, eps,
        HAS_MASTER=masters is not None, MAXIMIZE=bool(maximize), ALIGNED=plan.aligned,
        BLOCK=BLOCK, CHUNK=CHUNK, num_warps=NUM_WARPS,
    )  # fmt: skip
