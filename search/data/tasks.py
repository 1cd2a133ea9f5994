"""The task a study trains on, picked by ``config.task``: MNIST, the synthetic table, or a
user's ``search.Task`` (``search.data.task``), all handed up as the same ``Splits``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.config import StudyConfig
from search.data.mnist import load_splits, load_test
from search.data.splits import Splits
from search.data.synthetic import load_synthetic
from search.data.task import is_reference, load_user_task, task_splits

if TYPE_CHECKING:
    import torch


def load_task(config: StudyConfig, device: torch.device | str = "cpu") -> Splits:
    """The splits of ``config.task``: MNIST from ``config.data_dir``, the synthetic table, or
    the train and val tensors of a user's Task.

    The synthetic task has no test set: it always validates on its own 200 held-out rows.
    """
    if is_reference(config.task):
        return task_splits(config.task, load_user_task(config.task), config.subset, device)
    if config.task == "synthetic":
        return load_synthetic(config.subset, device)
    return load_splits(config.data_dir, config.validation, config.subset, device)


def has_test_set(task: str) -> bool:
    """Whether ``search.evaluate`` has a test split to score the task's recommendation on."""
    if is_reference(task):
        return load_user_task(task).test is not None
    return task == "mnist"


def load_test_split(
    config: StudyConfig, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's test inputs and labels (``has_test_set`` says there are some)."""
    if is_reference(config.task):
        test = load_user_task(config.task).test
        if test is None:
            raise ValueError(f"the task {config.task} has no test split")
        return test[0].float().to(device), test[1].long().to(device)
    return load_test(config.data_dir, device)
