"""Notes rendered from the record: what the run that confirmed says, what a later reader sees,
and the study's note as the facts it is drawn from appear."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial
from optuna_dashboard import get_note

from search.config import MIN_FEASIBLE_FRACTION, StudyConfig
from search.study.notes import (
    describe_recommendation,
    history_note,
    record_best_feasible_and_note,
    study_note,
)
from search.study.record import (
    Candidate,
    Recommendation,
    TestResult,
    record_config,
    record_recommendation,
    record_test_result,
    stored_recommendation,
)

SPACE = {"weight_decay": FloatDistribution(1e-6, 1e-1, log=True)}
LIMIT = 0.95


def trial(weight_decay: float, val: float, train: float):
    return create_trial(
        value=val,
        params={"weight_decay": weight_decay},
        distributions=SPACE,
        user_attrs={"val_accuracy": val, "train_accuracy": train},
        constraints={"train_accuracy": train - LIMIT},
    )


def study_of(*trials) -> optuna.Study:
    study = optuna.create_study(study_name="notes", direction="maximize")
    record_config(study, StudyConfig(max_train_acc=LIMIT))
    for t in trials:
        study.add_trial(t)
    return study


def recommendation(
    runs: int = 8, seconds: float = 41.0, best: int = 0, at: str | None = None
) -> Recommendation:
    choice = Candidate(1, 2e-3, 4, 0.9493, 0.0012, 0.9411, 1.0)
    other = Candidate(0, 1e-3, 4, 0.9512, 0.0009, 0.9502, 0.25)
    return Recommendation(
        choice=choice,
        confirmed=True,
        min_feasible_fraction=MIN_FEASIBLE_FRACTION,
        best_trial=best,
        candidates=(other, choice),
        confirm_study="notes-confirm",
        confirm_runs=runs,
        confirm_seconds=seconds,
        confirmed_at=at,
        confirmed_after=None if at is None else 50,
    )


def test_describe_recommendation_says_trained_now_only_for_the_run_that_trained() -> None:
    now = describe_recommendation(recommendation(), trained_now=True)
    assert "8 runs trained now in 41s" in now
    later = describe_recommendation(recommendation())
    assert "trained now" not in later
    assert "8 runs, trained in 41s when it was confirmed" in later
    for text in (now, later):
        assert text.startswith("recommended trial #1: weight_decay=0.002, feasible in 4 of 4")
        assert "2 candidates x 4 seeds in study 'notes-confirm'" in text


def test_describe_recommendation_names_the_confirmation_a_resume_reused() -> None:
    rec = recommendation(at="2026-12-01 14:39 UTC")
    later = describe_recommendation(rec, trained_now=False)
    assert "trained now" not in later
    assert (
        "8 runs reused from the confirmation of 2026-12-01 14:39 UTC after 50 trials, which "
        "trained them in 41s" in later
    )
    read = describe_recommendation(rec)  # the study's note: no run is speaking
    assert "reused" not in read and "trained now" not in read
    assert "8 runs trained in 41s by the confirmation of 2026-12-01 14:39 UTC after 50" in read
    assert "8 runs trained now in 41s" in describe_recommendation(rec, trained_now=True)


@pytest.mark.parametrize("trained_now", [True, False])
def test_describe_recommendation_with_every_run_reused_never_says_trained_now(
    trained_now: bool,
) -> None:
    text = describe_recommendation(recommendation(runs=0, seconds=0.0), trained_now=trained_now)
    assert "every run reused from an earlier confirmation" in text
    assert "trained now" not in text


def test_describe_recommendation_read_back_from_the_study_never_says_trained_now() -> None:
    study = study_of(trial(1e-3, 0.952, 0.9412), trial(2e-3, 0.95, 0.94))
    record_best_feasible_and_note(study)
    record_recommendation(study, recommendation())
    stored = stored_recommendation(study)
    assert stored is not None
    assert "trained now" not in describe_recommendation(stored)
    note = study_note(study)
    assert note is not None and "trained now" not in note
    assert "8 runs, trained in 41s when it was confirmed" in note


def test_study_note_is_none_before_any_feasible_trial() -> None:
    study = study_of()
    assert study_note(study) is None
    study.add_trial(trial(1e-6, 0.98, 0.99))  # infeasible
    record_best_feasible_and_note(study)
    assert study_note(study) is None
    assert get_note(study) == ""  # no note was saved


def test_study_note_holds_the_best_trial_the_recommendation_and_the_test_figure() -> None:
    study = study_of(trial(1e-3, 0.952, 0.9412), trial(2e-3, 0.95, 0.94))
    record_best_feasible_and_note(study)
    first = study_note(study)
    assert first is not None and "Best feasible trial: #0" in first
    assert "training accuracy = 0.9412 (limit 0.95)" in first
    assert "Recommended" not in first and "Test set" not in first
    assert get_note(study) == first  # the note the dashboard shows
    record_recommendation(study, recommendation())
    record_test_result(study, TestResult(1, 2e-3, 0.95, 0.9712, 0.0931, 10_000, False))
    note = study_note(study)
    assert note is not None and note.startswith(first)
    assert "## Recommended: trial #1" in note
    assert "#0 wd=0.001: feasible 25%, val 0.9512" in note
    assert "#1 wd=0.002: feasible 100%, val 0.9493" in note
    assert "**Test set**, trial #1 (10,000 official MNIST test images" in note
    assert "accuracy = 0.9712, loss = 0.0931" in note


def test_study_note_leaves_out_stale_facts_after_a_better_trial() -> None:
    study = study_of(trial(1e-3, 0.952, 0.9412), trial(2e-3, 0.95, 0.94))
    record_best_feasible_and_note(study)
    record_recommendation(study, recommendation())
    record_test_result(study, TestResult(1, 2e-3, 0.95, 0.9712, 0.0931, 10_000, False))
    study.add_trial(trial(3e-3, 0.955, 0.93))  # a resume found a better feasible trial
    record_best_feasible_and_note(study)
    note = study_note(study)
    assert note is not None and "Best feasible trial: #2" in note
    assert "Recommended" not in note and "Test set" not in note
    assert get_note(study) == note


def test_history_note_gives_the_outcome_the_verdict_and_one_row_per_epoch() -> None:
    rows = [
        {
            "epoch": e,
            "train_loss": 0.5 / e,
            "train_accuracy": 0.9 + e / 100,
            "val_loss": 0.6 / e,
            "val_accuracy": 0.89 + e / 100,
            "seconds": 1.25,
            "train_accuracy_final": 0.905 + e / 100,
        }
        for e in (1, 2, 3)
    ]
    complete = history_note(rows, 1e-3, constraint=-0.02, limit=LIMIT)
    assert complete.startswith("**complete**, weight_decay = 0.001")
    assert "-0.0200" in complete and "**feasible**" in complete
    assert "(running training accuracy at its last epoch minus the limit" in complete
    assert "| 3 | 0.1667 | 0.9300 | 0.9350 | 0.2000 | 0.9200 | 1.25 |" in complete
    # A trial stopped over the limit: its constraint is a projection, and says so.
    projected = history_note(rows[:1], 1e-5, 0.01, LIMIT, "infeasible", "final", projected=True)
    assert "(final weights' training accuracy projected to the last epoch minus" in projected
    del rows[0]["train_accuracy_final"]  # a study from before both were measured
    assert "| 1 | 0.5000 | 0.9100 |  | 0.6000 |" in history_note(rows[:1], 1e-3, -0.02, LIMIT)
    assert len([line for line in complete.splitlines() if line.startswith("| ")]) == 4
    pruned = history_note(rows[:1], 1e-5, constraint=0.01, limit=LIMIT, pruned_reason="over")
    assert pruned.startswith("**pruned: over**") and "**infeasible**" in pruned
