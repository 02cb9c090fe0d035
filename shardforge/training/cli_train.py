"""``shardforge train``: train a model from a pipeline's output directory.

    shardforge train --config shardforge/examples/lm.yaml --data out/ max_steps=300 model.n_layer=4
    shardforge train --config shardforge/examples/lm.yaml --data out/ --resume
    torchrun --nproc_per_node 2 -m shardforge.cli train --config shardforge/examples/lm.yaml --data out/

Trailing ``key=value`` arguments override the YAML config (dotted keys reach into ``model``).
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML training config (see shardforge/examples/)")
    parser.add_argument("--data", default=None, help="pipeline output dir with train/ and eval/")
    parser.add_argument("--out", default=None, help="run dir for checkpoints and metrics "
                                                    "(config key out_dir)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in the run dir")
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. max_steps=100 lr=1e-3 model.n_layer=2")


def main(args: argparse.Namespace) -> int:
    from shardforge.training.config import TrainConfig
    from shardforge.training.trainer import train

    overrides = list(args.overrides)
    for key, value in (("data", args.data), ("out_dir", args.out), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        cfg = TrainConfig.load(args.config, overrides)
    except (ValueError, TypeError, OSError) as err:
        print(f"shardforge train: {err}")
        return 2
    if not cfg.data:
        print("shardforge train: give --data DIR (a pipeline output dir) or data: in the config")
        return 2
    from shardforge.records.manifest import OutputError, check_readable

    try:
        check_readable(cfg.data)  # a job output must be complete: records/manifest.py
    except OutputError as err:
        print(f"shardforge train: {err}")
        return 2
    result = train(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    first, last = result.first_eval.get("eval_loss"), result.last_eval.get("eval_loss")
    summary = [f"done: {result.steps} steps, run dir {result.out_dir}"]
    if first is not None and last is not None:
        summary.append(f"eval loss {first:.4f} -> {last:.4f}")
    if result.checkpoint:
        summary.append(f"checkpoint {result.checkpoint}")
    if result.plot:
        summary.append(f"curves {result.plot}")
    print("; ".join(summary))
    return 0
