"""``shardforge example NAME --out DIR``: an example's files, ready for ``run`` and ``train``.

The examples ship inside the package (``shardforge/examples/``), so they work from an installed
wheel; this command copies an example's feature set and training config into ``DIR`` (to read
and change) and writes its input data there:

    shardforge example clicklog --out clicklog     # click_features.py, tabular.yaml, clicks.csv
    shardforge example stdlib --out stdlib         # stdlib_features.py, lm.yaml, corpus/*.py

and prints the ``shardforge run`` and ``shardforge train`` commands that go on from there
(the LM's ``train`` sized for this machine: on its GPU, or about two minutes of training on
the CPU, with the ETA measured here).
"""

from __future__ import annotations

import argparse
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
# stdlib parts that are not ordinary library code (or are huge generated tables)
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
             "__pycache__", "turtledemo", "ensurepip", "pydoc_data", "encodings"}
MIN_FILE_BYTES, MAX_FILE_BYTES = 1_000, 40_000
EXAMPLES = {
    "clicklog": "synthetic click log (CSV) with a known feature/label relationship, tabular model",
    "stdlib": "Python standard-library sources as text documents, packed LM",
}


@dataclass
class ExampleFiles:
    """What :func:`write_example` wrote: the feature set, the config and the input glob, plus the
    options the Beam job needs for this input."""

    features: Path
    config: Path
    input: str
    run_options: list[str]


def write_example(name: str, out: str | Path, *, rows: int = 100_000, seed: int = 0,
                  files: int = 300) -> ExampleFiles:
    """Copy example ``name``'s feature set and config into ``out`` and write its data there.

    >>> ex = write_example("clicklog", "clicklog", rows=20_000)   # doctest: +SKIP
    >>> ex.features, ex.input                                     # doctest: +SKIP
    (PosixPath('clicklog/click_features.py'), 'clicklog/clicks.csv')
    """
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if name == "clicklog":
        from shardforge.examples.clicklog import write_csv

        features, config = _copy(out, "click_features.py", "tabular.yaml")
        csv_path = out / "clicks.csv"
        write_csv(str(csv_path), rows, seed)
        return ExampleFiles(features, config, str(csv_path), ["--format", "csv"])
    features, config = _copy(out, "stdlib_features.py", "lm.yaml")
    corpus = stage_corpus(stdlib_files(files), out / "corpus")
    # Split by the document's text, not its path: a copy of the corpus elsewhere splits the
    # same way, and duplicate files never straddle train and eval.
    return ExampleFiles(features, config, f"{corpus}/**.py",
                        ["--format", "text", "--split-key", "text"])


def stdlib_files(n_files: int) -> list[Path]:
    """A deterministic subset of the standard library's ``.py`` files: every k-th by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py")
        if not SKIP_DIRS.intersection(p.relative_to(root).parts)
        and MIN_FILE_BYTES <= p.stat().st_size <= MAX_FILE_BYTES
    )
    if not files:
        raise FileNotFoundError(f"no Python sources under {root}")
    step = max(1, len(files) // n_files)
    return files[::step][:n_files]


def stage_corpus(files: list[Path], corpus: Path) -> Path:
    """Copy ``files`` under ``corpus`` with their paths relative to the stdlib, so the Beam job
    (the demo's, or ``shardforge run`` by hand) reads exactly these files through one glob."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if corpus.exists():
        shutil.rmtree(corpus)
    for path in files:
        dest = corpus / path.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    return corpus


def _copy(out: Path, *names: str) -> list[Path]:
    copies = []
    for name in names:
        shutil.copyfile(EXAMPLES_DIR / name, out / name)
        copies.append(out / name)
    return copies


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=tuple(EXAMPLES), metavar="NAME",
                        help="; ".join(f"{k}: {v}" for k, v in EXAMPLES.items()))
    parser.add_argument("--out", default=None, help="directory to write into (default ./NAME)")
    parser.add_argument("--rows", type=int, default=100_000,
                        help="clicklog: rows of the CSV (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="clicklog: random seed (default 0)")
    parser.add_argument("--files", type=int, default=300,
                        help="stdlib: number of standard-library files (default 300)")


def main(args: argparse.Namespace) -> int:
    from shardforge.cli import command_line

    out = Path(args.out or args.name).resolve()
    ex = write_example(args.name, out, rows=args.rows, seed=args.seed, files=args.files)
    print(f"wrote {ex.features}, {ex.config} and the input data {ex.input}\nnext:")
    print("  " + command_line("run", ["--features", str(ex.features), "--input", ex.input,
                                      *ex.run_options, "--output", str(out / "data")]))
    train = ["--config", str(ex.config), "--data", str(out / "data"), "--out", str(out / "run")]
    if args.name == "stdlib":
        sizing = size_first_lm_run(ex.config)
        print(f"  # {sizing.summary}")
        train += sizing.arguments
    else:
        # One torch thread on the CPU (ignored on a GPU), as the demo trains: these models' ops
        # are too small to split, and threads that wait for each other made lm.yaml's steps
        # 5-10x slower on 2 cores (measured: 51-76 against 515-606 tokens/s, 280-350 against
        # 2,400-3,100 per CPU-second, at load average 18).
        train.append("threads=1")
    print("  " + command_line("train", train))
    return 0


# A first run should end in a few minutes with a loss that visibly drops (it does within 30
# steps: 5.2 -> 3.2 nats). Its steps are timed here, then as many run as fit the budget; start-up,
# three evaluations of EVAL_BATCHES and the plot add 20-30 s on 2 cores.
FIRST_RUN_BUDGET_S = 120.0
FIRST_RUN_STEPS = (60, 3000)  # (fewest, most)
EVAL_BATCHES = 8
# Tokens per step of the config's model: on the CPU the demo's 512 (on 2 cores, one thread, load
# average 7, a step of 1,024 tokens took 0.87 s and one of 512 0.41 s: attention grows with the
# length, so twice the steps in the same time); on a GPU 16x lm.yaml's, where a step this small
# is bound by kernel launches.
FIRST_RUN_PACKING_LENGTH = {"cpu": 512, "cuda": 16_384}


@dataclass(frozen=True)
class FirstRunSizing:
    """What :func:`size_first_lm_run` chose: ``train`` arguments and a line that says why."""

    arguments: list[str]
    summary: str


def size_first_lm_run(config: Path) -> FirstRunSizing:
    """Size the LM example's first ``train`` run for this machine: on its GPU if torch sees one,
    else on the CPU with one thread; steps timed here (a few steps of ``config``'s model, see
    :func:`shardforge.training.sizing.lm_steps_for_budget`) to fit :data:`FIRST_RUN_BUDGET_S`,
    and a time limit that keeps the promise on a machine busier at training time than now.

    >>> size_first_lm_run(Path("stdlib/lm.yaml")).summary          # doctest: +SKIP
    'sized for the CPU with 1 thread (no GPU found): 293 steps of 512 tokens at 0.41 s/step ...'
    """
    import torch

    from shardforge.training.config import TrainConfig
    from shardforge.training.sizing import CPU_THREADS, lm_steps_for_budget

    device = "cuda" if torch.cuda.is_available() else "cpu"
    length = FIRST_RUN_PACKING_LENGTH[device]
    steps, per_step = lm_steps_for_budget(TrainConfig.load(config).model, length,
                                          FIRST_RUN_BUDGET_S, device, FIRST_RUN_STEPS,
                                          CPU_THREADS)
    limit = max(1.5 * FIRST_RUN_BUDGET_S, 2 * FIRST_RUN_STEPS[0] * per_step)
    arguments = ["--device", device, f"packing_length={length}", f"max_steps={steps}",
                 f"eval_every={-(-steps // 2)}", f"eval_batches={EVAL_BATCHES}",
                 f"time_limit_s={limit:.0f}"]
    if device == "cpu":
        arguments.append(f"threads={CPU_THREADS}")
        where = f"the CPU with {CPU_THREADS} thread (no GPU found)"
    else:
        where = f"the GPU ({torch.cuda.get_device_name()})"
    minutes, seconds = divmod(round(steps * per_step), 60)
    summary = (f"sized for {where}: {steps} steps of {length} tokens at {per_step:.2f} s/step "
               f"measured here ({length / per_step:,.0f} tokens/s), ETA {minutes}:{seconds:02d} "
               f"of training")
    return FirstRunSizing(arguments, summary)
