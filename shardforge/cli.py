"""The one entry point: ``shardforge run | inspect | index | stats | train | plan | demo | …``.

Each subcommand lives beside the component it drives, in a module exposing
``add_arguments(parser)`` and ``main(args) -> int``. Only the module of the command given is
imported (``shardforge --help`` imports none), and those modules import their heavy dependencies
(Beam, torch) inside ``main`` so that ``shardforge inspect`` never pays for Beam.

The one exit-code rule, applied here and nowhere else: a command that fails prints one line on
stderr, ``shardforge CMD: error: what went wrong; what to do``, and exits 2 for the user's mistake
(an exception of :data:`shardforge.errors.USER_ERRORS`: a missing or invalid file, input,
column, option or config key) and 1 for anything else; ``--verbose`` adds the traceback.
Ctrl-C exits 130 with one line saying what state the output or run is in (a command raises
:class:`~shardforge.errors.Interrupted` to say it).
Beam's, absl's and gRPC's logging stay silent unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import shlex
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from shardforge import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("shardforge.pipelines.cli_run", "Beam job: read raw data, analyze, transform, shard"),
    "stats": ("shardforge.pipelines.cli_stats", "per-feature statistics table and stats.html"),
    "validate": ("shardforge.pipelines.cli_validate",
                 "anomalies and drift of new data against a reference output"),
    "inspect": ("shardforge.records.cli_inspect", "count, verify and pretty-print TFRecord files"),
    "index": ("shardforge.records.cli_index", "(re)build the index files of TFRecord shards"),
    "train": ("shardforge.training.cli_train", "train a model from shards"),
    "plan": ("shardforge.training.cli_plan", "per-GPU memory plan for training a model"),
    "demo": ("shardforge.demo", "end-to-end job on an embedded default dataset"),
    "example": ("shardforge.examples.cli_example",
                "write an example's feature set, config and data into a directory"),
}
MAX_ERROR_CHARS = 240  # of an unexpected error's message; --verbose prints all of it
# Libraries that log at import and while a job runs; silent unless --verbose.
NOISY_LOGGERS = ("apache_beam", "absl", "grpc", "apitools")


def build_parser(commands: Iterable[str] = COMMANDS) -> argparse.ArgumentParser:
    """The command line's parser; every command is listed, and the options of ``commands``
    (default: all) added, which imports their modules."""
    commands = set(commands)
    parser = argparse.ArgumentParser(prog="shardforge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"shardforge {__version__}",
                        help="print the version and exit")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="on an error, print the full traceback too (run: also Beam's logging)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                help="the command (shardforge COMMAND --help: its options)")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        if name in commands:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(_main=module.main)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (the top level has
    options without values only)."""
    return next((a for a in argv if not a.startswith("-")), None)


def program() -> list[str]:
    """How to start shardforge in *this* environment from any shell: the ``shardforge`` script
    beside this interpreter, or ``python -m shardforge`` with this interpreter's absolute path
    (a bare ``shardforge`` may be another environment's, or not on PATH)."""
    script = Path(sys.executable).parent / "shardforge"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "shardforge"]


def command_line(subcommand: str, argv: list[str]) -> str:
    """A ``shardforge SUBCOMMAND ...`` line that runs as printed in a fresh shell: the program of
    :func:`program` and the arguments quoted for a POSIX shell (use absolute paths in ``argv``)."""
    return shlex.join([*program(), subcommand, *argv])


def error_message(err: BaseException) -> str:
    """One line for ``err``: its message (a ``KeyError``'s without the quotes), or its type."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(str(text).split())
    if isinstance(err, OSError) and err.strerror and err.filename:  # not "[Errno 2] …: 'x'"
        text = f"{err.filename}: {err.strerror}"
    elif isinstance(err, FileNotFoundError) and err.args == (text,) and " " not in text:
        text = f"{text}: no such file or directory"  # the message is only the path
    return text or type(err).__name__


def _not_from_a_library(record: logging.LogRecord) -> bool:
    """False for a record a noisy library logged through the root logger (Beam's "apitools not
    found" notice at import is ``logging.warning``)."""
    parts = Path(record.pathname).parts
    return not any(name in parts for name in NOISY_LOGGERS)


def quiet_libraries(verbose: bool) -> None:
    """Silence the logging of Beam, absl, gRPC and apitools, unless ``verbose``; shardforge's
    own progress and errors go to stderr directly."""
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    logging.getLogger().addFilter(_not_from_a_library)


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names and return its exit code. As the process's own command
    line (``argv`` None: the ``shardforge`` script, ``python -m shardforge``), a finished
    ``run``'s objects are then frozen out of the garbage collector (:func:`gc.freeze`): the
    interpreter's shutdown would otherwise walk all of them, seconds after a Beam job, only to
    free memory the exit frees anyway. Exit handlers and the flush of stdout and stderr still
    run, and objects freed by reference counting are finalized as before. Only ``run``: the
    training commands load extension modules (triton's, through nanobind) that report the
    objects a frozen heap never frees as leaks on stderr."""
    code = _main(sys.argv[1:] if argv is None else list(argv))
    if argv is None and _command(sys.argv[1:]) == "run":
        gc.freeze()
    return code


def _main(argv: list[str]) -> int:
    parser = build_parser([_command(argv)] if _command(argv) in COMMANDS else [])
    # `shardforge run` forwards unknown flags to Beam as pipeline options.
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    quiet_libraries(args.verbose)
    from shardforge.errors import Interrupted, exit_code
    from shardforge.records.manifest import OutputLocked

    try:
        return int(args._main(args) or 0)
    except (KeyboardInterrupt, Interrupted) as err:
        if args.verbose:
            traceback.print_exception(err)
        state = f": {err}" if isinstance(err, Interrupted) else ""
        print(f"shardforge {args.command}: interrupted{state}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place every command's failure is reported
        failure, code = err, exit_code(err)
        if code == 2 or isinstance(err, OutputLocked):  # our own message: what to do, in full
            text = error_message(err)
        else:  # not one of ours: its first line only (a Beam worker's error holds tracebacks)
            first = (str(err).strip().splitlines() or [""])[0]
            first = first if len(first) <= MAX_ERROR_CHARS else first[:MAX_ERROR_CHARS] + " …"
            text = f"{type(err).__name__}: {first}".rstrip(": ")
    if args.verbose:
        traceback.print_exception(failure)
    else:
        text += " (--verbose shows the traceback)" if code == 1 else ""
    print(f"shardforge {args.command}: error: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
