"""Weight-decay search: an Optuna study over the seed's MNIST MLP.

The commands are ``python -m search.<command>``; from Python, ``load_best`` gives the model a
study recommends::

    from search import load_best
    model = load_best("mnist-weight-decay")            # eval mode, on the CPU
    model.config.epochs, model.params["weight_decay"], model.trial_number

Importing ``search`` loads neither PyTorch nor Optuna; ``load_best`` does, when called.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

# `python -m search.<command>` imports this package first, with sys.argv[0] == "-m" while it
# does: from here on a Ctrl-C during the command's imports is one line, not a traceback.
if sys.argv[:1] == ["-m"]:
    from search.signals import exit_at_once_on_stop

    exit_at_once_on_stop()

if TYPE_CHECKING:
    import torch

from search.data.task import Task as Task  # torch-free until a Task is checked

__all__ = ["Task", "load_best"]


def load_best(
    study_name: str = "mnist-weight-decay",
    storage: str | None = None,
    artifacts: Path | str | None = None,
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """The recommended trial's trained model of study ``study_name``, in eval mode on ``device``.

    Args:
        study_name: as ``--study-name``.
        storage: as ``--storage``; None is the study's SQLite file under ``studies/``.
        artifacts: as ``--artifacts``; None is the folder beside a SQLite study.
        device: "cpu", "cuda", "auto" (CUDA when present) or a ``torch.device``.

    Returns:
        The model, with ``model.config`` (the study's settings as a ``StudyConfig``),
        ``model.params`` (the trial's parameters), ``model.trial_number`` and
        ``model.val_accuracy``. The trial is
        ``search.study.record.recommended_trial``'s: the seed-confirmed recommendation.
    """
    from search.study.artifacts import load_best as load

    return load(study_name, storage, artifacts, device)
