"""Helpers the tests import: run a command's main in-process as its ``__main__`` would."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from search.cli import run_command
from search.config import StudyConfig
from search.data.splits import Splits
from search.study.drive import run_trials
from search.study.objective import Objective
from search.study.storage import make_storage
from search.study.study import create_study

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    main: Callable[[list[str] | None], int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run a command's ``main`` as its ``__main__`` would; returns (exit status, out, err)."""
    old = sys.argv
    sys.argv = ["prog", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_command(main)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def enqueued_study(
    config: StudyConfig, splits: Splits, weight_decays: list[float]
) -> optuna.Study:
    """Run one trial per listed weight decay, one at a time, in order (enqueued, so the sampler
    can't pick others): a small study whose trials a test knows in advance."""
    study = create_study(make_storage(config.storage_url), config, {})
    for weight_decay in weight_decays:
        study.enqueue_trial({"weight_decay": weight_decay})
    run_trials(study, Objective(config, splits), config.replace(trials=len(weight_decays)))
    return study
