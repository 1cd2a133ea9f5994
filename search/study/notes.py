"""What a trial and a study show on top of their dashboard pages, rendered from the record.

The user attributes hold the same numbers, but optuna-dashboard shows them as long lines of
JSON; a note reads at a glance. Notes are drawn from the record (``search.study.record``)
each time it changes, by the one writer of each, so a note never says more than the facts.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna_dashboard import save_note

from search.config import MEASURE_NAMES, StudyConfig, examples_noun
from search.study.record import (
    BestTrial,
    Recommendation,
    TestResult,
    record_best_feasible,
    recorded_settings,
    stored_best,
    stored_recommendation,
    stored_test_result,
)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def history_note(
    history: list[dict[str, Any]],
    weight_decay: float,
    constraint: float,
    limit: float,
    pruned_reason: str | None = None,
    measure: str = "running",
    projected: bool = False,
) -> str:
    """A trial's note for the dashboard: its outcome, its constraint and a per-epoch table.

    The trial's ``history`` (``search.study.history``) holds the same numbers; the dashboard
    shows this table on the trial's page. Both training accuracies are in it: the running one
    (each batch scored before its update, the seed's) and the final weights' over the training
    split; the constraint reads ``measure``, at the last epoch or, for a trial stopped over
    the limit, at its projection to the last epoch.
    """
    outcome = f"pruned: {pruned_reason}" if pruned_reason else "complete"
    verdict = "feasible" if constraint <= 0 else "infeasible"
    at = "projected to the last epoch" if projected else "at its last epoch"
    lines = [
        f"**{outcome}**, weight_decay = {weight_decay:.3g}\n",
        f"Constraint `train_accuracy`: {constraint:+.4f} ({MEASURE_NAMES[measure]} {at} "
        f"minus the limit {limit}; feasible when <= 0): **{verdict}**.\n",
        "| epoch | train loss | train accuracy (running) | train accuracy (final weights) "
        "| val loss | val accuracy | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in history:
        final = row.get("train_accuracy_final")
        final_text = "" if final is None or final != final else f"{final:.4f}"  # NaN: unmeasured
        lines.append(
            f"| {row['epoch']} | {row['train_loss']:.4f} | {row['train_accuracy']:.4f} "
            f"| {final_text} | {row['val_loss']:.4f} | {row['val_accuracy']:.4f} "
            f"| {row['seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def save_history_note(
    trial: optuna.Trial,
    history: list[dict[str, Any]],
    constraint: float,
    config: StudyConfig,
    pruned_reason: str | None = None,
    projected: bool = False,
) -> None:
    """Write ``history_note`` as the trial's note, shown at the top of its dashboard page."""
    weight_decay = trial.params["weight_decay"]
    note = history_note(
        history,
        weight_decay,
        constraint,
        config.max_train_acc,
        pruned_reason,
        config.train_accuracy,
        projected,
    )
    save_note(trial, note)


def best_feasible_note(best: BestTrial, limit: float | None, measure: str = "running") -> str:
    return (
        f"## Best feasible trial: #{best.number}\n\n"
        f"weight_decay = {best.weight_decay:.3g}, "
        f"validation accuracy = {best.val_accuracy:.4f}, "
        f"{MEASURE_NAMES[measure]} = {best.train_accuracy:.4f} (limit {limit}).\n\n"
        "The Best Trial card does not know about the constraint; this note does. "
        "A trial's `feasible` user attribute and its constraint value "
        f"({MEASURE_NAMES[measure]} minus the limit, feasible when <= 0) are on its page."
    )


def how_it_held(recommendation: Recommendation) -> str:
    """The recommended weight decay, its verdict and its means over the further seeds."""
    choice = recommendation.choice
    seeds = choice.confirm_seeds
    verdict = (
        f"feasible in {recommendation.held} of {seeds} further seeds"
        if recommendation.confirmed
        else "UNCONFIRMED: no candidate was feasible in "
        f"{recommendation.min_feasible_fraction:.0%} of {seeds} further seeds; the most often "
        f"feasible one held in {recommendation.held}"
    )
    return (
        f"weight_decay={choice.weight_decay:.4g}, {verdict}; val_accuracy "
        f"{choice.val_accuracy_mean:.4f} +- {choice.val_accuracy_std:.4f}, "
        f"{recommendation.measure} train_accuracy {choice.train_accuracy_mean:.4f} (means over "
        "those seeds)"
    )


def describe_recommendation(
    recommendation: Recommendation, trained_now: bool | None = None
) -> str:
    """The recommendation in a few lines: what to ship, how it held, what confirming cost.

    ``trained_now``: True for the run that trained the confirmation runs, the only one that
    says "trained now"; False for a run that reused them, told which confirmation they come
    from and what they cost then; None for a reader of the study (its note).
    """
    r = recommendation
    runs = plural(r.confirm_runs, "run")
    after = plural(r.confirmed_after or 0, "trial")
    when = "" if r.confirmed_at is None else f"the confirmation of {r.confirmed_at} after {after}"
    if r.confirm_runs == 0:
        cost = "every run reused from an earlier confirmation"
    elif trained_now:
        cost = f"{runs} trained now in {r.confirm_seconds:.0f}s"
    elif when and trained_now is False:
        cost = f"{runs} reused from {when}, which trained them in {r.confirm_seconds:.0f}s"
    elif when:
        cost = f"{runs} trained in {r.confirm_seconds:.0f}s by {when}"
    else:
        cost = f"{runs}, trained in {r.confirm_seconds:.0f}s when it was confirmed"
    return (
        f"recommended trial #{r.trial}: {how_it_held(r)}\n"
        f"confirmation: {plural(len(r.candidates), 'candidate')} x "
        f"{plural(r.choice.confirm_seeds, 'seed')} in study {r.confirm_study!r}, {cost}, not "
        "counted in --trials"
    )


def evaluation_note(result: TestResult, task: str | None) -> str:
    caveat = (
        " The trial was selected on this same test set (`--validation test`), so this is "
        "no unbiased estimate."
        if result.selected_on_test
        else " This study used the test set for nothing else."
    )
    return (
        f"**Test set**, trial #{result.trial} ({result.test_images:,} {test_split_words(task)}, "
        f"`python -m search.evaluate`): accuracy = {result.test_accuracy:.4f}, "
        f"loss = {result.test_loss:.4f}.{caveat}"
    )


def test_split_words(task: str | None) -> str:
    """MNIST's test split is the official one; a user Task's is its own."""
    noun = examples_noun(task)
    return f"official MNIST test {noun}" if noun == "images" else f"test {noun}"


def study_note(study: optuna.Study) -> str | None:
    """The note on top of the study's dashboard page: best trial, recommendation, test figure;
    None before any trial is feasible."""
    best = stored_best(study)
    if best is None:
        return None
    settings = recorded_settings(study)
    note = best_feasible_note(
        best, settings.get("max_train_acc"), settings.get("train_accuracy", "running")
    )
    recommendation = stored_recommendation(study)
    if recommendation is not None:
        runs = ", ".join(
            f"#{c.trial} wd={c.weight_decay:.3g}: feasible {c.feasible_fraction:.0%}, "
            f"val {c.val_accuracy_mean:.4f}"
            for c in recommendation.candidates
        )
        note += (
            f"\n\n## Recommended: trial #{recommendation.trial}\n\n"
            + describe_recommendation(recommendation).replace("\n", "\n\n")
            + f"\n\nCandidates: {runs}. Their runs are the trials of study "
            f"`{recommendation.confirm_study}`."
        )
    tested = stored_test_result(study)
    if tested is not None:
        note += "\n\n" + evaluation_note(tested, settings.get("task"))
    return note


def save_study_note(study: optuna.Study) -> None:
    """Draw the study's note from its record again: the one writer of the study's note."""
    note = study_note(study)
    if note is not None:
        save_note(study, note)


def record_best_feasible_and_note(study: optuna.Study) -> None:
    """Store the best feasible trial if it changed, and draw the study's note again."""
    if record_best_feasible(study):
        save_study_note(study)
