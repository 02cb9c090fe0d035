"""AdamW with one kernel launch per (param group, dtype bucket), and optional fp32 master weights.

The update is exactly ``torch.optim.AdamW``'s (decoupled weight decay, bias correction), and the
``state_dict`` uses the same layout (per-parameter ``step`` as a float32 CPU scalar tensor,
``exp_avg``, ``exp_avg_sq``), so a checkpoint saved by either optimizer loads into the other.

Low-precision (bf16/fp16) parameters get fp32 master weights by default: the optimizer state holds
``master_param`` (fp32) and fp32 moments, the update runs on the master copy and writes the rounded
bf16 copy in the same pass. torch's own fused AdamW updates bf16 parameters in bf16, which loses
updates smaller than the parameter's rounding step. With ``master_weights=False`` low-precision
parameters are updated like torch does (state in the parameter dtype, math in fp32).

The Triton kernel (:mod:`shardforge.kernels.adamw_triton`) runs on CUDA tensors; the reference
below (``torch._foreach_*`` in the same order as torch's foreach AdamW) runs elsewhere.

Sharded parameters (FSDP2's ``DTensor``) work as they are: the state tensors are DTensors laid
out like their parameter (so ``torch.distributed.checkpoint`` gathers and re-shards them, as it
does torch.optim.AdamW's), and each step updates every rank's local shards (``to_local()``,
which aliases the shard's storage) in the same launches as plain tensors.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import torch

from shardforge.kernels.attention import triton_available

if torch.distributed.is_available():
    from torch.distributed.tensor import DTensor
else:  # builds without torch.distributed have no sharded tensors
    DTensor = ()

__all__ = ["FusedAdamW", "adamw_reference_"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# Group keys torch.optim.AdamW keeps; ours carry them too so a state_dict loads either way.
_TORCH_GROUP_DEFAULTS = {
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": True,
}


def _scalar_dtype() -> torch.dtype:
    # torch.optim keeps `step` in float64 only when that is the default dtype.
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _step_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=_scalar_dtype()).clone()
    return torch.tensor(float(value), dtype=_scalar_dtype())


def adamw_reference_(
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
    """One AdamW step in place, in torch's foreach order. ``masters``: fp32 copies of ``params``
    to update instead (then copied back, rounded, into ``params``)."""
    targets = masters if masters is not None else params
    if masters is not None or any(g.dtype != t.dtype for g, t in zip(grads, targets)):
        grads = [g.to(t.dtype) for g, t in zip(grads, targets)]
    if maximize:
        grads = torch._foreach_neg(grads)
    torch._foreach_mul_(targets, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(targets, exp_avgs, denom, -step_size)
    if masters is not None:
        torch._foreach_copy_(params, masters)


class FusedAdamW(torch.optim.Optimizer):
    """AdamW (``torch.optim.AdamW``'s update and ``state_dict``) in few kernel launches.

    Args:
        params: parameters or param-group dicts, as for any ``torch.optim.Optimizer``.
        lr, betas, eps, weight_decay: as ``torch.optim.AdamW``; change them in
            ``param_groups`` between steps (LR schedulers work).
        maximize: ascend instead of descend.
        master_weights: keep fp32 master copies (and fp32 moments) of bf16/fp16 parameters.
        backend: ``"auto"`` (Triton for CUDA parameters when triton is installed, the reference
            otherwise), ``"triton"`` or ``"reference"``.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = FusedAdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        >>> model(torch.randn(3, 4)).sum().backward(); opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        master_weights: bool = True,
        backend: str = "auto",
    ) -> None:
        if amsgrad:
            raise NotImplementedError("FusedAdamW has no amsgrad; use torch.optim.AdamW")
        if not 0.0 <= lr or not 0.0 <= eps or not 0.0 <= weight_decay:
            raise ValueError(f"lr, eps, weight_decay must be >= 0; got {lr}, {eps}, {weight_decay}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1); got {betas}")
        if backend not in ("auto", "triton", "reference"):
            raise ValueError(f"backend must be 'auto', 'triton' or 'reference'; got {backend!r}")
        self.backend = backend
        self._plans: dict[int, _GroupPlan] = {}
        defaults = dict(
            _TORCH_GROUP_DEFAULTS,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            master_weights=master_weights,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._plans = {}
        for group in self.param_groups:
            for key, value in _TORCH_GROUP_DEFAULTS.items():
                group.setdefault(key, value)
            group.setdefault("master_weights", True)

    def _uses_master(self, p: torch.Tensor, group: dict[str, Any]) -> bool:
        return bool(group.get("master_weights", True)) and p.dtype in _LOW_PRECISION

    def _init_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
        if self._uses_master(p, group):
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
            state["master_param"] = p.detach().float().clone()
        else:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict saved by this class or by ``torch.optim.AdamW``.

        torch casts loaded moments to the parameter dtype; for master-weight parameters the fp32
        moments (and master copy, or the parameter itself when the checkpoint has none) are
        re-read from ``state_dict`` at full precision.
        """
        super().load_state_dict(state_dict)
        self._plans = {}
        saved_state = state_dict["state"]
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"]):
            if group.get("amsgrad"):
                raise NotImplementedError("loaded param group has amsgrad=True; not supported")
            for p, pid in zip(group["params"], saved_group["params"]):
                if pid not in saved_state:
                    continue
                src, state = saved_state[pid], self.state[p]
                state["step"] = _step_tensor(state["step"])
                if self._uses_master(p, group):
                    for key in ("exp_avg", "exp_avg_sq"):
                        state[key] = src[key].to(device=p.device, dtype=torch.float32, copy=True)
                    master = src.get("master_param", p.detach())
                    state["master_param"] = master.to(p.device, torch.float32, copy=True)
                else:
                    state.pop("master_param", None)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch.optim signature
        """One optimizer step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        if group.get("amsgrad"):
            raise NotImplementedError("FusedAdamW does not implement amsgrad")
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        plan = self._plans.get(id(group))
        if plan is None or not plan.matches(params):
            plan = self._plans[id(group)] = _GroupPlan(self, group, params)
        plan.steps.add_(1.0)  # every parameter's state["step"] is a view into this buffer
        step_values = plan.steps.tolist()
        beta1, beta2 = (float(b) for b in group["betas"])
        hyper = dict(
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            maximize=bool(group["maximize"]),
        )
        uniform = len(set(step_values)) == 1
        for bucket in plan.buckets:
            # Parameters that started training later have smaller step counts: one call each.
            by_step: dict[float, list[int]] = {}
            if uniform:
                by_step[step_values[0]] = bucket.index
            else:
                for j, i in enumerate(bucket.index):
                    by_step.setdefault(step_values[i], []).append(j)
            for step, sel in by_step.items():
                whole = len(sel) == len(bucket.index)
                columns = (bucket.sources, bucket.params, bucket.exp_avgs, bucket.exp_avg_sqs,
                           bucket.masters)
                sources, ps, ex, ex2, ms = (
                    c if whole or c is None else [c[j] for j in sel] for c in columns
                )
                grads = [_local(p.grad) for p in sources]
                if self._use_triton(bucket.device):
                    _triton_step(ps, grads, ex, ex2, ms, step=step, **hyper)
                else:
                    adamw_reference_(ps, grads, ex, ex2, ms, step=step, **hyper)

    def _use_triton(self, device: torch.device) -> bool:
        if self.backend == "triton":
            return True
        return self.backend == "auto" and device.type == "cuda" and triton_available()


def _triton_step(params, grads, exp_avgs, exp_avg_sqs, masters, **hyper) -> None:  # noqa: ANN001
    """The fused kernel over the parameters whose tensors are all contiguous; the rest (rare:
    views the kernel cannot address flat) through the reference."""
    from shardforge.kernels import adamw_triton

    columns = (params, grads, exp_avgs, exp_avg_sqs, masters)
    flat = [all(t.is_contiguous() for t in ts if t is not None)
            for ts in zip(*(c if c is not None else [None] * len(params) for c in columns))]
    if not all(flat):
        def pick(ts, keep):  # noqa: ANN001, ANN202
            return None if ts is None else [t for t, f in zip(ts, flat) if f == keep]

        adamw_reference_(*(pick(c, False) for c in columns), **hyper)
        columns = tuple(pick(c, True) for c in columns)
    adamw_triton.adamw_triton_(*columns, **hyper)


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (a view of its storage); a plain tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


class _Bucket:
    """Parameters of one group sharing device and dtypes: one kernel launch serves them.
    ``params`` and the states are local tensors; ``sources`` the group's parameters (whose
    ``.grad`` the step reads)."""

    def __init__(self, device: torch.device, has_master: bool) -> None:
        self.device, self.index = device, []
        self.sources: list[torch.Tensor] = []
        self.params, self.exp_avgs, self.exp_avg_sqs = [], [], []
        self.masters: list[torch.Tensor] | None = [] if has_master else None


class _GroupPlan:
    """Per-group bookkeeping rebuilt only when the set of parameters with gradients (or their
    state) changes, so a step costs a few Python operations per parameter, not dozens.

    ``steps`` is one CPU float tensor holding every parameter's step count; each
    ``state["step"]`` is a 0-d view into it, so one ``add_`` advances them all while the
    state_dict still has torch's per-parameter ``step`` tensors (distinct elements, so
    torch.optim.AdamW increments each once after loading).
    """

    def __init__(self, opt: FusedAdamW, group: dict[str, Any], params: list[torch.Tensor]):
        states = []
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("FusedAdamW does not support sparse gradients")
            state = opt.state[p]
            states.append(state if state else opt._init_state(p, group))
        self.steps = torch.tensor([float(s["step"]) for s in states], dtype=_scalar_dtype())
        for i, state in enumerate(states):
            state["step"] = self.steps[i]
        self.params = params
        self.grad_dtypes = [p.grad.dtype for p in params]
        buckets: dict[tuple, _Bucket] = {}
        for i, (p, state) in enumerate(zip(params, states)):
            has_master = "master_param" in state
            key = (p.device, p.dtype, p.grad.dtype, has_master)
            bucket = buckets.get(key) or buckets.setdefault(key, _Bucket(p.device, has_master))
            bucket.index.append(i)
            bucket.sources.append(p)
            bucket.params.append(_local(p))
            bucket.exp_avgs.append(_local(state["exp_avg"]))
            bucket.exp_avg_sqs.append(_local(state["exp_avg_sq"]))
            if has_master:
                bucket.masters.append(_local(state["master_param"]))
        self.buckets = list(buckets.values())

    def matches(self, params: list[torch.Tensor]) -> bool:
        """Same parameters with gradients and same gradient dtypes (``load_state_dict`` drops
        all plans, as it replaces the state objects)."""
        return (
            len(params) == len(self.params)
            and all(map(operator.is_, params, self.params))
            and [p.grad.dtype for p in params] == self.grad_dtypes
        )
