"""The task a study trains on, picked by ``config.task``: MNIST or the synthetic table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.config import StudyConfig
from search.data.mnist import load_splits
from search.data.splits import Splits
from search.data.synthetic import load_synthetic

if TYPE_CHECKING:
    import torch


def load_task(config: StudyConfig, device: torch.device | str = "cpu") -> Splits:
    """The splits of ``config.task``: MNIST from ``config.data_dir``, or the synthetic table.

    The synthetic task has no test set: it always validates on its own 200 held-out rows.
    """
    if config.task == "synthetic":
        return load_synthetic(config.subset, device)
    return load_splits(config.data_dir, config.validation, config.subset, device)
