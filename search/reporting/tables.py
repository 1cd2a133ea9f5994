"""The study as tables: the recommended configuration, every trial, every trial's epochs.

optuna-dashboard's own CSV lacks the constraint value, feasibility, start time and duration;
these tables have them, read from the record each trial stored. ``search.export`` writes them
as CSV; a notebook can take the frames as they are. Torch-free.
"""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from search.errors import UserError
from search.study.history import trial_history
from search.study.record import (
    FINISHED,
    Recommendation,
    TrialFacts,
    constraint_of,
    recommended_trial,
    recorded_settings,
    stored_feasible,
    stored_recommendation,
    stored_test_result,
)

# The columns of the one-row best-configuration CSV, in order.
BEST_COLUMNS = [
    "study",
    "trial",
    "weight_decay",
    "lr",
    "batch_size",
    "epochs",
    "optimizer",
    "decay_biases",
    "task",
    "epochs_run",
    "val_accuracy",
    "train_accuracy",
    "train_accuracy_running",
    "train_accuracy_final",
    "val_loss",
    "train_loss",
    "feasible",
    "validation",
    "seed",
    "study_seed",
]

# The long per-epoch CSV (--history): one row per trial and epoch, for learning curves in
# pandas (``frame.pivot(index="epoch", columns="trial", values="val_accuracy")``).
HISTORY_COLUMNS = [
    "study",
    "trial",
    "state",
    "weight_decay",
    "epoch",
    "train_loss",
    "train_accuracy",
    "train_accuracy_final",
    "val_loss",
    "val_accuracy",
    "seconds",
]

# The seed confirmation of the recommended trial (search.engine.confirm); empty when the study
# was run with --confirm-seeds 0 or found a new best since it was confirmed.
CONFIRM_COLUMNS = [
    "confirmed",
    "confirm_seeds",
    "val_accuracy_mean",
    "val_accuracy_std",
    "train_accuracy_mean",
    "feasible_fraction",
]

# Appended to the best CSV once `python -m search.evaluate` has scored the best trial.
TEST_COLUMNS = ["test_accuracy", "test_loss"]

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection), also
# after leading spaces or line breaks, which it skips: ASCII and their fullwidth and small forms.
FORMULA_STARTS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\u2212")


class ExportError(UserError):
    """Nothing to export: one line for the user."""


def trial_row(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    """One trial as a flat record: identity, parameters, recipe, metrics, constraint, timing."""
    config = recorded_settings(study)
    facts = TrialFacts.read(trial)
    outcome = facts.outcome
    constraint = constraint_of(trial)
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "study": study.study_name,
        "trial": trial.number,
        "state": trial.state.name,
        # A study with the full search space chose these per trial; otherwise the study fixed
        # them (studies from before these options existed used Adam on every parameter).
        "optimizer": config.get("optimizer", "adam"),
        "decay_biases": config.get("decay_biases", True),
        **trial.params,
        "task": config.get("task", "mnist"),
        "lr": config.get("lr"),
        "batch_size": config.get("batch_size"),
        "epochs": config.get("epochs"),
        # A pruned trial's figures are those of its last epoch, epochs_run, not the recipe's.
        "epochs_run": None if outcome is None else outcome.epochs_run,
        "val_accuracy": None if outcome is None else outcome.val_accuracy,
        # The one the constraint read (train_accuracy_measure), then both measures: the
        # running one (each batch before its update, the seed's) and the final weights'.
        "train_accuracy": None if outcome is None else outcome.train_accuracy,
        "train_accuracy_measure": None if outcome is None else outcome.train_accuracy_measure,
        "train_accuracy_running": None if outcome is None else outcome.train_accuracy_running,
        "train_accuracy_final": None if outcome is None else outcome.train_accuracy_final,
        # A trial stopped over the limit: the projection of where it would have ended, which
        # its constraint uses.
        "projected_train_accuracy": facts.projected_train_accuracy,
        "val_loss": None if outcome is None else outcome.val_loss,
        "train_loss": None if outcome is None else outcome.train_loss,
        "constraint": constraint,
        "feasible": stored_feasible(trial),
        "pruned_reason": None if facts.stop is None else facts.stop.reason,
        "validation": config.get("validation"),
        "seed": facts.seed,  # the trial's own: what a replay seeds it with
        "study_seed": config.get("seed"),
        "datetime_start": trial.datetime_start,
        "duration_s": duration,
    }


def best_frame(study: optuna.Study) -> pd.DataFrame:
    """The recommended trial: seed-confirmed where the study was, else the best feasible."""
    best = recommended_trial(study)
    if best is None:
        if not study.get_trials(deepcopy=False, states=FINISHED):
            raise ExportError(f"study {study.study_name!r} has no finished trial: run it first")
        raise ExportError(
            f"study {study.study_name!r} has no feasible complete trial: nothing to export "
            "(use --all to export every trial)"
        )
    row = trial_row(study, best)
    columns = BEST_COLUMNS + CONFIRM_COLUMNS
    confirmed = stored_recommendation(study)
    row |= confirm_cells(confirmed)
    tested = stored_test_result(study)
    if tested is not None:  # after `python -m search.evaluate`: beside the validation figure
        row |= {"test_accuracy": tested.test_accuracy, "test_loss": tested.test_loss}
        columns += TEST_COLUMNS
    return pd.DataFrame([row])[columns]


def confirm_cells(confirmed: Recommendation | None) -> dict[str, Any]:
    """The CONFIRM_COLUMNS of the best CSV: the recommendation's seed confirmation, or empty."""
    if confirmed is None:
        return dict.fromkeys(CONFIRM_COLUMNS)
    choice = confirmed.choice
    return {
        "confirmed": confirmed.confirmed,
        "confirm_seeds": choice.confirm_seeds,
        "val_accuracy_mean": choice.val_accuracy_mean,
        "val_accuracy_std": choice.val_accuracy_std,
        "train_accuracy_mean": choice.train_accuracy_mean,
        "feasible_fraction": choice.feasible_fraction,
    }


def all_frame(study: optuna.Study) -> pd.DataFrame:
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise ExportError(f"study {study.study_name!r} has no trials yet: run it first")
    return pd.DataFrame([trial_row(study, t) for t in trials])


def history_frame(study: optuna.Study) -> pd.DataFrame:
    """Every finished or running trial's epochs, one row each (long format)."""
    rows = [
        {
            "study": study.study_name,
            "trial": trial.number,
            "state": trial.state.name,
            "weight_decay": trial.params.get("weight_decay"),
            **epoch,
        }
        for trial in study.get_trials(deepcopy=False)
        for epoch in trial_history(trial)
    ]
    if not rows:
        raise ExportError(f"study {study.study_name!r} has no trained epoch yet: run it first")
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def is_formula(value: str) -> bool:
    """Whether a spreadsheet could take the text cell ``value`` for a formula.

    OWASP's list (``= + - @``, tab, carriage return) and what a spreadsheet skips before it:
    any leading whitespace or control character, and the fullwidth forms some of them read.
    A cell that starts with whitespace is prefixed whatever follows: which characters a
    spreadsheet skips there differs from one to the next.
    """
    first = value[:1]
    return first in FORMULA_STARTS or first.isspace() or (first != "" and not first.isprintable())


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a quote (OWASP's fix)."""

    def safe(value: Any) -> Any:
        if isinstance(value, str) and is_formula(value):
            return "'" + value
        return value

    return frame.map(safe).rename(columns=safe)
