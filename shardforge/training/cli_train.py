"""``shardforge train``: train a model from a pipeline's output directory.

    shardforge train --config lm --data out/ --out runs/lm max_steps=300 model.n_layer=4
    shardforge train --config lm --data out/ --out runs/lm --resume
    shardforge train --config tabular --data out/ --print-config
    torchrun --nproc_per_node 2 -m shardforge.cli train --config lm --data out/ --out runs/lm

``--config`` is a YAML file or a packaged config (``lm``, ``tabular``, ``vlm``). Trailing
``key=value`` arguments override it (dotted keys reach into ``model``). Everything that can be
checked before training is: config and model keys, the data directory, the feature names the
config uses, and the run directory (a non-empty ``--out`` needs ``--resume`` or ``--overwrite``).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from shardforge.errors import Interrupted
from shardforge.records.manifest import check_readable
from shardforge.training.recipes import RECIPES, packaged_configs

# What a training run writes into its run dir; --overwrite deletes these and nothing else.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "config.json", "curves.png", "tensorboard")


def _interrupted_state(out_dir: str) -> str:
    """What an interrupted run left in ``out_dir``: its newest checkpoint, if any."""
    from shardforge.training.checkpoint import latest_checkpoint

    newest = latest_checkpoint(Path(out_dir) / "checkpoints")
    if newest is None:
        return f"no checkpoint in {out_dir} yet; rerun with --overwrite to start again"
    return f"the newest checkpoint is {newest}; continue from it with --resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML training config, or a packaged one: "
                        f"{', '.join(packaged_configs())} (default: the LM task's defaults; "
                        f"task=... picks another of {', '.join(RECIPES)})")
    parser.add_argument("--data", default=None,
                        help="pipeline output dir (the --output of `shardforge run`) with "
                        "schema.pbtxt, train/ and eval/")
    parser.add_argument("--out", default=None, help="run dir for checkpoints and metrics "
                                                    "(config key out_dir)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in the run dir")
    again.add_argument("--overwrite", action="store_true",
                       help="delete a previous run's outputs in the run dir and start afresh")
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                        help="where to train (config key device; default auto: cuda if present)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (YAML, after overrides) and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. max_steps=100 lr=1e-3 model.n_layer=2")


def check_data_dir(data: str) -> None:
    """A pipeline output: a directory with ``schema.pbtxt`` (what every reader needs first)."""
    from shardforge.features.state import SCHEMA_FILE
    from shardforge.records import fs

    what = "give the --output directory (or gs:// / s3:// prefix) of `shardforge run`"
    if not fs.exists(data):
        raise FileNotFoundError(f"--data {data} does not exist; {what}")
    if not fs.isdir(data):
        raise NotADirectoryError(f"--data {data} is a file, not a pipeline output; {what}")
    if not fs.isfile(fs.join(data, SCHEMA_FILE)):
        parent = fs.dirname(fs.absolute(data))
        hint = (f"; it looks like a split of {parent}: give --data {parent}"
                if fs.isfile(fs.join(parent, SCHEMA_FILE)) else f"; {what}")
        raise FileNotFoundError(f"--data {data} is not a pipeline output (no {SCHEMA_FILE})"
                                f"{hint}")


def prepare_run_dir(out_dir: str, *, resume: bool, overwrite: bool, delete: bool = True) -> None:
    """Refuse to mix a new run into an old one: a non-empty run dir needs ``--resume`` (continue
    it) or ``--overwrite`` (delete its run outputs, never anything else). Every rank checks;
    only the one with ``delete`` deletes."""
    path = Path(out_dir)
    if not path.is_dir() or resume:
        return
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"--out {out_dir} is not empty (a previous run?): add --resume to "
                              "continue it, --overwrite to replace it, or choose another --out")
    foreign = [name for name in entries if name not in RUN_OUTPUTS]
    if foreign:
        raise FileExistsError(f"--out {out_dir} holds files that are not a training run's "
                              f"({', '.join(foreign[:5])}): --overwrite deletes only a run's "
                              "outputs; choose another --out")
    for name in entries if delete else ():
        target = path / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def main(args: argparse.Namespace) -> int:
    import yaml

    from shardforge.training.config import TrainConfig, check_schema

    overrides = list(args.overrides)
    for key, value in (("data", args.data), ("out_dir", args.out), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = TrainConfig.load(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if not cfg.data:
        raise ValueError("give --data DIR (the --output directory of `shardforge run`)")
    from shardforge.features.state import load_schema
    from shardforge.training.trainer import train

    for source in cfg.mixture().sources:  # one output dir, or each source of a mixture
        check_data_dir(source.path)
        check_readable(source.path)  # a job output must be complete: records/manifest.py
        check_schema(cfg, load_schema(source.path))
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 owns the run dir
    prepare_run_dir(cfg.out_dir, resume=args.resume, overwrite=args.overwrite, delete=rank0)
    try:
        result = train(cfg, resume=args.resume)
    except KeyboardInterrupt as err:
        raise Interrupted(_interrupted_state(cfg.out_dir)) from err
    if not rank0:
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
