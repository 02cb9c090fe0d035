"""How big a first training run should be on this machine: the step time of a configured LM
measured here, and the thread count small models train fastest with on a CPU. Used by the demo
and by the train command ``shardforge example stdlib`` prints."""

from __future__ import annotations

import time

import numpy as np

# The demo's models are too small to gain much from splitting ops over threads, and on a busy
# machine threads waiting for each other made LM steps 5-20x slower here (measured: 0.15 s per
# step with one thread against 1.2-3.6 s with two, at load average 8 on 2 cores)
CPU_THREADS = 1


def lm_steps_for_budget(model_cfg: dict, packing_length: int, budget_s: float, device: str,
                        bounds: tuple[int, int], threads: int) -> tuple[int, float]:
    """How many LM steps fit in ``budget_s`` here: times a few steps of the configured model on
    a synthetic batch shaped like the stdlib's (most files are longer than the packing length,
    so a batch is one document piece), so the demo takes minutes on any CPU."""
    import torch

    from shardforge.training.models.lm import LMConfig, PackedLM

    lo, hi = bounds
    if budget_s <= 0 or lo == hi:
        return lo, float("nan")
    dev = torch.device("cuda" if device in ("cuda", "auto") and torch.cuda.is_available()
                       else "cpu")
    threads_before = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    model = PackedLM(LMConfig(vocab_size=256, **model_cfg)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    doc = packing_length
    ids = torch.randint(0, 256, (packing_length,), device=dev)
    pos = (torch.arange(packing_length, device=dev) % doc)
    cu = torch.arange(0, packing_length + 1, doc, dtype=torch.int32, device=dev)
    # as the trainer runs it: bf16 autocast on the GPU, fp32 on the CPU
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        with autocast:
            loss = model(ids, pos, cu, doc, targets=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(threads_before)
    per_step = float(np.median(times[1:]))
    return int(np.clip(budget_s / per_step, lo, hi)), per_step
