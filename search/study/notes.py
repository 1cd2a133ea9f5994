"""What a trial and a study write for the dashboard: notes shown on top of their pages.

The user attributes hold the same numbers, but optuna-dashboard shows them as long lines of
JSON; a note reads at a glance.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna_dashboard import save_note

CONSTRAINT = "train_accuracy"  # the key of the trial's one constraint


def history_note(
    history: list[dict[str, Any]],
    weight_decay: float,
    constraint: float,
    limit: float,
    pruned_reason: str | None = None,
) -> str:
    """A trial's note for the dashboard: its outcome, its constraint and a per-epoch table.

    The trial's ``history`` (``search.study.history``) holds the same numbers; the dashboard
    shows this table on the trial's page.
    """
    outcome = f"pruned: {pruned_reason}" if pruned_reason else "complete"
    verdict = "feasible" if constraint <= 0 else "infeasible"
    lines = [
        f"**{outcome}**, weight_decay = {weight_decay:.3g}\n",
        f"Constraint `train_accuracy`: {constraint:+.4f} (final training accuracy minus the "
        f"limit {limit}; feasible when <= 0): **{verdict}**.\n",
        "| epoch | train loss | train accuracy | val loss | val accuracy | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in history:
        lines.append(
            f"| {row['epoch']} | {row['train_loss']:.4f} | {row['train_accuracy']:.4f} "
            f"| {row['val_loss']:.4f} | {row['val_accuracy']:.4f} | {row['seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def save_history_note(
    trial: optuna.Trial,
    history: list[dict[str, Any]],
    constraint: float,
    limit: float,
    pruned_reason: str | None = None,
) -> None:
    """Write ``history_note`` as the trial's note, shown at the top of its dashboard page."""
    weight_decay = trial.params["weight_decay"]
    save_note(trial, history_note(history, weight_decay, constraint, limit, pruned_reason))


def best_feasible_note(study: optuna.Study, summary: dict[str, Any]) -> str:
    limit = study.user_attrs.get("config", {}).get("max_train_acc")
    return (
        f"## Best feasible trial: #{summary['number']}\n\n"
        f"weight_decay = {summary['weight_decay']:.3g}, "
        f"validation accuracy = {summary['val_accuracy']:.4f}, "
        f"training accuracy = {summary['train_accuracy']:.4f} (limit {limit}).\n\n"
        "The Best Trial card does not know about the constraint; this note does. "
        "A trial's `feasible` user attribute and its constraint value "
        "(training accuracy minus the limit, feasible when <= 0) are on its page."
    )
