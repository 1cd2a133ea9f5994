"""A trial's per-epoch record, stored compactly where Optuna's own views stay readable.

Every epoch's train/val loss and accuracy and its seconds are kept as one system attribute of
the trial, column by column (``{"epoch": [1, 2], "val_accuracy": [...], ...}``): user
attributes are what ``optuna trials``, ``trials_dataframe()`` and the dashboard print in full,
and a list of per-epoch dicts there made lines too long to read. The validation accuracy is
also each epoch's intermediate value (the pruner's input and the dashboard's curve); the note
on the trial's dashboard page shows the whole table. Everything that reads a trial's history
reads it through ``trial_history``, which also reads studies stored before this change.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.study.optuna_private import set_trial_system_attr

HISTORY_ATTR = "history"  # the trial system attribute (a user attribute in older studies)


def to_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per-epoch rows as columns: one list per metric, in epoch order."""
    return {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}


def to_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The inverse of ``to_columns``."""
    keys = list(columns)
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def store_history(trial: optuna.Trial, rows: list[dict[str, Any]]) -> None:
    """Store a running trial's per-epoch rows so far (``EpochMetrics.as_dict()`` each)."""
    set_trial_system_attr(trial, HISTORY_ATTR, to_columns(rows))


def trial_history(trial: FrozenTrial) -> list[dict[str, Any]]:
    """A trial's per-epoch rows, oldest first; [] if it recorded no epoch."""
    columns = trial.system_attrs.get(HISTORY_ATTR)
    if columns is not None:
        return to_rows(columns)
    return list(trial.user_attrs.get(HISTORY_ATTR) or [])  # studies from before
