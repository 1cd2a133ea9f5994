"""The speed bench's recipe table: every recipe of ``RECIPES`` one trial at a time and in the
pool, each on its own task's data, timed beside the seed's paths.

``python -m search.bench`` calls ``add_recipe_paths`` after parsing (it loads the tasks and
imports torch, which ``--help`` must not wait for).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from search.benchmarks.tables import RECIPES
from search.config import StudyConfig

if TYPE_CHECKING:
    import torch

    from search.data.splits import Splits

# The user's model of the recipe table: the docs' tabular example, a search.Task.
EXAMPLE_TASK = f"{Path(__file__).resolve().parents[2] / 'docs/examples/tabular_task.py'}:task"

Paths = dict[str, tuple[int, Callable[[int], float]]]


def add_recipe_paths(
    paths: Paths, data: Splits, config: StudyConfig, k: int, warmup: int, device: torch.device
) -> dict[str, tuple[str, str]]:
    """Add every recipe's single-trial and pool-of-``k`` paths to ``paths`` (the seed recipe
    reuses the seed table's own rows) and return each recipe's two path names."""
    from search.data.synthetic import load_synthetic
    from search.data.tasks import load_task
    from search.training.timing import pool_path, single_path

    table_data = {"mnist": data, "synthetic": load_synthetic(device=device)}
    tasks = {"example": EXAMPLE_TASK}
    table_data[EXAMPLE_TASK] = load_task(config.replace(task=EXAMPLE_TASK), device)
    names: dict[str, tuple[str, str]] = {}
    for name, changes in RECIPES.items():
        fields = {f: tasks.get(v, v) for f, v in changes.items() if f != "generic"}
        generic = True if changes.get("generic") else None  # None: the task's own path
        recipe = config.replace(**fields)
        images = table_data[recipe.task]
        single, pool = "(b) single trial, preloaded", f"(c) pool K={k}"
        if fields:
            single = f"{name}: one trial"
            paths[single] = (1, single_path(images, recipe, warmup))
        if changes:
            pool = f"{name}: pool K={k}"
        if pool not in paths:
            paths[pool] = (k, pool_path(images, recipe, k, warmup, generic))
        names[name] = (single, pool)
    return names
