"""The one entry point: ``shardforge run | inspect | index | stats | train | plan | demo``.

Each subcommand lives beside the component it drives, in a module exposing
``add_arguments(parser)`` and ``main(args) -> int``. Those modules import their heavy
dependencies (Beam, torch) inside ``main`` so that ``shardforge inspect`` never pays for Beam.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("shardforge.pipelines.cli_run", "Beam job: read raw data, analyze, transform, shard"),
    "stats": ("shardforge.pipelines.cli_stats", "per-feature statistics table and stats.html"),
    "inspect": ("shardforge.records.cli_inspect", "count, verify and pretty-print TFRecord files"),
    "index": ("shardforge.records.cli_index", "(re)build the index files of TFRecord shards"),
    "train": ("shardforge.training.cli_train", "train a model from shards"),
    "plan": ("shardforge.training.cli_plan", "per-GPU memory plan for training a model"),
    "demo": ("shardforge.demo", "end-to-end job on an embedded default dataset"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardforge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # component not built yet
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        sub.choices[name].set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `shardforge run` forwards unknown flags to Beam as pipeline options.
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
