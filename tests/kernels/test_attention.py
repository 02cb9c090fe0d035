"""Varlen attention: the reference against an independent oracle, the Triton kernels (run by the
Triton interpreter on CPU tensors) against the reference, and the dispatch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from shardforge.kernels import attention, flash_attn_varlen, flash_attn_varlen_reference
from shardforge.kernels.attention import flash_attn_varlen_sdpa
from tests.kernels._attention_oracles import check_against_reference, make_inputs


def _interpreted_kernels():
    pytest.importorskip("triton", reason="triton not installed: the kernels cannot run")
    from shardforge.kernels import attention_triton

    if not attention_triton.INTERPRET:
        pytest.skip("the Triton kernels run on CPU tensors only with TRITON_INTERPRET=1")
    return attention_triton


# ---------------------------------------------------------------- reference and dispatch


@pytest.mark.parametrize("causal", [True, False])
def test_reference_matches_dense_sdpa_with_block_diagonal_mask(causal):
    q, k, v, cu, max_len = make_inputs([3, 1, 6, 4], h=4, hkv=2, d=8, dtype=torch.float64)
    doc = torch.repeat_interleave(torch.arange(4), torch.tensor([3, 1, 6, 4]))
    allowed = doc[:, None] == doc[None, :]
    if causal:
        allowed &= torch.ones(14, 14, dtype=torch.bool).tril()
    expected = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.repeat_interleave(2, 1).transpose(0, 1),
        v.repeat_interleave(2, 1).transpose(0, 1), attn_mask=allowed, scale=0.3,
    ).transpose(0, 1)  # fmt: skip
    got = flash_attn_varlen_reference(q, k, v, cu, max_len, causal=causal, softmax_scale=0.3)
    torch.testing.assert_close(got, expected)


def test_no_attention_across_documents():
    q, k, v, cu, max_len = make_inputs([5, 7], h=2, hkv=2, d=8, dtype=torch.float32)
    before = flash_attn_varlen_reference(q, k, v, cu, max_len, causal=False)
    k2, v2 = k.clone(), v.clone()
    k2[5:] += 1.0
    v2[5:] -= 2.0
    after = flash_attn_varlen_reference(q, k2, v2, cu, max_len, causal=False)
    torch.testing.assert_close(after[:5], before[:5])
    assert not torch.allclose(after[5:], before[5:])


def test_cpu_dispatch_uses_sdpa(monkeypatch):
    q, k, v, cu, max_len = make_inputs([4, 3], h=2, hkv=1, d=16, dtype=torch.float32)
    calls = []
    monkeypatch.setattr(
        attention, "flash_attn_varlen_sdpa",
        lambda *a, **kw: calls.append(a) or flash_attn_varlen_sdpa(*a, **kw),
    )  # fmt: skip
    out = flash_attn_varlen(q, k, v, cu, max_len)
    assert len(calls) == 1 and out.shape == q.shape


# Packed like the LM's batches: a length-1 document, an empty one, lengths that are not powers
# of two, and 600 tokens: more than one key/value block of torch's CPU flash kernel (512 rows).
SDPA_LENS = [1, 37, 0, 5, 600, 16]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize(
    "dtype,h,hkv,d,scale",
    [
        (torch.float32, 4, 2, 32, None),
        (torch.float32, 2, 2, 16, 0.3),
        (torch.float64, 4, 1, 8, None),
        (torch.bfloat16, 4, 2, 32, None),
    ],
    ids=["fp32-gqa2-d32", "fp32-mha-scale", "fp64-mqa", "bf16-gqa2"],
)
def test_sdpa_path_matches_reference_forward_and_backward(dtype, h, hkv, d, scale, causal):
    q, k, v, cu, max_len = make_inputs(SDPA_LENS, h, hkv, d, dtype, trailing=3)
    check_against_reference(
        lambda a, b, c: flash_attn_varlen(a, b, c, cu, max_len, causal, scale, backend="sdpa"),
        q, k, v, cu, max_len, causal, scale,
    )  # fmt: skip


def test_sdpa_path_zeroes_tokens_after_the_last_document():
    q, k, v, cu, max_len = make_inputs([3, 0, 4], 2, 1, 16, torch.float32, trailing=5)
    leaves = [x.requires_grad_() for x in (q, k, v)]
    out = flash_attn_varlen_sdpa(*leaves, cu, max_len)
    out.sum().backward()
    assert out.dtype == q.dtype and out.shape == q.shape and out[-5:].abs().max() == 0
    assert all(x.grad[-5:].abs().max() == 0 for x in leaves)
    empty = torch.zeros(1, dtype=torch.int32)  # no documents at all
    assert flash_attn_varlen_sdpa(q, k, v, empty).abs().max() == 0


def test_input_errors_name_the_problem():
    q, k, v, cu, max_len = make_inputs([4], h=3, hkv=2, d=8, dtype=torch.float32)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        flash_attn_varlen(q, k, v, cu, max_len)
    q, k, v, cu, max_len = make_inputs([4], h=2, hkv=2, d=8, dtype=torch.float32)
    with pytest.raises(ValueError, match="cu_seqlens"):
        flash_attn_varlen(q, k, v, torch.tensor([0, 9], dtype=torch.int32), max_len)
    with pytest.raises(ValueError, match="backend"):
        flash_attn_varlen(q, k, v, cu, max_len, backend="cuda")


def test_import_needs_neither_triton_nor_cuda():
    code = (
        "import sys, torch, shardforge.kernels\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialized'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# ---------------------------------------------------------------- Triton kernels (interpreter)

# Interpreter blocks are 16-32 rows: these lengths cover a length-1 document, lengths that are
# not multiples of any block, and documents spanning several query and key blocks.
LENS = [1, 37, 5, 70, 16]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize(
    "dtype,h,hkv,d",
    [
        (torch.float32, 4, 2, 32),
        (torch.float16, 4, 1, 64),
        (torch.float16, 2, 2, 16),
    ],
    ids=["fp32-gqa2-d32", "fp16-mqa-d64", "fp16-mha-d16"],
)
def test_triton_matches_reference(dtype, h, hkv, d, causal):
    at = _interpreted_kernels()
    q, k, v, cu, max_len = make_inputs(LENS, h, hkv, d, dtype)
    check_against_reference(
        lambda a, b, c: at.flash_attn_varlen_triton(a, b, c, cu, max_len, causal),
        q, k, v, cu, max_len, causal,
    )  # fmt: skip


@pytest.mark.parametrize("d", [128, 256])
def test_triton_large_head_dims(d):
    at = _interpreted_kernels()
    q, k, v, cu, max_len = make_inputs([3, 18], h=2, hkv=1, d=d, dtype=torch.float16)
    check_against_reference(
        lambda a, b, c: at.flash_attn_varlen_triton(a, b, c, cu, max_len, True),
        q, k, v, cu, max_len, True,
    )  # fmt: skip


def test_triton_single_token_docs_empty_docs_and_trailing_tokens():
    at = _interpreted_kernels()
    q, k, v, cu, max_len = make_inputs([1, 1, 0, 1, 19], 2, 1, 16, torch.float32, trailing=3)
    check_against_reference(
        lambda a, b, c: at.flash_attn_varlen_triton(a, b, c, cu, max_len, True, 0.5),
        q, k, v, cu, max_len, True, 0.5,
    )  # fmt: skip
    out = at.flash_attn_varlen_triton(q, k, v, cu, max_len, True)
    assert out[-3:].abs().max() == 0


def test_triton_strided_views_of_a_fused_qkv_projection():
    at = _interpreted_kernels()
    qkv = torch.randn(sum(LENS), 4 + 2 + 2, 32)
    q, k, v = qkv.split([4, 2, 2], dim=1)  # non-contiguous: token stride 8 * 32
    _, _, _, cu, max_len = make_inputs(LENS, 4, 2, 32, torch.float32)
    check_against_reference(
        lambda a, b, c: at.flash_attn_varlen_triton(a, b, c, cu, max_len, False),
        q, k, v, cu, max_len, False,
    )  # fmt: skip
    got = at.flash_attn_varlen_triton(q, k, v, cu, max_len, False)
    torch.testing.assert_close(got, flash_attn_varlen_reference(q, k, v, cu, max_len, False),
                               rtol=1e-4, atol=1e-4)


def test_forward_saves_base2_log_sum_exp():
    at = _interpreted_kernels()
    q, k, v, cu, max_len = make_inputs([6, 9], 2, 2, 16, torch.float32)
    _, lse = at.attention_forward(q, k, v, cu, max_len, causal=True)
    scores = torch.einsum("thd,shd->hts", q[6:], k[6:]) / 4.0
    scores = scores.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    expected = torch.logsumexp(scores, -1) / torch.log(torch.tensor(2.0))
    torch.testing.assert_close(lse[:, 6:], expected)


def test_backend_triton_runs_the_kernel_through_the_public_api():
    at = _interpreted_kernels()
    q, k, v, cu, max_len = make_inputs([9, 4], 2, 1, 16, torch.float32)
    q.requires_grad_()
    out = flash_attn_varlen(q, k, v, cu, max_len, backend="triton")
    assert out.grad_fn is not None and "FlashAttnVarlen" in type(out.grad_fn).__name__
    # The launch went through triton's interpreter, not a compiled GPU binary.
    assert type(at._attn_fwd.fn).__name__ == "InterpretedFunction"


@pytest.mark.parametrize("elt", [2, 4], ids=["16bit", "fp32"])
@pytest.mark.parametrize("d", [16, 32, 64, 128, 256])
def test_gpu_autotune_sets_fit_every_head_dim(d, elt):
    """The Hopper config lists (unused here) keep, per head dim, 1-3 configs that satisfy each
    kernel's block divisibility and fit shared memory and the accumulator register budget."""
    pytest.importorskip("triton", reason="triton not installed")
    from shardforge.kernels import attention_triton as at

    class _Tensor:
        def element_size(self):
            return elt

    for configs, prune, big, small in (
        (at.GPU_FWD_CONFIGS, at._FWD_PRUNE, "BLOCK_M", "BLOCK_N"),
        (at.GPU_DKDV_CONFIGS, at._DKDV_PRUNE, "BLOCK_N", "BLOCK_M"),
        (at.GPU_DQ_CONFIGS, at._DQ_PRUNE, "BLOCK_M", "BLOCK_N"),
    ):
        kept = prune["early_config_prune"](configs, {"Q": _Tensor()}, HEAD_DIM=d)
        assert 1 <= len(kept) <= at._MAX_TUNED
        for c in kept:
            assert c.kwargs[big] % c.kwargs[small] == 0
            assert c.kwargs["BLOCK_M"] >= 16 and c.kwargs["BLOCK_N"] >= 16  # tl.dot minimum
