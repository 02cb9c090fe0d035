"""FusedAdamW against torch.optim.AdamW: step by step, state_dict both ways, master weights.

The reference path runs everywhere; the Triton path runs its kernel on CPU tensors under
TRITON_INTERPRET=1 (``backend="triton"``)."""

from __future__ import annotations

import copy

import pytest
import torch

from shardforge.kernels import FusedAdamW

SHAPES = [(7,), (300,), (16, 33), (1,), (520,), (3, 4, 5)]


def _interpreted_backend():
    pytest.importorskip("triton", reason="triton not installed: the kernel cannot run")
    from shardforge.kernels import adamw_triton

    if not adamw_triton.INTERPRET:
        pytest.skip("the Triton kernel runs on CPU tensors only with TRITON_INTERPRET=1")
    return adamw_triton


def _params(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SHAPES]


def _copies(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _groups(params):
    # Two groups with their own lr / weight decay, like decay / no-decay splits.
    return [
        {"params": params[:3]},
        {"params": params[3:], "weight_decay": 0.0, "lr": 3e-3, "betas": (0.8, 0.95)},
    ]


def _set_grads(step, *param_lists):
    g = torch.Generator().manual_seed(1000 + step)
    for ps in zip(*param_lists):
        grad = torch.randn(ps[0].shape, generator=g)
        for p in ps:
            p.grad = grad.to(p.dtype)


def _schedule(step, *opts):
    # lr and betas change between steps, as a scheduler would.
    for opt in opts:
        for i, group in enumerate(opt.param_groups):
            group["lr"] = (1e-2 if i == 0 else 3e-3) * (0.97**step)
        if step == 10:
            opt.param_groups[0]["betas"] = (0.85, 0.99)


def _run(opt_a, params_a, opt_b, params_b, steps, start=0):
    for step in range(start, start + steps):
        _schedule(step, opt_a, opt_b)
        _set_grads(step, params_a, params_b)
        opt_a.step()
        opt_b.step()


def _assert_same(params_a, params_b, opt_a=None, opt_b=None, rtol=1e-6, atol=1e-7):
    for a, b in zip(params_a, params_b):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol)
        if opt_a is not None:
            sa, sb = opt_a.state[a], opt_b.state[b]
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=atol)
            assert sa["step"].item() == sb["step"].item()


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_matches_torch_adamw_over_many_steps(backend):
    if backend == "triton":
        _interpreted_backend()
    ours, theirs = _params(), _params()
    opt = FusedAdamW(_groups(ours), lr=1e-2, weight_decay=0.1, backend=backend)
    ref = torch.optim.AdamW(_groups(theirs), lr=1e-2, weight_decay=0.1)
    _run(opt, ours, ref, theirs, 40)
    tol = dict(rtol=1e-6, atol=1e-7) if backend == "reference" else dict(rtol=1e-5, atol=1e-6)
    _assert_same(ours, theirs, opt, ref, **tol)


def test_triton_backend_launches_the_kernel_once_per_bucket(monkeypatch):
    adamw_triton = _interpreted_backend()
    calls = []
    real = adamw_triton.adamw_triton_
    monkeypatch.setattr(
        adamw_triton, "adamw_triton_", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    ours = _params()
    opt = FusedAdamW(_groups(ours), backend="triton")
    _set_grads(0, ours)
    opt.step()
    assert len(calls) == 2  # one per param group: all tensors of a group in one launch
    assert type(adamw_triton._adamw_kernel).__name__ == "InterpretedFunction"


def test_maximize_and_params_without_grad():
    ours, theirs = _params(), _params()
    opt = FusedAdamW(ours, lr=1e-2, maximize=True, backend="reference")
    ref = torch.optim.AdamW(theirs, lr=1e-2, maximize=True)
    for step in range(5):
        _set_grads(step, ours, theirs)
        ours[0].grad = theirs[0].grad = None  # never gets a gradient: untouched, no state
        opt.step()
        ref.step()
    assert ours[0] not in opt.state
    _assert_same(ours[1:], theirs[1:], opt, ref)
    assert torch.equal(ours[0].detach(), _params()[0].detach())


def test_triton_handles_non_contiguous_params():
    _interpreted_backend()
    base_a, base_b = torch.randn(40, 30), None
    base_b = base_a.clone()
    ours = [torch.nn.Parameter(base_a.t()), torch.nn.Parameter(torch.randn(50))]
    theirs = [torch.nn.Parameter(base_b.t()), torch.nn.Parameter(ours[1].detach().clone())]
    opt = FusedAdamW(ours, lr=1e-2, backend="triton")
    ref = torch.optim.AdamW(theirs, lr=1e-2)
    for step in range(3):
        _set_grads(step, ours, theirs)
        opt.step()
        ref.step()
    _assert_same(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_loads_either_way(direction):
    ours, theirs = _params(), _params()
    opt = FusedAdamW(_groups(ours), lr=1e-2, weight_decay=0.1, backend="reference")
    ref = torch.optim.AdamW(_groups(theirs), lr=1e-2, weight_decay=0.1)
    _run(opt, ours, ref, theirs, 7)
    # Continue both from the *other* optimizer's checkpoint: trajectories must not change.
    if direction == "torch_to_ours":
        saved, fresh_params = ref.state_dict(), _copies(theirs)
        fresh = FusedAdamW(_groups(fresh_params), backend="reference")
    else:
        saved, fresh_params = opt.state_dict(), _copies(ours)
        fresh = torch.optim.AdamW(_groups(fresh_params))
    fresh.load_state_dict(copy.deepcopy(saved))
    continued = ref if direction == "torch_to_ours" else opt
    cont_params = theirs if direction == "torch_to_ours" else ours
    step_state = fresh.state[fresh_params[0]]["step"]
    assert isinstance(step_state, torch.Tensor) and step_state.dtype == torch.float32
    assert step_state.device.type == "cpu" and step_state.item() == 7
    _run(fresh, fresh_params, continued, cont_params, 6, start=7)
    _assert_same(fresh_params, cont_params, fresh, continued)


def test_state_dict_layout_matches_torch():
    ours, theirs = _params(), _params()
    opt = FusedAdamW(_groups(ours), backend="reference")
    ref = torch.optim.AdamW(_groups(theirs))
    _run(opt, ours, ref, theirs, 1)
    a, b = opt.state_dict(), ref.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for pid in a["state"]:
        assert a["state"][pid].keys() == b["state"][pid].keys()
    assert set(b["param_groups"][0]) <= set(a["param_groups"][0])


def _master_mode_run(dtype, backend, steps):
    """Low-precision params with fp32 masters vs torch AdamW on fp32 copies fed the same grads."""
    low = _params(dtype)
    full = [torch.nn.Parameter(p.detach().float()) for p in low]
    opt = FusedAdamW(_groups(low), lr=1e-2, weight_decay=0.1, backend=backend)
    ref = torch.optim.AdamW(_groups(full), lr=1e-2, weight_decay=0.1)
    for step in range(steps):
        _schedule(step, opt, ref)
        _set_grads(step, low)
        for p, f in zip(low, full):
            f.grad = p.grad.float()
        opt.step()
        ref.step()
    return opt, ref, low, full


@pytest.mark.parametrize(
    "dtype,backend",
    [(torch.bfloat16, "reference"), (torch.float16, "reference"), (torch.float16, "triton")],
)
def test_master_weights_track_an_fp32_run(dtype, backend):
    if backend == "triton":
        _interpreted_backend()  # fp16 only: the interpreter mishandles bf16
    opt, ref, low, full = _master_mode_run(dtype, backend, steps=15)
    for p, f in zip(low, full):
        state = opt.state[p]
        assert state["master_param"].dtype == state["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(state["master_param"], f.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            state["exp_avg_sq"], ref.state[f]["exp_avg_sq"], rtol=1e-5, atol=1e-7
        )
        # The low-precision param is the master rounded to nearest, written in the same pass.
        assert torch.equal(p.detach(), state["master_param"].to(dtype))


def test_master_weights_survive_state_dict_round_trips():
    opt, ref, low, full = _master_mode_run(torch.bfloat16, "reference", steps=5)
    saved = copy.deepcopy(opt.state_dict())
    again = _copies(low)
    fresh = FusedAdamW(_groups(again), backend="reference")
    fresh.load_state_dict(saved)
    for p, q in zip(low, again):
        for key in ("master_param", "exp_avg", "exp_avg_sq"):
            assert torch.equal(fresh.state[q][key], opt.state[p][key]), key  # no bf16 truncation
    # torch.optim.AdamW accepts the checkpoint too (it keeps moments in the param dtype).
    plain = torch.optim.AdamW(_groups(_copies(low)))
    plain.load_state_dict(copy.deepcopy(saved))
    # And a torch bf16 checkpoint (no masters) loads into master mode, masters from the params.
    fresh2 = FusedAdamW(_groups(again), backend="reference")
    fresh2.load_state_dict(plain.state_dict())
    assert fresh2.state[again[0]]["master_param"].dtype == torch.float32


def test_master_weights_off_updates_like_torch_in_low_precision():
    ours, theirs = _params(torch.bfloat16), _params(torch.bfloat16)
    opt = FusedAdamW(ours, lr=1e-2, master_weights=False, backend="reference")
    ref = torch.optim.AdamW(theirs, lr=1e-2)
    for step in range(5):
        _set_grads(step, ours, theirs)
        opt.step()
        ref.step()
    _assert_same(ours, theirs, opt, ref, rtol=0, atol=0)


def test_rejects_amsgrad_and_bad_hyperparameters():
    with pytest.raises(NotImplementedError, match="amsgrad"):
        FusedAdamW(_params(), amsgrad=True)
    with pytest.raises(ValueError, match="betas"):
        FusedAdamW(_params(), betas=(0.9, 1.0))


@pytest.fixture
def one_rank_mesh():
    """A one-process gloo group and its device mesh (DTensors need one)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    if created:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype,backend", [(torch.float32, "reference"),
                                           (torch.bfloat16, "reference"),
                                           (torch.float32, "triton")])
def test_dtensor_shards_update_like_plain_tensors(one_rank_mesh, dtype, backend):
    """FSDP2's sharded parameters: the local shards get the plain-tensor update (fp32 masters
    for bf16), the states are DTensors like the parameter, the state_dict loads into
    torch.optim.AdamW."""
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    if backend == "triton":
        _interpreted_backend()  # fp32 only: the interpreter mishandles bf16
    plain = _params(dtype)
    sharded = [torch.nn.Parameter(distribute_tensor(p.detach().clone(), one_rank_mesh,
                                                    [Shard(0)])) for p in plain]
    opt = FusedAdamW(_groups(sharded), lr=1e-2, weight_decay=0.1, backend=backend)
    ref = FusedAdamW(_groups(plain), lr=1e-2, weight_decay=0.1, backend=backend)
    for step in range(6):
        _schedule(step, opt, ref)
        _set_grads(step, plain)
        for s, p in zip(sharded, plain):
            s.grad = distribute_tensor(p.grad.clone(), one_rank_mesh, [Shard(0)])
        opt.step()
        ref.step()
    for s, p in zip(sharded, plain):
        assert torch.equal(s.detach().full_tensor(), p.detach())
        state = opt.state[s]
        assert isinstance(state["exp_avg"], DTensor)
        assert torch.equal(state["exp_avg_sq"].full_tensor(), ref.state[p]["exp_avg_sq"])
        if dtype == torch.bfloat16:
            assert state["master_param"].dtype == torch.float32
            assert torch.equal(state["master_param"].full_tensor(), ref.state[p]["master_param"])
    torch.optim.AdamW(_groups(_copies(plain))).load_state_dict(
        {"state": {k: {n: (t.full_tensor() if isinstance(t, DTensor) else t)
                       for n, t in v.items()} for k, v in opt.state_dict()["state"].items()},
         "param_groups": opt.state_dict()["param_groups"]})
