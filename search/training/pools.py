"""Which pool trains a study's trials: the hand-written one for the networks it writes out,
the ``torch.func`` one for every other network."""

from __future__ import annotations

from search.config import StudyConfig
from search.data.splits import Splits
from search.training.func_pool import FuncPool
from search.training.pool import TrialPool
from search.training.train import build_model, task_loss

# The networks TrialPool's forward and backward are written for: Linear, ReLU, Linear, with
# the weights named fc1 and fc2. Another class, even of the same layers, goes generic: the
# pool can't know that its forward is the same.
FAST_PATH = ("SimpleNN", "TabularNN")


def uses_fast_path(task: str) -> bool:
    """Whether ``task``'s network trains in the hand-written ``TrialPool`` (whose loss is
    cross-entropy written out: a Task's own loss goes generic)."""
    if task_loss(task) is not None:
        return False
    model = build_model(task)
    return type(model).__module__.startswith("models.") and type(model).__name__ in FAST_PATH


def make_pool(
    data: Splits, config: StudyConfig, capacity: int, generic: bool | None = None
) -> TrialPool | FuncPool:
    """A pool of ``capacity`` slots for ``config.task``; ``generic`` forces a path (the bench
    and the tests compare the two on the seed's network)."""
    if generic is None:
        generic = not uses_fast_path(config.task)
    return FuncPool(data, config, capacity) if generic else TrialPool(data, config, capacity)
