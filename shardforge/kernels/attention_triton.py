"""Triton varlen FlashAttention (forward + backward), FlashAttention-2 scheme.

Layout and conventions are those of :mod:`shardforge.kernels.attention` (``q [T, H, D]``,
``k/v [T, Hkv, D]``, ``cu_seqlens int32 [n_docs + 1]``). One program handles one block of rows of
one head of one document; the grid is ``(cdiv(max_seqlen, BLOCK), heads, n_docs)`` and programs
past the end of their (shorter) document exit at once.

* Forward: online softmax over key blocks in base 2 (``exp2``, scores pre-multiplied by
  ``softmax_scale * log2(e)``); saves ``lse`` (base-2 log-sum-exp of the scaled scores,
  ``[H, T]`` fp32) for the backward pass. Key blocks that need no mask (fully inside the document
  and, when causal, fully below the diagonal) run a separate unmasked loop.
* Backward: ``delta = rowsum(dO * O)``; a dK/dV kernel per key block that loops over the query
  blocks of *every query head of its group* (grouped-query attention without atomics); a dQ
  kernel per query block that loops over key blocks. No atomics anywhere, so autotuning may rerun
  any kernel safely.

Inputs are fp16 or bf16 (fp32 accumulation); fp32 inputs work too, with TF32 matmuls on the GPU.
Tests run these kernels on CPU tensors with ``TRITON_INTERPRET=1``, which triton reads when the
kernels are decorated, i.e. when this module is imported; small blocks are used there.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from shardforge.kernels.varlen import check_varlen_inputs

__all__ = ["attention_backward", "attention_forward", "flash_attn_varlen_triton", "INTERPRET"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)
# Base-2 softmax: exp(x) == exp2(x * log2(e)); exp2 is a single MUFU instruction on NVIDIA GPUs.
LOG2E = 1.4426950408889634


def _configs(shapes: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
        for m, n, w, s in shapes
    ]


# Hopper (H100/H200), most preferred first. 128-row query tiles feed wgmma; 64-128 key columns
# per step with 2-4 shared-memory stages. `_fitting` drops the configs whose tiles cannot fit a
# head dim (see there), so the same lists serve head dims 16 to 256.
# Forward: BLOCK_M % BLOCK_N == 0 (the causal diagonal starts on a key block boundary).
GPU_FWD_CONFIGS = _configs(
    [(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 8, 4), (64, 64, 4, 3), (64, 32, 4, 2)]
)
# dK/dV keeps dk and dv accumulators for BLOCK_N keys resident and streams query blocks: many
# key rows, few query rows per step; BLOCK_N % BLOCK_M == 0.
GPU_DKDV_CONFIGS = _configs([(64, 128, 8, 3), (32, 128, 4, 3), (64, 64, 4, 3), (32, 64, 8, 2)])
# dQ is the mirror image; BLOCK_M % BLOCK_N == 0.
GPU_DQ_CONFIGS = _configs([(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 2)])

if INTERPRET:
    # The interpreter runs each program in numpy: small blocks keep tests fast and make short
    # test documents span several blocks (BLOCK_M != BLOCK_N exercises both phase splits).
    _FWD_CONFIGS = _configs([(32, 16, 4, 1)])
    _DKDV_CONFIGS = _configs([(16, 32, 4, 1)])
    _DQ_CONFIGS = _configs([(32, 16, 4, 1)])
    _PRE_BLOCK_T = 32
else:
    _FWD_CONFIGS, _DKDV_CONFIGS, _DQ_CONFIGS = GPU_FWD_CONFIGS, GPU_DKDV_CONFIGS, GPU_DQ_CONFIGS
    _PRE_BLOCK_T = 128

# Set SHARDFORGE_AUTOTUNE=0 to skip autotuning and take the first fitting config (faster start,
# e.g. for tests; every config computes the same result).
AUTOTUNE = os.environ.get("SHARDFORGE_AUTOTUNE", "1") != "0"
# Shared memory per block on Hopper is 227 KB. Triton keeps one buffer per pipeline stage for
# the streamed tiles plus the resident ones; compile_check.py on sm_90 confirmed the estimate
# below to within ~1 KB (small vectors), hence the slack.
_SMEM_LIMIT, _SMEM_SLACK = 232448, 2048
_ACC_REGS_PER_THREAD = 128  # fp32 accumulator registers per thread before spilling looms
# Each tuned config costs a compile (seconds) per head dim / causal / dtype: tune the best three.
_MAX_TUNED = 3


def _fitting(resident, streamed, accumulated):  # noqa: ANN001, ANN202
    """An autotune ``early_config_prune`` that keeps configs whose tiles fit the head dim.

    ``resident``, ``streamed`` and ``accumulated`` map (BLOCK_M, BLOCK_N, D) to element counts of
    the tiles a program keeps for its lifetime, loads per loop step (one buffer per pipeline
    stage), and accumulates in fp32 registers.
    """

    def prune(configs, named_args, **kwargs):  # noqa: ANN001, ANN202
        args = {**named_args, **kwargs}
        d, elt = args["HEAD_DIM"], args["Q"].element_size()
        keep = []
        for c in configs:
            bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
            smem = elt * (resident(bm, bn, d) + c.num_stages * streamed(bm, bn, d))
            regs = accumulated(bm, bn, d) / (c.num_warps * 32)
            if smem + _SMEM_SLACK <= _SMEM_LIMIT and regs <= _ACC_REGS_PER_THREAD:
                keep.append(c)
        keep = keep or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]
        return keep[:_MAX_TUNED] if AUTOTUNE else keep[:1]

    return {"early_config_prune": prune}


_FWD_PRUNE = _fitting(
    resident=lambda m, n, d: m * d, streamed=lambda m, n, d: 2 * n * d,
    accumulated=lambda m, n, d: m * d,
)  # fmt: skip
_DKDV_PRUNE = _fitting(
    resident=lambda m, n, d: 2 * n * d, streamed=lambda m, n, d: 2 * m * d,
    accumulated=lambda m, n, d: 2 * n * d,
)  # fmt: skip
_DQ_PRUNE = _fitting(
    resident=lambda m, n, d: 2 * m * d, streamed=lambda m, n, d: 2 * n * d,
    accumulated=lambda m, n, d: m * d,
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


@triton.jit
def _rows(base, offs_rows, stride_row, offs_d):
    # Pointers to a [rows, D] tile: base + row * stride_row + d.
    return base + offs_rows[:, None] * stride_row + offs_d[None, :]


@triton.jit
def _doc_block(cu_seqlens, BLOCK: tl.constexpr, REVERSED: tl.constexpr):
    # (first row of this program's block, document start, document length) for grid axes
    # (block, head, doc). Reversed: with causal masking the last query blocks do the most work,
    # so they are started first.
    if REVERSED:
        start = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK
    else:
        start = tl.program_id(0) * BLOCK
    doc = tl.program_id(2)
    doc_start = tl.load(cu_seqlens + doc)
    seqlen = tl.load(cu_seqlens + doc + 1) - doc_start
    return start, doc_start, seqlen


@triton.jit
def _key_bounds(
    start_m, seqlen, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr
):
    # Key blocks [0, full_hi) need no mask; [full_hi, masked_hi) do (diagonal or ragged end).
    if CAUSAL:
        full_hi = start_m
        masked_hi = tl.minimum(start_m + BLOCK_M, seqlen)
    else:
        full_hi = (seqlen // BLOCK_N) * BLOCK_N
        masked_hi = seqlen
    return full_hi, masked_hi


@triton.jit
def _fwd_key_range(
    acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, seqlen, lo, hi,
    qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + offs_n0
        kt_ptrs = k_base + offs_n[None, :] * stride_kt + offs_d[:, None]  # [D, BLOCK_N]
        v_ptrs = _rows(v_base, offs_n, stride_vt, offs_d)  # [BLOCK_N, D]
        if MASKED:
            kt = tl.load(kt_ptrs, mask=offs_n[None, :] < seqlen, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < seqlen, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        qk = tl.dot(q, kt) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        if MASKED:
            keep = offs_n[None, :] < seqlen
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            qk = tl.where(keep, qk, float("-inf"))
        # Every row keeps at least one finite score per call (key 0 is always visible), so
        # m_new is finite and exp2 never sees -inf - -inf.
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc=acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_FWD_CONFIGS, key=["HEAD_DIM", "CAUSAL"], prune_configs_by=_FWD_PRUNE)
@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE, cu_seqlens, qk_scale, T,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    start_m, doc_start, seqlen = _doc_block(cu_seqlens, BLOCK_M, REVERSED=True)
    head = tl.program_id(1)
    if start_m >= seqlen:
        return
    doc_start = doc_start.to(tl.int64)
    kv_head = head // GROUP
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < seqlen
    q_base = Q + doc_start * stride_qt + head * stride_qh
    q = tl.load(_rows(q_base, offs_m, stride_qt, offs_d), mask=row_ok[:, None], other=0.0)
    k_base = K + doc_start * stride_kt + kv_head * stride_kh
    v_base = V + doc_start * stride_vt + kv_head * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full_hi, masked_hi = _key_bounds(start_m, seqlen, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _fwd_key_range(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, seqlen,
        0, full_hi, qk_scale, MASKED=False, CAUSAL=CAUSAL, BLOCK_N=BLOCK_N,
    )  # fmt: skip
    acc, l_i, m_i = _fwd_key_range(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, seqlen,
        full_hi, masked_hi, qk_scale, MASKED=True, CAUSAL=CAUSAL, BLOCK_N=BLOCK_N,
    )  # fmt: skip
    out = acc / l_i[:, None]
    o_ptrs = _rows(O + doc_start * stride_ot + head * stride_oh, offs_m, stride_ot, offs_d)
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
    lse_ptrs = LSE + head.to(tl.int64) * T + doc_start + offs_m
    tl.store(lse_ptrs, m_i + tl.math.log2(l_i), mask=row_ok)


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _bwd_preprocess(
    O, DO, DELTA, T, stride_ot, stride_oh, stride_dot, stride_doh,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    head = tl.program_id(1)
    offs_t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    ok = offs_t < T
    o = tl.load(_rows(O + head * stride_oh, offs_t, stride_ot, offs_d), mask=ok[:, None], other=0.0)
    do_ptrs = _rows(DO + head * stride_doh, offs_t, stride_dot, offs_d)
    do = tl.load(do_ptrs, mask=ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + head.to(tl.int64) * T + offs_t, delta, mask=ok)


@triton.jit
def _dkdv_query_range(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot, offs_n, offs_d,
    seqlen, lo, hi, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + offs_m0
        qt_ptrs = q_base + offs_m[None, :] * stride_qt + offs_d[:, None]  # [D, BLOCK_M]
        do_ptrs = _rows(do_base, offs_m, stride_dot, offs_d)  # [BLOCK_M, D]
        if MASKED:
            row_ok = offs_m < seqlen
            qt = tl.load(qt_ptrs, mask=row_ok[None, :], other=0.0)
            do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0)
            lse = tl.load(lse_base + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(delta_base + offs_m, mask=row_ok, other=0.0)
        else:
            qt = tl.load(qt_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        pt = tl.math.exp2(tl.dot(k, qt) * qk_scale - lse[None, :])  # [BLOCK_N, BLOCK_M]
        if MASKED:
            keep = row_ok[None, :]
            if CAUSAL:
                keep = keep & (offs_m[None, :] >= offs_n[:, None])
            pt = tl.where(keep, pt, 0.0)
        dv = tl.dot(pt.to(do.dtype), do, acc=dv)
        dpt = tl.dot(v, tl.trans(do))  # [BLOCK_N, BLOCK_M]
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), acc=dk)
    return dk, dv


@triton.autotune(configs=_DKDV_CONFIGS, key=["HEAD_DIM", "CAUSAL"], prune_configs_by=_DKDV_PRUNE)
@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, DELTA, cu_seqlens, qk_scale, sm_scale, T,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
    start_n, doc_start, seqlen = _doc_block(cu_seqlens, BLOCK_N, REVERSED=False)
    kv_head = tl.program_id(1)
    if start_n >= seqlen:
        return
    doc_start = doc_start.to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < seqlen
    k_ptrs = _rows(K + doc_start * stride_kt + kv_head * stride_kh, offs_n, stride_kt, offs_d)
    v_ptrs = _rows(V + doc_start * stride_vt + kv_head * stride_vh, offs_n, stride_vt, offs_d)
    k = tl.load(k_ptrs, mask=col_ok[:, None], other=0.0)
    v = tl.load(v_ptrs, mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    full_hi = (seqlen // BLOCK_M) * BLOCK_M
    # All query heads that share this key/value head accumulate here: no atomics for GQA.
    for g in range(GROUP):
        head = kv_head * GROUP + g
        q_base = Q + doc_start * stride_qt + head * stride_qh
        do_base = DO + doc_start * stride_dot + head * stride_doh
        lse_base = LSE + head.to(tl.int64) * T + doc_start
        delta_base = DELTA + head.to(tl.int64) * T + doc_start
        if CAUSAL:
            # Query blocks on the diagonal (masked), then below it (unmasked), then the ragged tail.
            mid_lo = start_n + BLOCK_N
            dk, dv = _dkdv_query_range(
                dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                offs_n, offs_d, seqlen, start_n, tl.minimum(mid_lo, seqlen), qk_scale,
                MASKED=True, CAUSAL=CAUSAL, BLOCK_M=BLOCK_M,
            )  # fmt: skip
        else:
            mid_lo = 0
        dk, dv = _dkdv_query_range(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
            offs_n, offs_d, seqlen, mid_lo, full_hi, qk_scale,
            MASKED=False, CAUSAL=CAUSAL, BLOCK_M=BLOCK_M,
        )  # fmt: skip
        dk, dv = _dkdv_query_range(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
            offs_n, offs_d, seqlen, tl.maximum(full_hi, mid_lo), seqlen, qk_scale,
            MASKED=True, CAUSAL=CAUSAL, BLOCK_M=BLOCK_M,
        )  # fmt: skip
    dk = dk * sm_scale
    dk_ptrs = _rows(DK + doc_start * stride_dkt + kv_head * stride_dkh, offs_n, stride_dkt, offs_d)
    dv_ptrs = _rows(DV + doc_start * stride_dvt + kv_head * stride_dvh, offs_n, stride_dvt, offs_d)
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _dq_key_range(
    dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, seqlen, lo, hi,
    qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + offs_n0
        kt_ptrs = k_base + offs_n[None, :] * stride_kt + offs_d[:, None]  # [D, BLOCK_N]
        vt_ptrs = v_base + offs_n[None, :] * stride_vt + offs_d[:, None]
        if MASKED:
            kt = tl.load(kt_ptrs, mask=offs_n[None, :] < seqlen, other=0.0)
            vt = tl.load(vt_ptrs, mask=offs_n[None, :] < seqlen, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        p = tl.math.exp2(tl.dot(q, kt) * qk_scale - lse[:, None])  # [BLOCK_M, BLOCK_N]
        if MASKED:
            keep = offs_n[None, :] < seqlen
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, vt)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), acc=dq)
    return dq


@triton.autotune(configs=_DQ_CONFIGS, key=["HEAD_DIM", "CAUSAL"], prune_configs_by=_DQ_PRUNE)
@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, DQ, LSE, DELTA, cu_seqlens, qk_scale, sm_scale, T,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    start_m, doc_start, seqlen = _doc_block(cu_seqlens, BLOCK_M, REVERSED=True)
    head = tl.program_id(1)
    if start_m >= seqlen:
        return
    doc_start = doc_start.to(tl.int64)
    kv_head = head // GROUP
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < seqlen
    q_ptrs = _rows(Q + doc_start * stride_qt + head * stride_qh, offs_m, stride_qt, offs_d)
    do_ptrs = _rows(DO + doc_start * stride_dot + head * stride_doh, offs_m, stride_dot, offs_d)
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + head.to(tl.int64) * T + doc_start + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + head.to(tl.int64) * T + doc_start + offs_m, mask=row_ok, other=0.0)
    k_base = K + doc_start * stride_kt + kv_head * stride_kh
    v_base = V + doc_start * stride_vt + kv_head * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full_hi, masked_hi = _key_bounds(start_m, seqlen, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_key_range(
        dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, seqlen,
        0, full_hi, qk_scale, MASKED=False, CAUSAL=CAUSAL, BLOCK_N=BLOCK_N,
    )  # fmt: skip
    dq = _dq_key_range(
        dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, seqlen,
        full_hi, masked_hi, qk_scale, MASKED=True, CAUSAL=CAUSAL, BLOCK_N=BLOCK_N,
    )  # fmt: skip
    dq = dq * sm_scale
    dq_ptrs = _rows(DQ + doc_start * stride_dqt + head * stride_dqh, offs_m, stride_dqt, offs_d)
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])


# --------------------------------------------------------------------------------------------
# Launchers and autograd wrapper
# --------------------------------------------------------------------------------------------


def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    """The kernels take any token/head strides but need contiguous head dims."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _prepare(q, k, v, cu_seqlens, softmax_scale):  # noqa: ANN001, ANN202 - internal
    t, h, hkv, d = check_varlen_inputs(q, k, v, cu_seqlens)
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head dim {d} not supported by the Triton kernel; use one of "
                         f"{SUPPORTED_HEAD_DIMS} or backend='reference'")
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    return t, h, hkv, d, cu_seqlens.to(device=q.device, dtype=torch.int32), scale


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    causal: bool = True,
    softmax_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel; return ``(out [T, H, D], lse [H, T] fp32, base 2)``."""
    t, h, hkv, d, cu, scale = _prepare(q, k, v, cu_seqlens, softmax_scale)
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    out = torch.zeros_like(q, memory_format=torch.contiguous_format)
    lse = torch.zeros(h, t, dtype=torch.float32, device=q.device)
    n_docs = cu.numel() - 1
    if n_docs == 0 or t == 0 or max_seqlen <= 0:
        return out, lse

    def grid(meta):  # noqa: ANN001, ANN202
        return (triton.cdiv(int(max_seqlen), meta["BLOCK_M"]), h, n_docs)

    _attn_fwd[grid](
        q, k, v, out, lse, cu, scale * LOG2E, t,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1),
        GROUP=h // hkv, HEAD_DIM=d, CAUSAL=bool(causal),
    )  # fmt: skip
    return out, lse


def attention_backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    causal: bool = True,
    softmax_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward kernels; return ``(dq, dk, dv)`` in the input dtype."""
    t, h, hkv, d, cu, scale = _prepare(q, k, v, cu_seqlens, softmax_scale)
    q, k, v, do = _unit_stride(q), _unit_stride(k), _unit_stride(v), _unit_stride(do)
    dq = torch.zeros_like(q, memory_format=torch.contiguous_format)
    dk = torch.zeros_like(k, memory_format=torch.contiguous_format)
    dv = torch.zeros_like(v, memory_format=torch.contiguous_format)
    n_docs = cu.numel() - 1
    if n_docs == 0 or t == 0 or max_seqlen <= 0:
        return dq, dk, dv
    delta = torch.empty(h, t, dtype=torch.float32, device=q.device)
    _bwd_preprocess[(triton.cdiv(t, _PRE_BLOCK_T), h)](
        out, do, delta, t, out.stride(0), out.stride(1), do.stride(0), do.stride(1),
        HEAD_DIM=d, BLOCK_T=_PRE_BLOCK_T,
    )  # fmt: skip
    group = h // hkv

    def grid_kv(meta):  # noqa: ANN001, ANN202
        return (triton.cdiv(int(max_seqlen), meta["BLOCK_N"]), hkv, n_docs)

    _attn_bwd_dkdv[grid_kv](
        q, k, v, do, dk, dv, lse, delta, cu, scale * LOG2E, scale, t,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        do.stride(0), do.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
        GROUP=group, HEAD_DIM=d, CAUSAL=bool(causal),
    )  # fmt: skip

    def grid_q(meta):  # noqa: ANN001, ANN202
        return (triton.cdiv(int(max_seqlen), meta["BLOCK_M"]), h, n_docs)

    _attn_bwd_dq[grid_q](
        q, k, v, do, dq, lse, delta, cu, scale * LOG2E, scale, t,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        do.stride(0), do.stride(1), dq.stride(0), dq.stride(1),
        GROUP=group, HEAD_DIM=d, CAUSAL=bool(causal),
    )  # fmt: skip
    return dq, dk, dv


class _FlashAttnVarlen(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale):  # noqa: ANN001, ANN205
        out, lse = attention_forward(q, k, v, cu_seqlens, max_seqlen, causal, softmax_scale)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
        ctx.max_seqlen, ctx.causal, ctx.softmax_scale = max_seqlen, causal, softmax_scale
        return out

    @staticmethod
    def backward(ctx, dout):  # noqa: ANN001, ANN205
        q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = attention_backward(
            dout, q, k, v, out, lse, cu_seqlens, ctx.max_seqlen, ctx.causal, ctx.softmax_scale
        )
        return dq, dk, dv, None, None, None, None


def flash_attn_varlen_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    causal: bool = True,
    softmax_scale: float | None = None,
) -> torch.Tensor:
    """The Triton path of :func:`shardforge.kernels.flash_attn_varlen` (same arguments)."""
    return _FlashAttnVarlen.apply(q, k, v, cu_seqlens, int(max_seqlen), causal, softmax_scale)
