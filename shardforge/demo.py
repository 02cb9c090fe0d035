"""``shardforge demo``: the whole product on data every machine has, in about ten minutes on CPU.

1. A Beam job reads Python standard-library sources (found through ``sysconfig``, copied to
   ``OUT/stdlib/corpus``) as text documents and writes train/eval shards with byte-level token
   ids plus side features learned or derived in the job (package with a vocabulary from the
   analyze pass, file-size bucket), the schema, stats and errors. The feature set is
   ``shardforge/examples/stdlib_features.py``, copied to ``OUT/stdlib/`` by the same code as
   ``shardforge example stdlib``, so the printed ``shardforge run`` command reruns it by hand.
2. The small packed LM trains on those shards for a few minutes; eval loss before and after.
3. The click-log example (a known feature/label relationship) goes through the same pipeline and
   the tabular model trains to a printed AUC.
4. A summary: where everything is, the figures, and the commands to rerun each step (absolute
   paths and this environment's ``shardforge``, so they run as printed from any shell).

    shardforge demo                  # ./demo_out, CPU, about 10 minutes on 2 cores
    shardforge demo --quick          # smoke test (CI): fixed step counts, about 15 s
    shardforge demo --device cuda    # train on the GPU
    shardforge demo --steps lm       # rerun one step (stdlib-data, lm, clicklog)
    shardforge demo --steps vlm      # the vision-language demo (about 6 minutes on CPU)
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shardforge.training.sizing import CPU_THREADS, lm_steps_for_budget

STEPS = ("stdlib-data", "lm", "clicklog", "vlm")
# The vision-language step (shardforge/demo_vlm.py: a Pillow corpus, the Beam job, three VLMs)
# takes about 6 more minutes on 2 cores, so it runs when named: `shardforge demo --steps vlm`.
DEFAULT_STEPS = ("stdlib-data", "lm", "clicklog")


@dataclass
class Scale:
    """How big each part of the demo is (full, or --quick for CI)."""

    files: int
    lm_budget_s: float  # training time for the LM; the step count is calibrated to fit it
    lm_steps: tuple[int, int]  # (min, max) LM steps
    lm_model: dict
    packing_length: int
    click_rows: int
    click_steps: int
    beam_args: tuple[str, ...] = field(default_factory=tuple)


FULL = Scale(files=300, lm_budget_s=300, lm_steps=(100, 3000), packing_length=512,
             lm_model=dict(n_layer=4, n_head=4, n_kv_head=2, d_model=128, qk_norm=True,
                           z_loss=1e-4),
             click_rows=50_000, click_steps=250)
# in-process Beam: at this size worker processes cost more than the work
QUICK = Scale(files=40, lm_budget_s=0, lm_steps=(60, 60), packing_length=512,
              lm_model=dict(n_layer=1, n_head=2, n_kv_head=1, d_model=32, qk_norm=True,
                            z_loss=1e-4),
              click_rows=20_000, click_steps=80,
              beam_args=("--direct_running_mode=in_memory", "--direct_num_workers=1"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output directory (default ./demo_out)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="where to train (default cpu)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test for CI")
    parser.add_argument("--steps", default=",".join(DEFAULT_STEPS),
                        help=f"comma-separated steps to run, of {', '.join(STEPS)} (default: "
                        f"{','.join(DEFAULT_STEPS)})")


def _say(text: str) -> None:
    print(text, flush=True)


def _banner(text: str) -> None:
    _say(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def main(args: argparse.Namespace) -> int:
    from shardforge.cli import command_line
    from shardforge.examples.cli_example import write_example
    from shardforge.pipelines import run_pipeline
    from shardforge.training.cli_train import prepare_run_dir
    from shardforge.training.config import TrainConfig
    from shardforge.training.trainer import train

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    scale = QUICK if args.quick else FULL
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    figures: dict[str, str] = {}
    outputs: list[tuple[str, Path]] = []
    commands: list[tuple[str, str]] = []
    ok = True

    lm_dir = out / "stdlib"
    lm_data = lm_dir / "data"
    if "stdlib-data" in steps:
        _banner("1/4 Beam job: Python standard library sources -> packed-LM shards")
        ex = write_example("stdlib", lm_dir, files=scale.files)
        files = sorted(p for p in (lm_dir / "corpus").rglob("*.py"))
        _say(f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB, from "
             f"{sysconfig.get_paths()['stdlib']}, copied to {lm_dir / 'corpus'}")
        run_options = ["--eval-fraction", "0.1", "--num-shards", "2", "--overwrite",
                       *scale.beam_args]
        t0 = time.perf_counter()
        summary = run_pipeline(str(ex.features), ex.input, str(lm_data), fmt="text",
                               split_key="text", eval_fraction=0.1, num_shards=2,
                               beam_args=scale.beam_args, overwrite=True)
        _say(f"wrote {summary.splits} documents, {summary.errors} errors, in "
             f"{time.perf_counter() - t0:.0f}s -> {lm_data}")
        figures["stdlib documents train/eval"] = (
            f"{summary.splits.get('train', 0)}/{summary.splits.get('eval', 0)}")
        outputs += [("stdlib feature set and LM config", ex.features.parent),
                    ("stdlib shards, schema, stats, errors", lm_data)]
        commands += [
            ("the stdlib example: feature set, config, corpus", command_line(
                "example", ["stdlib", "--out", str(lm_dir), "--files", str(scale.files)])),
            ("Beam job over the stdlib corpus", command_line("run", [
                "--features", str(ex.features), "--input", ex.input, *ex.run_options,
                "--output", str(lm_data), *run_options])),
        ]

    if "lm" in steps:
        _banner("2/4 train the small LM on packed batches")
        n_steps, per_step = lm_steps_for_budget(scale.lm_model, scale.packing_length,
                                                scale.lm_budget_s, args.device, scale.lm_steps,
                                                CPU_THREADS)
        if per_step == per_step:  # not NaN: calibrated
            _say(f"calibration: {per_step:.2f}s per step here -> {n_steps} steps "
                 f"(~{scale.lm_budget_s:.0f}s budget)")
        run_dir = lm_dir / "run"
        # The calibration is a guess on a busy machine: the time limit keeps the promise of
        # minutes, but never cuts below the step floor (learning matters more than the clock).
        time_limit = []
        if scale.lm_budget_s:
            limit = max(1.5 * scale.lm_budget_s, 2 * scale.lm_steps[0] * per_step)
            time_limit = [f"time_limit_s={limit:.0f}"]
        overrides = [f"max_steps={n_steps}", f"packing_length={scale.packing_length}",
                     f"threads={CPU_THREADS}",
                     f"warmup_steps={max(1, n_steps // 15)}", f"eval_every={-(-n_steps // 4)}",
                     f"ckpt_every={n_steps // 2}",
                     *(f"model.{k}={v}" for k, v in scale.lm_model.items()), *time_limit]
        prepare_run_dir(str(run_dir), resume=False, overwrite=True)
        lm = train(TrainConfig.load("lm", [f"data={lm_data}", f"out_dir={run_dir}",
                                           f"device={args.device}", *overrides]))
        start_loss, end_loss = lm.first_eval["eval_loss"], lm.last_eval["eval_loss"]
        learned = end_loss < 0.8 * start_loss
        ok = ok and learned
        _say(f"LM eval loss {start_loss:.3f} (step 0) -> {end_loss:.3f} (step {lm.steps}): "
             f"{'learned' if learned else 'DID NOT LEARN ENOUGH'}; packing efficiency "
             f"{lm.packing_efficiency:.1%}, {lm.throughput:,.0f} tokens/s")
        figures["LM eval loss step 0 -> end"] = (
            f"{start_loss:.3f} -> {end_loss:.3f} ({lm.steps} steps; uniform = {np.log(256):.3f})")
        figures["LM packing efficiency"] = f"{lm.packing_efficiency:.1%}"
        figures["LM training throughput"] = f"{lm.throughput:,.0f} tokens/s"
        outputs += [("LM metrics", lm.metrics), ("LM loss curves", lm.plot),
                    ("LM checkpoint", lm.checkpoint)]
        commands.append(("train the LM", command_line("train", [
            "--config", "lm", "--data", str(lm_data), "--out", str(run_dir), "--overwrite",
            "--device", args.device, *overrides])))

    if "clicklog" in steps:
        _banner("3/4 click-log example: CSV -> Beam job -> FeatureLayer + MLP")
        click_dir = out / "clicklog"
        ex = write_example("clicklog", click_dir, rows=scale.click_rows, seed=0)
        click_data = click_dir / "data"
        run_options = ["--eval-fraction", "0.2", "--num-shards", "2", "--overwrite",
                       *scale.beam_args]
        t0 = time.perf_counter()
        summary = run_pipeline(str(ex.features), ex.input, str(click_data), fmt="csv",
                               eval_fraction=0.2, num_shards=2, beam_args=scale.beam_args,
                               overwrite=True)
        _say(f"wrote {summary.splits} rows, {summary.errors} errors, in "
             f"{time.perf_counter() - t0:.0f}s -> {click_data}")
        run_dir = click_dir / "run"
        overrides = [f"max_steps={scale.click_steps}", f"eval_every={scale.click_steps}",
                     f"threads={CPU_THREADS}", f"ckpt_every={scale.click_steps}"]
        prepare_run_dir(str(run_dir), resume=False, overwrite=True)
        tab = train(TrainConfig.load("tabular", [
            f"data={click_data}", f"out_dir={run_dir}", f"device={args.device}", *overrides]))
        auc = tab.last_eval.get("eval_auc", float("nan"))
        ok = ok and auc > 0.6
        _say(f"click-log eval AUC {auc:.4f} (0.5 = chance); eval loss "
             f"{tab.first_eval['eval_loss']:.4f} -> {tab.last_eval['eval_loss']:.4f}")
        figures["click-log rows train/eval"] = (
            f"{summary.splits.get('train', 0)}/{summary.splits.get('eval', 0)}")
        figures["click-log eval AUC"] = (
            f"{tab.first_eval.get('eval_auc', float('nan')):.4f} -> {auc:.4f}")
        outputs += [("click-log CSV, feature set, config", click_dir),
                    ("click-log shards", click_data),
                    ("tabular metrics", tab.metrics), ("tabular loss curves", tab.plot)]
        commands += [
            ("the click-log example: feature set, config, CSV", command_line("example", [
                "clicklog", "--out", str(click_dir), "--rows", str(scale.click_rows),
                "--seed", "0"])),
            ("Beam job over the CSV", command_line("run", [
                "--features", str(ex.features), "--input", ex.input, *ex.run_options,
                "--output", str(click_data), *run_options])),
            ("train the tabular model", command_line("train", [
                "--config", "tabular", "--data", str(click_data), "--out", str(run_dir),
                "--overwrite", "--device", args.device, *overrides])),
        ]

    if "vlm" in steps:
        from shardforge.demo_vlm import run_vlm_demo

        _banner("vision-language: Pillow corpus -> Beam job -> encoder VLM, early fusion, "
                "text-only baseline")
        vlm = run_vlm_demo(out, quick=True, log=_say, **(
            {"samples": 240, "steps": 40} if args.quick else {}))
        for kind in ("encoder", "fusion", "blind"):
            figures[f"VLM {kind}: eval caption loss, colour probe"] = (
                f"{vlm[kind]['eval_caption_loss']:.3f}, {vlm[kind]['colour_probe']:.0%}")
        outputs.append(("VLM runs and summary.json", out / "vlm"))
        ok &= args.quick or vlm["encoder_vs_blind"] < 0.9
    _banner("4/4 summary")
    figures["total time"] = f"{time.perf_counter() - t_start:.0f}s"
    for name, value in figures.items():
        _say(f"  {name:<30} {value}")
    _say("\noutputs:")
    for name, path in outputs:
        if path is not None:
            _say(f"  {name:<38} {path}")
    _say(f"\nrerun a step by hand (from any directory; the commands use this environment, "
         f"{sys.prefix}):")
    commands.append(("memory plan of a 7B model on 8 GPUs", command_line(
        "plan", ["--params", "7e9", "--zero-stage", "3", "--gpus", "8", "--gpu-memory", "80GB"])))
    for name, command in commands:
        _say(f"  # {name}\n  {command}")
    if not ok:
        _say("\nthe demo did NOT show learning as expected (see the figures above)")
    return 0 if ok else 1


if __name__ == "__main__":
    from shardforge.cli import main as cli_main

    sys.exit(cli_main(["demo", *sys.argv[1:]]))
