"""What the report shows of each finished trial, read from the record once for every figure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from search.errors import UserError
from search.study.history import trial_history
from search.study.record import FINISHED, TrialOutcome


class ReportError(UserError):
    """Nothing to draw, or nowhere to write it: one line for the user."""


@dataclass(frozen=True)
class TrialRecord:
    """What the figures need of one finished trial, read from its attributes."""

    number: int
    weight_decay: float
    complete: bool  # False: pruned
    feasible: bool  # as of its last epoch
    val_accuracy: float
    train_accuracy: float
    history: list[dict[str, Any]]
    finished: datetime | None = None  # when it completed or was pruned: the history's order

    @property
    def kind(self) -> str:
        if self.complete:
            return "complete, feasible" if self.feasible else "complete, infeasible"
        return "pruned by the pruner" if self.feasible else "pruned: over the limit"


def records(study: optuna.Study) -> list[TrialRecord]:
    """The finished trials that trained at least one epoch (a diverged one may not have)."""
    out = []
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        outcome = TrialOutcome.read(trial)
        history = trial_history(trial)
        if outcome is None or not history:
            continue
        out.append(
            TrialRecord(
                number=trial.number,
                weight_decay=trial.params["weight_decay"],
                complete=trial.state == TrialState.COMPLETE,
                feasible=bool(outcome.feasible),
                val_accuracy=outcome.val_accuracy,
                train_accuracy=outcome.train_accuracy,
                history=history,
                finished=trial.datetime_complete,
            )
        )
    return out
