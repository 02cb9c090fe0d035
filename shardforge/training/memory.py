"""Per-GPU memory plan for training: weights, gradients, optimizer states, activations.

The model-state arithmetic is the one of the ZeRO paper (Rajbhandari et al., 2020): with
mixed-precision Adam every parameter costs 2 bytes of 16-bit weights, 2 bytes of 16-bit
gradients and 12 bytes of fp32 optimizer state (master copy, ``exp_avg``, ``exp_avg_sq``),
16 bytes in all, so 7B parameters need 112 GB before a single activation. ZeRO stage 1 shards
the optimizer states over the data-parallel GPUs, stage 2 the gradients too, stage 3 the
weights too.

Activations follow Korthikanti et al. (2022), "Reducing Activation Recomputation in Large
Transformer Models": ``s·b·h·(34 + 5·a·s/h)`` bytes per layer in 16-bit, where the ``5·a·s/h``
term is the ``s×s`` attention matrix that flash attention never stores (dropped here, since
shardforge's attention is a flash kernel), plus the fp32 logits. It is an estimate: allocator
fragmentation, communication buffers and the CUDA context (~0.5-1 GB) are not counted.

>>> plan = plan_memory(7e9, precision="bf16-mixed", optimizer="adamw")
>>> round(plan.model_states / 1e9)
112
>>> round(plan_memory(7e9, zero_stage=3, gpus=8).model_states / 1e9)
14
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shardforge.records import layout

# bytes per parameter: (weights, gradients, fp32 master copy, one optimizer state tensor)
PRECISIONS: dict[str, tuple[int, int, int, int]] = {
    "bf16-mixed": (2, 2, 4, 4),  # 16-bit compute copy, fp32 master and fp32 Adam moments
    "fp16-mixed": (2, 2, 4, 4),
    "fp32": (4, 4, 0, 4),  # the weights are the master copy
    "bf16": (2, 2, 0, 2),  # pure bf16: no master copy, bf16 moments (loses small updates)
}
# number of per-parameter state tensors an optimizer keeps
OPTIMIZER_STATES: dict[str, tuple[str, ...]] = {
    "adamw": ("exp_avg", "exp_avg_sq"),
    "adam": ("exp_avg", "exp_avg_sq"),
    "sgd": ("momentum_buffer",),
    "lion": ("exp_avg",),
    "sgd-nomomentum": (),
}
# bytes per activation element per layer per token, in units of hidden size (Korthikanti et al.)
ACTIVATION_BYTES_PER_LAYER = 34
ACTIVATION_BYTES_CHECKPOINTED = 2  # only each layer's 16-bit input is kept

def parse_size(text: str | float | int) -> float:
    """GPU memory in bytes: ``records.layout.parse_size`` with a bare number in GB (``"80GB"``
    and ``80`` are 80e9 bytes, ``"80GiB"`` is 80·2^30)."""
    try:
        return float(layout.parse_size(text, bare=10**9))
    except ValueError:
        raise ValueError(f"cannot read a memory size from {text!r}: write e.g. 80GB (10^9 bytes) "
                         "or 141GiB (2^30 bytes)") from None


def parse_count(text: str | float | int) -> float:
    """``"7e9"``, ``"7B"``, ``"350M"``, ``"1.3b"`` -> a parameter count."""
    if isinstance(text, (int, float)):
        return float(text)
    suffixes = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
    text = text.strip().lower()
    if text and text[-1] in suffixes:
        return float(text[:-1]) * suffixes[text[-1]]
    return float(text)


@dataclass
class MemoryPlan:
    """Bytes per GPU of each part of training state; ``rows()`` gives the printed breakdown."""

    params: float
    precision: str
    optimizer: str
    zero_stage: int
    gpus: int
    weights: float
    gradients: float
    master: float
    states: dict[str, float] = field(default_factory=dict)
    activations: float | None = None
    activation_note: str = ""
    gpu_memory: float | None = None

    @property
    def optimizer_states(self) -> float:
        return self.master + sum(self.states.values())

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer_states

    @property
    def total(self) -> float:
        return self.model_states + (self.activations or 0.0)

    @property
    def bytes_per_param(self) -> float:
        """Model-state bytes per parameter on one GPU (16 for mixed AdamW without ZeRO)."""
        return self.model_states / self.params

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_memory is None else self.total <= self.gpu_memory

    def rows(self) -> list[tuple[str, float | None]]:
        rows: list[tuple[str, float | None]] = [
            ("weights", self.weights),
            ("gradients", self.gradients),
        ]
        if self.master:
            rows.append(("fp32 master weights", self.master))
        rows += list(self.states.items())
        rows += [("model states", self.model_states), ("activations (estimate)", self.activations),
                 ("total", self.total)]
        return rows


def plan_memory(
    params: float | None = None,
    *,
    precision: str = "bf16-mixed",
    optimizer: str = "adamw",
    zero_stage: int = 0,
    gpus: int = 1,
    seq_len: int | None = None,
    micro_batch: int | None = None,
    layers: int | None = None,
    hidden: int | None = None,
    heads: int | None = None,
    vocab: int | None = None,
    activation_checkpointing: bool = False,
    flash_attention: bool = True,
    gpu_memory: float | None = None,
) -> MemoryPlan:
    """Per-GPU bytes for data-parallel training with ZeRO stage ``zero_stage`` over ``gpus``.

    ``params`` may be omitted when ``layers`` and ``hidden`` are given (``12·L·h² + V·h``).
    Activations are estimated only when ``seq_len``, ``micro_batch``, ``layers`` and ``hidden``
    are all known.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {sorted(PRECISIONS)}")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {sorted(OPTIMIZER_STATES)}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, not {zero_stage}")
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, not {gpus}")
    if params is None:
        if layers is None or hidden is None:
            raise ValueError("give --params, or --layers and --hidden to estimate it")
        params = 12 * layers * hidden**2 + (vocab or 0) * hidden
    weight_b, grad_b, master_b, state_b = PRECISIONS[precision]
    # ZeRO shards optimizer states from stage 1, gradients from 2, weights from 3.
    shard_states = gpus if zero_stage >= 1 else 1
    shard_grads = gpus if zero_stage >= 2 else 1
    shard_weights = gpus if zero_stage >= 3 else 1
    plan = MemoryPlan(
        params=params, precision=precision, optimizer=optimizer, zero_stage=zero_stage, gpus=gpus,
        weights=params * weight_b / shard_weights,
        gradients=params * grad_b / shard_grads,
        master=params * master_b / shard_states,
        states={name: params * state_b / shard_states for name in OPTIMIZER_STATES[optimizer]},
        gpu_memory=gpu_memory,
    )
    if None in (seq_len, micro_batch, layers, hidden):
        plan.activation_note = "pass --seq-len, --micro-batch, --layers and --hidden to estimate"
        return plan
    tokens = seq_len * micro_batch
    if activation_checkpointing:
        per_layer = ACTIVATION_BYTES_CHECKPOINTED * tokens * hidden
        # one layer's full activations are live again while it is recomputed
        recompute = ACTIVATION_BYTES_PER_LAYER * tokens * hidden
    else:
        per_layer = ACTIVATION_BYTES_PER_LAYER * tokens * hidden
        recompute = 0
    if not flash_attention:
        per_layer += 5 * (heads or max(1, hidden // 128)) * seq_len * tokens
    logits = 4 * tokens * vocab if vocab else 0  # fp32 logits for the loss
    plan.activations = layers * per_layer + recompute + logits
    plan.activation_note = (
        f"{'checkpointed, ' if activation_checkpointing else ''}"
        f"{'flash attention' if flash_attention else 'materialized attention'}"
        f"{', fp32 logits' if vocab else ''}"
    )
    return plan


def format_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale, floor in (("GB", 1e9, 1e8), ("MB", 1e6, 1e5), ("KB", 1e3, 0)):
        if n >= floor:
            return f"{n / scale:,.2f} {unit}" if unit == "GB" else f"{n / scale:,.1f} {unit}"
    return f"{n:.0f} B"


def format_count(n: float) -> str:
    """7e9 -> '7B', 1.3e8 -> '130M', 125000 -> '125K'."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def format_plan(plan: MemoryPlan, measured_peak: float | None = None) -> str:
    """The printed breakdown (decimal GB, like the 112 GB textbook figure)."""
    head = (
        f"memory plan: {format_count(plan.params)} params, {plan.precision}, {plan.optimizer}, "
        f"ZeRO-{plan.zero_stage} over {plan.gpus} GPU{'s' if plan.gpus > 1 else ''} (per GPU)"
    )
    lines = [head]
    for name, value in plan.rows():
        if name in ("model states", "total"):
            lines.append("  " + "-" * 40)
        note = ""
        if name == "model states":
            note = f"  ({plan.bytes_per_param:.3g} bytes/param)"
        elif name.startswith("activations"):
            note = f"  ({plan.activation_note})" if plan.activation_note else ""
        lines.append(f"  {name:<24}{format_bytes(value):>14}{note}")
    if measured_peak is not None:
        lines.append(f"  {'measured peak':<24}{format_bytes(measured_peak):>14}  (torch.cuda)")
    if plan.gpu_memory is not None:
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"  {verdict} in {format_bytes(plan.gpu_memory)} per GPU")
    return "\n".join(lines)


def zero_table(plan_kwargs: dict, gpus: int) -> str:
    """Model-state bytes per GPU for ZeRO stages 0-3 side by side (the ZeRO paper's table)."""
    lines = [f"  model states per GPU by ZeRO stage, {gpus} GPUs:"]
    for stage in range(4):
        p = plan_memory(**{**plan_kwargs, "zero_stage": stage, "gpus": gpus})
        lines.append(f"    stage {stage}: {format_bytes(p.model_states):>12}"
                     f"  ({p.bytes_per_param:.3g} bytes/param)")
    return "\n".join(lines)
