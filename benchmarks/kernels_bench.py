"""Kernel benchmarks: varlen FlashAttention vs torch SDPA (flash, padded batch) and FlexAttention
(document mask); FusedAdamW vs torch.optim.AdamW(fused=True), against measured copy bandwidth.

    python benchmarks/kernels_bench.py --results-dir benchmarks/results   # on a CUDA GPU
    python benchmarks/kernels_bench.py --dry-run --results-dir /tmp/x     # tiny, CPU: plumbing only

Writes ``kernels_bench.json`` and ``kernels_bench.md`` to the results directory. Each section runs
in its own try/except: a failure is recorded (with its traceback) in the JSON and the rest still
runs. FLOPs of attention count only real (unpadded) work: ``4 * H * D * sum(L_i^2)`` for the
forward, halved when causal; backward = 2.5 x forward (FlashAttention's convention), so
forward+backward = 3.5 x forward. AdamW moves 28 bytes per fp32 parameter per step (read p, g,
m, v; write p, m, v).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shardforge.kernels import (  # noqa: E402 - after the path fix for direct runs
    FusedAdamW,
    flash_attn_varlen,
    flash_attn_varlen_reference,
)

ADAMW_BYTES_PER_PARAM = 28


def parse_args(argv=None):  # noqa: ANN001, ANN201
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results-dir", default=os.environ.get("RESULTS_DIR", "benchmarks/results")
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (plumbing)")
    return parser.parse_args(argv)


def plan(dry_run: bool) -> dict:
    if dry_run:
        return dict(device="cpu", tokens=512, max_doc=192, heads={64: 2, 128: 2},
                    adamw_params=[100_000, 400_000], n_tensors=20, copy_numel=1 << 20)
    # 16k tokens; H * D = 2048 (a 2048-wide model) for both head dims.
    return dict(device="cuda", tokens=16384, max_doc=4096, heads={64: 32, 128: 16},
                adamw_params=[100_000_000, 1_000_000_000], n_tensors=200,
                copy_numel=1 << 28)  # fmt: skip


def environment(device: str) -> dict:
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", ""),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, sm_count=props.multi_processor_count)  # fmt: skip
    return env


def make_timer(device: str):  # noqa: ANN201
    """``time_ms(fn, grad_to_none=None) -> median ms``: triton's do_bench on CUDA (it flushes L2
    between runs), a plain perf_counter loop on CPU."""
    if device == "cuda":
        from triton.testing import do_bench

        def time_ms(fn, grad_to_none=None):  # noqa: ANN001, ANN202
            return do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                            return_mode="median")  # fmt: skip

        return time_ms

    def time_ms(fn, grad_to_none=None):  # noqa: ANN001, ANN202
        fn()
        times = []
        for _ in range(3):
            for t in grad_to_none or ():
                t.grad = None
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times)[1]

    return time_ms


def doc_lengths(total: int, max_doc: int, seed: int = 0) -> list[int]:
    """Mixed lengths, log-uniform in [16, max_doc], summing to exactly ``total``."""
    rng = random.Random(seed)
    lens: list[int] = []
    while sum(lens) < total:
        lens.append(min(int(math.exp(rng.uniform(math.log(16), math.log(max_doc)))),
                        total - sum(lens)))  # fmt: skip
    return lens


def _fwd_bwd(fn, inputs, do):  # noqa: ANN001, ANN202
    def run():
        fn(*inputs).backward(do)

    return run


def _attention_row(name, time_ms, fwd, inputs, do, flops_fwd, compile_s=None):  # noqa: ANN001, ANN202
    start = time.perf_counter()
    fwd(*inputs)  # compile / autotune outside the timing
    fwd(*inputs).backward(do)
    warm_s = time.perf_counter() - start
    with torch.no_grad():
        t_fwd = time_ms(lambda: fwd(*inputs))
    t_all = time_ms(_fwd_bwd(fwd, inputs, do), grad_to_none=list(inputs))
    t_bwd = t_all - t_fwd
    return {
        "impl": name,
        "fwd_ms": t_fwd,
        "fwd_tflops": flops_fwd / (t_fwd * 1e-3) / 1e12,
        "fwd_bwd_ms": t_all,
        "fwd_bwd_tflops": 3.5 * flops_fwd / (t_all * 1e-3) / 1e12,
        # Timing noise can make (fwd+bwd) - fwd meaningless on tiny CPU runs.
        "bwd_tflops_derived": 2.5 * flops_fwd / (t_bwd * 1e-3) / 1e12 if t_bwd > 0 else None,
        "first_call_s": round(warm_s if compile_s is None else compile_s + warm_s, 2),
    }


def _max_errors(q, k, v, cu, max_len):  # noqa: ANN001, ANN202
    """Max abs error of our output and grads vs the fp32 reference on the benchmark shapes."""
    do = torch.randn_like(q)
    results = []
    pairs = ((flash_attn_varlen, lambda x: x), (flash_attn_varlen_reference, torch.Tensor.float))
    for fn, cast in pairs:
        leaves = [cast(x.detach()).requires_grad_() for x in (q, k, v)]
        out = fn(*leaves, cu, max_len, True)
        out.backward(cast(do))
        results.append([out.detach().float(), *(x.grad.float() for x in leaves)])
    names = ("out", "dq", "dk", "dv")
    return {name: (a - b).abs().max().item() for name, a, b in zip(names, *results)}


def bench_attention(cfg: dict, time_ms) -> dict:  # noqa: ANN001
    device = cfg["device"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    lens = doc_lengths(cfg["tokens"], cfg["max_doc"])
    t = sum(lens)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32,
                      device=device)  # fmt: skip
    max_len = max(lens)
    section = {"doc_lengths": lens, "tokens": t, "dtype": str(dtype), "causal": True,
               "by_head_dim": {}}  # fmt: skip
    for d, h in cfg["heads"].items():
        rows, errors, check = [], {}, {}
        flops_fwd = 4 * h * d * sum(n * n for n in lens) / 2  # causal: half the score matrix
        g = torch.Generator(device="cpu").manual_seed(d)
        q, k, v, do = (torch.randn(t, h, d, generator=g).to(device, dtype) for _ in range(4))
        for x in (q, k, v):
            x.requires_grad_()

        def ours(q, k, v):  # noqa: ANN001, ANN202
            return flash_attn_varlen(q, k, v, cu, max_len, causal=True)

        try:
            label = "shardforge varlen (Triton)" if q.is_cuda else "shardforge varlen (reference)"
            rows.append(_attention_row(label, time_ms, ours, (q, k, v), do, flops_fwd))
            check = _max_errors(q, k, v, cu, max_len)
        except Exception:
            errors["shardforge"] = traceback.format_exc()
        try:
            rows.append(_sdpa_padded(time_ms, q, k, v, do, lens, flops_fwd))
        except Exception:
            errors["sdpa"] = traceback.format_exc()
        try:
            rows.append(_flex_document_mask(time_ms, q, k, v, do, lens, flops_fwd))
        except Exception:
            errors["flex"] = traceback.format_exc()
        section["by_head_dim"][d] = {
            "heads": h, "flops_fwd": flops_fwd, "rows": rows, "errors": errors,
            "shardforge_max_abs_error_vs_fp32_reference": check,
        }  # fmt: skip
    return section


def _sdpa_padded(time_ms, q, k, v, do, lens, flops_fwd):  # noqa: ANN001, ANN202
    """torch SDPA (flash backend on CUDA) on the same documents padded into a [B, H, L, D] batch.
    Padding and unpadding are not timed: only the attention call is."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, lmax = len(lens), max(lens)
    starts = [0, *torch.tensor(lens).cumsum(0).tolist()[:-1]]

    def pad(x):  # noqa: ANN001, ANN202
        out = x.new_zeros(b, lmax, *x.shape[1:])
        for i, (s, n) in enumerate(zip(starts, lens)):
            out[i, :n] = x[s:s + n]
        return out.transpose(1, 2).contiguous().detach().requires_grad_()  # [B, H, L, D]

    qp, kp, vp, dop = pad(q), pad(k), pad(v), pad(do).detach()
    backends = [SDPBackend.FLASH_ATTENTION] if q.is_cuda else [SDPBackend.MATH]

    def sdpa(q, k, v):  # noqa: ANN001, ANN202
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    label = "torch SDPA flash, padded batch" if q.is_cuda else "torch SDPA math, padded batch"
    row = _attention_row(label, time_ms, sdpa, (qp, kp, vp), dop, flops_fwd)
    row["padded_shape"] = list(qp.shape)
    return row


def _flex_document_mask(time_ms, q, k, v, do, lens, flops_fwd):  # noqa: ANN001, ANN202
    """FlexAttention over the packed sequence with a causal document mask (compiled on CUDA)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    t = q.shape[0]
    doc = torch.repeat_interleave(torch.arange(len(lens), device=q.device),
                                  torch.tensor(lens, device=q.device))  # fmt: skip

    def document_causal(b, h, q_idx, kv_idx):  # noqa: ANN001, ANN202
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    start = time.perf_counter()
    mask = create_block_mask(document_causal, None, None, t, t, device=q.device)
    flex = torch.compile(flex_attention, dynamic=False) if q.is_cuda else flex_attention
    compile_s = time.perf_counter() - start

    def to_bhtd(x):  # noqa: ANN001, ANN202
        return x.detach().transpose(0, 1).unsqueeze(0).contiguous().requires_grad_()

    qf, kf, vf, dof = to_bhtd(q), to_bhtd(k), to_bhtd(v), to_bhtd(do).detach()

    def run(q, k, v):  # noqa: ANN001, ANN202
        return flex(q, k, v, block_mask=mask)

    return _attention_row("torch FlexAttention, document mask", time_ms, run, (qf, kf, vf), dof,
                          flops_fwd, compile_s=compile_s)  # fmt: skip


def copy_bandwidth_gbs(cfg: dict, time_ms) -> float:  # noqa: ANN001
    src = torch.randn(cfg["copy_numel"], device=cfg["device"])
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def _tensor_sizes(total: int, n: int, seed: int = 0) -> list[int]:
    """``n`` sizes between ~0.5x and ~1.5x the mean, summing to exactly ``total``."""
    rng = random.Random(seed)
    weights = [rng.uniform(0.5, 1.5) for _ in range(n)]
    sizes = [max(1, int(total * w / sum(weights))) for w in weights]
    sizes[-1] += total - sum(sizes)
    return sizes


def bench_adamw(cfg: dict, time_ms, copy_gbs: float | None) -> dict:  # noqa: ANN001
    device = cfg["device"]
    section = {"bytes_per_param": ADAMW_BYTES_PER_PARAM, "rows": [], "errors": {}}
    variants = [
        ("shardforge FusedAdamW fp32", torch.float32, lambda ps: FusedAdamW(ps, lr=1e-3)),
        ("torch AdamW(fused=True) fp32", torch.float32,
         lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=device == "cuda")),
        ("shardforge FusedAdamW bf16 + fp32 master", torch.bfloat16,
         lambda ps: FusedAdamW(ps, lr=1e-3)),
        ("torch AdamW(fused=True) bf16 (no master)", torch.bfloat16,
         lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=device == "cuda")),
    ]  # fmt: skip
    for total in cfg["adamw_params"]:
        sizes = _tensor_sizes(total, cfg["n_tensors"])
        for name, dtype, make in variants:
            try:
                params = [torch.nn.Parameter(torch.randn(n, device=device, dtype=dtype))
                          for n in sizes]  # fmt: skip
                for p in params:
                    p.grad = torch.randn_like(p)
                opt = make(params)
                opt.step()
                ms = time_ms(opt.step)
                gbs = ADAMW_BYTES_PER_PARAM * total / (ms * 1e-3) / 1e9
                section["rows"].append({
                    "impl": name, "params": total, "tensors": len(sizes), "step_ms": ms,
                    "effective_gbs": gbs,
                    "pct_of_copy": None if not copy_gbs else 100 * gbs / copy_gbs,
                })  # fmt: skip
            except Exception:
                section["errors"][f"{name} @ {total}"] = traceback.format_exc()
            finally:
                params = opt = None
                if device == "cuda":
                    torch.cuda.empty_cache()
    return section


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# shardforge kernel benchmarks",
        "",
        f"{env.get('gpu', env['device'])} · torch {env['torch']} · triton {env['triton']} · "
        f"Python {env['python']} · {env['date_utc']}",
        "",
    ]
    att = results.get("attention")
    if isinstance(att, dict) and "by_head_dim" in att:
        lines += [
            f"## Attention: {att['tokens']} tokens in {len(att['doc_lengths'])} documents "
            f"(max {max(att['doc_lengths'])}), {att['dtype']}, causal",
            "",
            "| head dim | heads | implementation | fwd ms | fwd TFLOP/s | fwd+bwd ms "
            "| fwd+bwd TFLOP/s | bwd TFLOP/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for d, sec in att["by_head_dim"].items():
            for r in sec["rows"]:
                lines.append(
                    f"| {d} | {sec['heads']} | {r['impl']} | {r['fwd_ms']:.3f} | "
                    f"{r['fwd_tflops']:.1f} | {r['fwd_bwd_ms']:.3f} | {r['fwd_bwd_tflops']:.1f} | "
                    f"{_fmt(r['bwd_tflops_derived'])} |"
                )
            for key, err in sec["errors"].items():
                lines.append(f"| {d} | {sec['heads']} | {key} failed: "
                             f"{err.strip().splitlines()[-1]} | | | | | |")  # fmt: skip
        lines.append("")
        for d, sec in att["by_head_dim"].items():
            check = sec["shardforge_max_abs_error_vs_fp32_reference"]
            if check:
                errs = ", ".join(f"{k} {v:.2g}" for k, v in check.items())
                lines.append(f"- head dim {d}: shardforge max abs error vs fp32 reference: {errs}")
        lines.append("")
    adam = results.get("adamw")
    if isinstance(adam, dict) and "rows" in adam:
        lines += [
            f"## AdamW step ({adam['bytes_per_param']} B/param; device copy "
            f"{results.get('copy_bandwidth_gbs') or 0:.3g} GB/s)",
            "",
            "| params | tensors | implementation | step ms | GB/s | % of copy |",
            "|---|---|---|---|---|---|",
        ]
        for r in adam["rows"]:
            pct = "" if r["pct_of_copy"] is None else f"{r['pct_of_copy']:.0f}%"
            lines.append(f"| {r['params']:,} | {r['tensors']} | {r['impl']} | {r['step_ms']:.3f} "
                         f"| {r['effective_gbs']:.0f} | {pct} |")  # fmt: skip
        for key, err in adam["errors"].items():
            lines.append(f"| | | {key} failed: {err.strip().splitlines()[-1]} | | | |")
        lines.append("")
    for key, err in results.get("section_errors", {}).items():
        lines.append(f"- section `{key}` failed: {err.strip().splitlines()[-1]}")
    return "\n".join(lines) + "\n"


def _write(out_dir: Path, results: dict) -> str:
    (out_dir / "kernels_bench.json").write_text(json.dumps(results, indent=2, default=str))
    table = markdown(results)
    (out_dir / "kernels_bench.md").write_text(table)
    return table


def main(argv=None) -> int:  # noqa: ANN001
    args = parse_args(argv)
    cfg = plan(args.dry_run)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"dry_run": args.dry_run, "section_errors": {}, "section_seconds": {}}
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        results["environment"] = environment("cpu")
        results["section_errors"]["setup"] = "no CUDA device; use --dry-run for a CPU plumbing run"
    else:
        results["environment"] = environment(cfg["device"])
        time_ms = make_timer(cfg["device"])
        sections = [
            ("copy_bandwidth_gbs", lambda: copy_bandwidth_gbs(cfg, time_ms)),
            ("attention", lambda: bench_attention(cfg, time_ms)),
            ("adamw", lambda: bench_adamw(cfg, time_ms, results.get("copy_bandwidth_gbs"))),
        ]
        for name, run in sections:
            start = time.perf_counter()
            try:
                results[name] = run()
            except Exception:
                results["section_errors"][name] = traceback.format_exc()
            results["section_seconds"][name] = round(time.perf_counter() - start, 1)
            print(f"[kernels_bench] {name}: {results['section_seconds'][name]} s", flush=True)
            _write(out_dir, results)  # after every section: a timeout keeps what finished
    print(_write(out_dir, results))
    return 1 if results["section_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
