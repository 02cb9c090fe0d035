"""Pipeline options and runner selection.

The default runner is Beam's FnApiRunner in multi-processing mode with two workers, except for a
small local input (under :data:`SMALL_INPUT_BYTES`), which runs in-process: starting worker
processes costs seconds, more than a second core saves on such a job. We construct
it ourselves instead of passing ``--runner DirectRunner``: since Beam 2.62 the DirectRunner first
tries the Prism runner, which downloads a Go binary, and that fails (slowly) on an offline
machine. Multi-processing mode also proves that every DoFn, CombineFn and side input pickles the
way Dataflow workers need. Any other ``--runner`` (DataflowRunner, FlinkRunner, PrismRunner, ...)
is passed to Beam unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Beam is imported where options are made: RUNNER_RULE is read by --help
    from apache_beam.options.pipeline_options import PipelineOptions

LOCAL_RUNNERS = {None, "DirectRunner", "direct", "FnApiRunner"}
DEFAULT_NUM_WORKERS = 2
# Local input below this runs in-process, one worker. Measured on 2 shared cores (click log, same
# code, paired): at 200k rows (23 MiB) in-process takes 0.47x the CPU and 0.72x the wall clock of
# two workers (each worker imports Beam and the feature set, then talks gRPC). In-process a row
# costs ~25 us of CPU (1k to 200k rows); on two idle cores a second worker saves at most half of
# that against the ~4 s the workers take to start, so they pay back from about 40 MiB on (an
# estimate from those figures): the threshold stays below it.
SMALL_INPUT_BYTES = 32 * 2**20
RUNNER_RULE = (f"a local job runs in-process when its local input is under "
               f"{SMALL_INPUT_BYTES // 2**20} MiB, else in {DEFAULT_NUM_WORKERS} worker processes, "
               "unless --direct_running_mode or --direct_num_workers is given")


def make_options(beam_args: Sequence[str] = (), inputs: Sequence[str] = (),
                 **overrides) -> PipelineOptions:
    """Beam options from command-line style ``beam_args`` (e.g. ``["--runner", "DataflowRunner"]``).

    Local runs default to ``direct_running_mode=multi_processing`` with two workers, or to
    ``in_memory`` with one when the files of ``inputs`` (globs) are all local and together
    smaller than :data:`SMALL_INPUT_BYTES`; a ``--direct_running_mode`` or
    ``--direct_num_workers`` flag turns that choice off, and the flags given win.
    ``save_main_session`` stays off: every DoFn here is a module-level class, so nothing depends
    on the launching process's ``__main__``.

    >>> make_options([], inputs=["clicks-1000.csv"]).get_all_options()[
    ...     "direct_running_mode"]                                        # doctest: +SKIP
    'in_memory'
    """
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions

    options = PipelineOptions(list(beam_args), **overrides)
    if is_local(options):
        direct = options.view_as(DirectOptions)
        given = " ".join(beam_args)
        mode_given = "--direct_running_mode" in given
        workers_given = "--direct_num_workers" in given
        if not (mode_given or workers_given) and _small_local_input(inputs):
            direct.direct_running_mode, direct.direct_num_workers = "in_memory", 1
        else:
            if not mode_given:
                direct.direct_running_mode = "multi_processing"
            if direct.direct_num_workers in (None, 1) and not workers_given:
                direct.direct_num_workers = DEFAULT_NUM_WORKERS
    options.view_as(SetupOptions).save_main_session = False
    return options


def _small_local_input(patterns: Sequence[str]) -> bool:
    """Whether the files ``patterns`` match are all local and smaller than
    :data:`SMALL_INPUT_BYTES` together (no pattern: not known to be small)."""
    from apache_beam.io.filesystems import FileSystems

    if not patterns or any("://" in p for p in patterns):
        return False
    total = sum(m.size_in_bytes for r in FileSystems.match(list(patterns))
                for m in r.metadata_list)
    return total < SMALL_INPUT_BYTES


def is_local(options: PipelineOptions) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS


def make_runner(options: PipelineOptions):
    """The runner object for ``options``: the offline FnApiRunner for local runs, else ``None``
    (Beam resolves ``--runner`` itself)."""
    if not is_local(options):
        return None
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


def make_pipeline(beam_args: Sequence[str] = (), options: PipelineOptions | None = None):
    """A ``beam.Pipeline`` on the offline local runner unless ``--runner`` says otherwise."""
    import apache_beam as beam

    options = options if options is not None else make_options(beam_args)
    return beam.Pipeline(runner=make_runner(options), options=options)


def beam_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(known, unknown)`` flags of ``args`` by Beam's own option parser (every
    ``PipelineOptions`` subclass Beam loaded, as ``PipelineOptions.get_all_options`` builds it),
    and every option string that parser knows. Unknown flags would be dropped by Beam with a
    warning; ``shardforge run`` makes them an error instead."""
    import apache_beam  # noqa: F401 - defines every PipelineOptions subclass
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(args))
    names = [opt for action in parser._actions for opt in action.option_strings]
    return [a.split("=", 1)[0] for a in unknown if a.startswith("-")], names
