"""One recipe per task: ``recipes/<task>.py`` defines ``train(cfg, *, resume, stop_at, stream)``.

Each is a plain loop built from the shared pieces (:mod:`shardforge.training.run`,
``schedule``, ``parallel``, ``progress``, ``checkpoint``); copy one to start a new task and add
its module here.

>>> recipe_for("lm").__module__
'shardforge.training.recipes.lm'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# task -> module holding its train(); imported on first use, so a task's deps load only for it
RECIPES: dict[str, str] = {
    "lm": "shardforge.training.recipes.lm",
    "tabular": "shardforge.training.recipes.tabular",
    "vlm": "shardforge.training.recipes.vlm",
}


def recipe_for(task: str) -> Callable:
    """The ``train`` function of ``task``'s recipe."""
    if task not in RECIPES:
        raise ValueError(f"no recipe for task {task!r}; tasks: {sorted(RECIPES)}")
    return importlib.import_module(RECIPES[task]).train
