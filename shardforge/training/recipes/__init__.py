"""One recipe per task, registered here and nowhere else.

A recipe is a module ``recipes/<task>.py`` (the :class:`Recipe` protocol) exporting:

- ``Settings``: the dataclass the config's ``model`` mapping fills (its keys are checked
  against its fields when the config loads);
- ``check_schema(cfg, schema)``: fail before training when the config names features the
  data lacks;
- ``train(cfg, *, resume, stop_at, stream)``: a plain loop built from the shared pieces
  (:mod:`shardforge.training.run`, ``schedule``, ``parallel``, ``progress``, ``checkpoint``).

To add a task, copy a recipe to ``recipes/<task>.py`` and add its line to :data:`RECIPES`;
``task=<task>``, ``shardforge train`` and the config checks pick it up from here. A packaged
config (``--config <task>``) is ``shardforge/examples/<task>.yaml`` if that file exists.

>>> recipe_for("lm").Settings.__name__
'LMConfig'
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

# task -> module of its recipe; imported on first use, so a task's deps load only for it
RECIPES: dict[str, str] = {
    "lm": "shardforge.training.recipes.lm",
    "tabular": "shardforge.training.recipes.tabular",
    "vlm": "shardforge.training.recipes.vlm",
}

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


class Recipe(Protocol):
    """What a recipe module exports (see the module docstring): ``cfg`` is a
    :class:`~shardforge.training.config.TrainConfig`, ``train`` returns a
    :class:`~shardforge.training.run.TrainResult`. Not imported here, even for type checking:
    the config asks this registry, so the registry imports nothing of training's."""

    Settings: type

    def check_schema(self, cfg: Any, schema: Any) -> None: ...

    def train(self, cfg: Any, *, resume: bool = False, stop_at: int | None = None,
              stream: Any = None) -> Any: ...


def recipe_for(task: str) -> Recipe:
    """The recipe module of ``task``."""
    if task not in RECIPES:
        raise ValueError(f"task must be one of {', '.join(sorted(RECIPES))}, not {task!r}")
    return importlib.import_module(RECIPES[task])


def packaged_configs() -> list[str]:
    """The tasks with a packaged config: ``--config lm`` is ``shardforge/examples/lm.yaml``."""
    return [task for task in RECIPES if (EXAMPLES_DIR / f"{task}.yaml").is_file()]
