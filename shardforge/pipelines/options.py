"""Pipeline options and runner selection.

The default runner is Beam's FnApiRunner in multi-processing mode with two workers. We construct
it ourselves instead of passing ``--runner DirectRunner``: since Beam 2.62 the DirectRunner first
tries the Prism runner, which downloads a Go binary, and that fails (slowly) on an offline
machine. Multi-processing mode also proves that every DoFn, CombineFn and side input pickles the
way Dataflow workers need. Any other ``--runner`` (DataflowRunner, FlinkRunner, PrismRunner, ...)
is passed to Beam unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)

LOCAL_RUNNERS = {None, "DirectRunner", "direct", "FnApiRunner"}
DEFAULT_NUM_WORKERS = 2


def make_options(beam_args: Sequence[str] = (), **overrides) -> PipelineOptions:
    """Beam options from command-line style ``beam_args`` (e.g. ``["--runner", "DataflowRunner"]``).

    Local runs default to ``direct_running_mode=multi_processing`` with two workers; both can be
    overridden with the usual Beam flags. ``save_main_session`` stays off: every DoFn here is a
    module-level class, so nothing depends on the launching process's ``__main__``.
    """
    options = PipelineOptions(list(beam_args), **overrides)
    if is_local(options):
        direct = options.view_as(DirectOptions)
        if "--direct_running_mode" not in " ".join(beam_args):
            direct.direct_running_mode = "multi_processing"
        if direct.direct_num_workers in (None, 1) and "--direct_num_workers" not in " ".join(
            beam_args
        ):
            direct.direct_num_workers = DEFAULT_NUM_WORKERS
    options.view_as(SetupOptions).save_main_session = False
    return options


def is_local(options: PipelineOptions) -> bool:
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
    options = options if options is not None else make_options(beam_args)
    return beam.Pipeline(runner=make_runner(options), options=options)


def beam_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(known, unknown)`` flags of ``args`` by Beam's own option parser (every
    ``PipelineOptions`` subclass Beam loaded, as ``PipelineOptions.get_all_options`` builds it),
    and every option string that parser knows. Unknown flags would be dropped by Beam with a
    warning; ``shardforge run`` makes them an error instead."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(args))
    names = [opt for action in parser._actions for opt in action.option_strings]
    return [a.split("=", 1)[0] for a in unknown if a.startswith("-")], names
