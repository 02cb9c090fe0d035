"""Apache Beam composites: MatchFiles, ReadRaw, Analyze, Transform, WriteShards (imported only
by the CLI).

``from shardforge.pipelines import run_pipeline, Preprocess`` imports Beam on first use only, so
the CLI can list ``shardforge run`` without paying for it.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run_pipeline": "pipeline", "Summary": "pipeline",
    "Preprocess": "transforms", "MatchFiles": "transforms", "ReadRaw": "transforms",
    "Analyze": "transforms",
    "Transform": "transforms", "WriteShards": "transforms", "DeadLetters": "transforms",
    "ComputeStats": "stats", "TooManyErrors": "transforms",
    "make_options": "options", "make_pipeline": "options",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
