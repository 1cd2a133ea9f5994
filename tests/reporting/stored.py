"""Studies whose trials are written straight into a tmp SQLite file, as the objective would
have stored them: the reporting tests then know every figure in advance and train nothing."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.config import StudyConfig
from search.study.history import HISTORY_ATTR, to_columns
from search.study.record import CONSTRAINT, TrialOutcome, record_config

LIMIT = 0.95
EPOCHS = 4
START = datetime(2026, 12, 1, 18, 0, 0)
OVER_LIMIT = "infeasible: train accuracy over the limit"  # how the objective's reason begins
BY_PRUNER = "pruned by the median pruner"


def empty_study(tmp_path: Path, name: str = "stored") -> optuna.Study:
    """An empty study with a recorded config (the limit and epochs the figures read)."""
    url = f"sqlite:///{tmp_path / 'stored.db'}"
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    record_config(study, StudyConfig(storage=url, max_train_acc=LIMIT, epochs=EPOCHS))
    return study


def add_trial(
    study: optuna.Study,
    weight_decay: float,
    curve: list[tuple[float, float]],
    finished_after_s: float,
    pruned_reason: str | None = None,
) -> FrozenTrial:
    """Store one finished trial; returns it as the study reads it back.

    Args:
        curve: (training accuracy, validation accuracy) of each epoch it trained; a trial
            with fewer than ``EPOCHS`` epochs is stored pruned, with ``pruned_reason``.
        finished_after_s: when it finished, in seconds after ``START``: the order of
            finishing is not the order of the trial numbers.
    """
    rows = [
        {
            "epoch": epoch,
            "train_loss": 1.0 - train,
            "train_accuracy": train,
            "val_loss": 1.0 - val,
            "val_accuracy": val,
            "seconds": 1.0,
        }
        for epoch, (train, val) in enumerate(curve, start=1)
    ]
    last = rows[-1]
    constraint = last["train_accuracy"] - LIMIT
    outcome = TrialOutcome(
        train_loss=last["train_loss"],
        train_accuracy=last["train_accuracy"],
        val_loss=last["val_loss"],
        val_accuracy=last["val_accuracy"],
        feasible=constraint <= 0,
        epochs_run=len(rows),
    )
    complete = len(rows) == EPOCHS
    reason = {} if pruned_reason is None else {"pruned_reason": pruned_reason}
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE if complete else TrialState.PRUNED,
        value=last["val_accuracy"] if complete else None,
        params={"weight_decay": weight_decay},
        distributions={"weight_decay": FloatDistribution(1e-6, 1e-1, log=True)},
        user_attrs={**asdict(outcome), **reason},
        system_attrs={HISTORY_ATTR: to_columns(rows)},
        intermediate_values={row["epoch"]: row["val_accuracy"] for row in rows},
        constraints={CONSTRAINT: constraint},
    )
    trial.datetime_start = START
    trial.datetime_complete = START + timedelta(seconds=finished_after_s)
    study.add_trial(trial)
    return study.get_trials(deepcopy=False)[-1]
