"""GPU checks of the compiled Triton kernels (bf16 and fp16, full-size shapes).

Run with ``TRITON_INTERPRET=0 pytest -m gpu tests/kernels`` (benchmarks/gpu/run.sh does): they skip
without CUDA, and under the interpreter, which would run them on the CPU for hours.
"""

from __future__ import annotations

import pytest
import torch

from shardforge.kernels import FusedAdamW, flash_attn_varlen
from tests.kernels._attention_oracles import check_against_reference, make_inputs

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def _needs_compiled_kernels_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    pytest.importorskip("triton", reason="triton not installed")
    from shardforge.kernels import attention_triton

    if attention_triton.INTERPRET:
        pytest.skip("GPU tests need TRITON_INTERPRET=0 (the interpreter would run them on CPU)")


# Mixed document lengths summing to ~8k tokens: length 1, lengths off every block size, and
# documents spanning many blocks.
MIXED = [1, 17, 128, 1000, 2049, 63, 3000, 1, 777, 1155]


@pytest.mark.parametrize(
    "dtype,d,causal,h,hkv",
    [
        (torch.bfloat16, 128, True, 16, 4),
        (torch.bfloat16, 64, False, 8, 8),
        (torch.float16, 128, False, 16, 2),
        (torch.float16, 64, True, 8, 1),
        (torch.bfloat16, 256, True, 4, 2),
        (torch.bfloat16, 32, True, 4, 4),
    ],
)
def test_attention_matches_fp32_reference(dtype, d, causal, h, hkv):
    q, k, v, cu, max_len = make_inputs(MIXED, h, hkv, d, dtype, device="cuda")
    check_against_reference(
        lambda a, b, c: flash_attn_varlen(a, b, c, cu, max_len, causal), q, k, v, cu, max_len,
        causal,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_attention_long_documents_with_gqa(dtype):
    q, k, v, cu, max_len = make_inputs([8192, 5000, 1, 3000], 8, 2, 128, dtype, device="cuda")
    check_against_reference(
        lambda a, b, c: flash_attn_varlen(a, b, c, cu, max_len, True), q, k, v, cu, max_len, True
    )


def test_attention_goes_through_triton_on_cuda():
    q, k, v, cu, max_len = make_inputs([5, 300], 4, 2, 64, torch.bfloat16, device="cuda")
    q.requires_grad_()
    out = flash_attn_varlen(q, k, v, cu, max_len)
    assert "FlashAttnVarlen" in type(out.grad_fn).__name__


def test_attention_under_autocast_accepts_mixed_input_dtypes():
    q, k, v, cu, max_len = make_inputs([5, 300], 4, 2, 64, torch.bfloat16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = flash_attn_varlen(q.float(), k, v, cu.cpu(), max_len)  # fp32 q, cu_seqlens on CPU
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, flash_attn_varlen(q, k, v, cu, max_len))


def _adamw_pair(shapes, dtype=torch.float32, offset=0):
    """Our params (optionally unaligned views into one buffer) and fp32 torch copies."""
    total = sum(torch.Size(s).numel() for s in shapes) + offset
    g = torch.Generator(device="cuda").manual_seed(0)
    flat = torch.randn(total, device="cuda", generator=g).to(dtype)
    ours, pos = [], offset
    for s in shapes:
        n = torch.Size(s).numel()
        ours.append(torch.nn.Parameter(flat[pos:pos + n].view(s)))
        pos += n
    theirs = [torch.nn.Parameter(p.detach().float().clone()) for p in ours]
    return ours, theirs


def _run_against_torch(ours, theirs, steps=20, **kw):
    opt = FusedAdamW(
        [{"params": ours[::2]}, {"params": ours[1::2], "weight_decay": 0.0}], **kw
    )
    ref = torch.optim.AdamW(
        [{"params": theirs[::2]}, {"params": theirs[1::2], "weight_decay": 0.0}], **kw,
        foreach=False,
    )  # fmt: skip
    g = torch.Generator(device="cuda").manual_seed(1)
    for step in range(steps):
        for o in (opt, ref):
            o.param_groups[0]["lr"] = kw["lr"] * 0.9**step
        for p, t in zip(ours, theirs):
            grad = torch.randn(p.shape, device="cuda", generator=g)
            p.grad = grad.to(p.dtype)
            t.grad = p.grad.float()
        opt.step()
        ref.step()
    return opt, ref


SHAPES = [(1,), (17,), (4096, 1024), (3, 5, 7), (1_000_003,), (512, 513), (65536,), (65537,)]


@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "unaligned"])
def test_adamw_fp32_matches_torch(offset):
    ours, theirs = _adamw_pair(SHAPES, offset=offset)
    opt, ref = _run_against_torch(ours, theirs, lr=1e-2, weight_decay=0.1)
    for p, t in zip(ours, theirs):
        torch.testing.assert_close(p.detach(), t.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref.state[t]["exp_avg_sq"],
                                   rtol=1e-5, atol=1e-9)


def test_adamw_bf16_master_weights_track_fp32():
    ours, theirs = _adamw_pair(SHAPES, dtype=torch.bfloat16)
    opt, _ = _run_against_torch(ours, theirs, lr=1e-2, weight_decay=0.1)
    for p, t in zip(ours, theirs):
        master = opt.state[p]["master_param"]
        torch.testing.assert_close(master, t.detach(), rtol=1e-5, atol=1e-6)
        assert torch.equal(p.detach(), master.to(torch.bfloat16))


def test_adamw_many_tensors_one_launch_per_group_state_dict_to_torch():
    shapes = [(1000 + 7 * i,) for i in range(200)]
    ours, theirs = _adamw_pair(shapes)
    opt, ref = _run_against_torch(ours, theirs, steps=3, lr=1e-3, weight_decay=0.01)
    fresh = torch.optim.AdamW([{"params": ours[::2]}, {"params": ours[1::2]}])
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state[ours[0]]["step"].item() == 3
