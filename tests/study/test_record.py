"""The study record: each type written to a real SQLite study and read back, what makes a stored
fact stale, and the stored config of new and older studies."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.config import DEFAULTS, MIN_FEASIBLE_FRACTION, StudyConfig
from search.study.record import (
    BestTrial,
    Candidate,
    Counts,
    Recommendation,
    Stop,
    TestResult,
    TrialOutcome,
    best_feasible_trial,
    finished_trials,
    is_feasible,
    recommended_trial,
    record_best_feasible,
    record_config,
    record_recommendation,
    record_run_settings,
    record_test_result,
    stored_best,
    stored_config,
    stored_recommendation,
    stored_settings,
    stored_test_result,
    trial_kind,
    violation,
)

SPACE = {"weight_decay": FloatDistribution(1e-6, 1e-1, log=True)}
LIMIT = 0.95


def trial(weight_decay: float, val: float, train: float, state=TrialState.COMPLETE):
    """A finished trial as the objective leaves it: value, metrics and its one constraint."""
    return create_trial(
        state=state,
        value=val if state == TrialState.COMPLETE else None,
        params={"weight_decay": weight_decay},
        distributions=SPACE,
        user_attrs={"val_accuracy": val, "train_accuracy": train},
        constraints={"train_accuracy": train - LIMIT},
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'record.db'}"


def sqlite_study(url: str, *trials) -> optuna.Study:
    study = optuna.create_study(storage=url, study_name="rec", direction="maximize")
    for t in trials:
        study.add_trial(t)
    return study


def reopened(study: optuna.Study, url: str) -> optuna.Study:
    """The same study loaded again from its database: what another process reads."""
    return optuna.load_study(study_name=study.study_name, storage=url)


def candidate(number: int, weight_decay: float, val: float, fraction: float) -> Candidate:
    return Candidate(number, weight_decay, 4, val, 0.0015, 0.941, fraction)


def recommendation(choice: Candidate, best: int, *others: Candidate) -> Recommendation:
    return Recommendation(
        choice=choice,
        confirmed=choice.holds,
        min_feasible_fraction=MIN_FEASIBLE_FRACTION,
        best_trial=best,
        candidates=(choice, *others),
        confirm_study="rec-confirm",
        confirm_runs=8,
        confirm_seconds=41.0,
    )


# --- trials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraints", "expected_violation", "feasible"),
    [
        ({"train_accuracy": -0.01}, -0.01, True),
        ({"train_accuracy": 0.0}, 0.0, True),  # at the limit is within it
        ({"train_accuracy": 0.02}, 0.02, False),
        ({"a": -0.5, "b": 0.1}, 0.1, False),  # the largest one decides
        (None, None, True),  # no constraint at all: nothing to violate
    ],
)
def test_violation_is_the_largest_constraint_and_feasible_at_or_below_zero(
    constraints, expected_violation, feasible
) -> None:
    frozen = create_trial(
        value=0.9,
        params={"weight_decay": 1e-3},
        distributions=SPACE,
        constraints=constraints,
    )
    assert violation(frozen) == expected_violation
    assert is_feasible(frozen) is feasible


def test_trial_outcome_round_trips_through_a_real_trial(url: str) -> None:
    study = sqlite_study(url)
    outcome = TrialOutcome(
        train_loss=0.21,
        train_accuracy=0.9412,
        val_loss=0.25,
        val_accuracy=0.9333,
        feasible=True,
        epochs_run=3,
    )
    asked = study.ask(SPACE)
    outcome.write(asked)
    study.tell(asked, outcome.val_accuracy)
    assert TrialOutcome.read(reopened(study, url).trials[0]) == outcome


def test_trial_outcome_read_is_none_for_a_trial_that_stored_none(url: str) -> None:
    study = sqlite_study(url)
    failed = study.ask(SPACE)
    study.tell(failed, state=TrialState.FAIL)
    study.ask(SPACE)  # still running
    assert [TrialOutcome.read(t) for t in reopened(study, url).trials] == [None, None]


def test_finished_trials_are_the_complete_and_the_pruned_ones(url: str) -> None:
    study = sqlite_study(
        url,
        trial(1e-3, 0.95, 0.94),
        trial(2e-3, 0.90, 0.93, state=TrialState.PRUNED),
        create_trial(state=TrialState.FAIL, params={"weight_decay": 3e-3}, distributions=SPACE),
    )
    study.ask(SPACE)  # running
    assert [t.number for t in finished_trials(reopened(study, url))] == [0, 1]


def test_best_feasible_trial_skips_a_better_infeasible_trial(url: str) -> None:
    study = sqlite_study(url)
    assert best_feasible_trial(study) is None  # no trials
    study.add_trial(trial(1e-5, 0.98, 0.99))  # best value, over the limit
    assert best_feasible_trial(study) is None  # nothing feasible yet
    study.add_trial(trial(1e-3, 0.95, 0.94))
    study.add_trial(trial(1e-2, 0.93, 0.92))
    best = best_feasible_trial(reopened(study, url))
    assert best is not None and best.number == 1


# --- the best feasible trial --------------------------------------------------------------


def test_best_trial_round_trips_and_changes_only_with_a_better_feasible_trial(url: str) -> None:
    study = sqlite_study(url, trial(1e-5, 0.98, 0.99))
    assert record_best_feasible(study) is False and stored_best(study) is None
    study.add_trial(trial(1e-3, 0.95, 0.94))
    assert record_best_feasible(study) is True
    assert stored_best(reopened(study, url)) == BestTrial(1, 1e-3, 0.95, 0.94)
    assert record_best_feasible(study) is False  # the same best: nothing written
    study.add_trial(trial(2e-6, 0.99, 0.995))  # better but infeasible
    assert record_best_feasible(study) is False
    study.add_trial(trial(8e-4, 0.952, 0.945))
    assert record_best_feasible(study) is True
    assert stored_best(reopened(study, url)) == BestTrial(3, 8e-4, 0.952, 0.945)


# --- the stored config --------------------------------------------------------------------


def test_stored_config_is_none_for_a_study_that_stored_no_config(url: str) -> None:
    study = sqlite_study(url)
    assert stored_config(study) is None
    record_run_settings(study, DEFAULTS)  # run settings alone are no config
    assert stored_config(reopened(study, url)) is None


def test_stored_config_returns_the_recorded_fields_and_run_settings(url: str) -> None:
    study = sqlite_study(url)
    created = StudyConfig(
        study_name="rec",
        epochs=3,
        batch_size=32,
        lr=3e-4,
        optimizer="sgd",
        decay_biases=False,
        wd_low=1e-4,
        wd_high=1e-2,
        max_train_acc=0.9,
        validation="test",
        subset=500,
        seed=7,
        trials=5,
    )
    assert record_config(study, created) is True
    assert record_config(study, created.replace(epochs=9)) is False  # the first one stays
    record_run_settings(study, created.replace(trials=12, sampler="random", pruner="none"))
    read = stored_config(reopened(study, url), storage=url)
    assert read == created.replace(storage=url, trials=12, sampler="random", pruner="none")
    assert stored_settings(study)["trials"] == 12 and stored_settings(study)["epochs"] == 3


def test_stored_config_gives_defaults_for_fields_an_older_study_lacks(url: str) -> None:
    study = sqlite_study(url)
    older = {"epochs": 4, "batch_size": 64, "lr": 1e-3, "wd_low": 1e-5, "wd_high": 1e-1}
    older |= {"max_train_acc": 0.95, "subset": None, "seed": 3, "retired_field": "ignored"}
    study.set_user_attr("config", older)  # no validation, optimizer, decay_biases, task
    read = stored_config(reopened(study, url))
    assert read is not None
    assert (read.epochs, read.wd_low, read.seed) == (4, 1e-5, 3)
    assert read.validation == DEFAULTS.validation == "holdout"
    assert read.optimizer == DEFAULTS.optimizer == "adam"
    assert read.decay_biases is DEFAULTS.decay_biases
    assert read.task == DEFAULTS.task and read.trials == DEFAULTS.trials
    assert read.study_name == "rec"


# --- the recommendation -------------------------------------------------------------------


def test_recommendation_round_trips_through_a_real_study(url: str) -> None:
    study = sqlite_study(url, trial(1e-3, 0.952, 0.949), trial(2e-3, 0.95, 0.94))
    held = candidate(1, 2e-3, 0.9495, 1.0)
    lucky = candidate(0, 1e-3, 0.951, 0.25)
    stored = recommendation(held, 0, lucky)
    record_recommendation(study, stored)
    again = reopened(study, url)
    assert stored_recommendation(again) == stored
    assert recommended_trial(again).number == 1  # the confirmed one, not the best trial
    assert best_feasible_trial(again).number == 0


def test_stored_recommendation_is_stale_once_a_better_trial_appears(url: str) -> None:
    study = sqlite_study(url, trial(1e-3, 0.952, 0.949))
    record_recommendation(study, recommendation(candidate(0, 1e-3, 0.951, 1.0), 0))
    assert stored_recommendation(study) is not None
    study.add_trial(trial(3e-3, 0.955, 0.94))  # a resume found a better feasible trial
    again = reopened(study, url)
    assert stored_recommendation(again) is None
    assert recommended_trial(again).number == 1  # the best feasible trial, unconfirmed


LEGACY = {
    "trial": 4,
    "weight_decay": 3.2e-3,
    "confirm_seeds": 4,
    "val_accuracy_mean": 0.951,
    "val_accuracy_std": 0.002,
    "train_accuracy_mean": 0.948,
    "feasible_fraction": 1.0,
    "confirmed": True,
    "min_feasible_fraction": 0.8,
    "best_trial": 4,
    "candidates": [
        {
            "trial": 4,
            "weight_decay": 3.2e-3,
            "confirm_seeds": 4,
            "val_accuracy_mean": 0.951,
            "val_accuracy_std": 0.002,
            "train_accuracy_mean": 0.948,
            "feasible_fraction": 1.0,
        },
        {
            "trial": 6,
            "weight_decay": 4.1e-3,
            "confirm_seeds": 4,
            "val_accuracy_mean": 0.949,
            "val_accuracy_std": 0.001,
            "train_accuracy_mean": 0.944,
            "feasible_fraction": 0.75,
        },
    ],
    "confirm_study": "mnist-weight-decay-confirm",
    "confirm_runs": 8,
    "confirm_seconds": 41.5,
}


def test_recommendation_from_attr_reads_the_flat_format_stored_before_the_type() -> None:
    read = Recommendation.from_attr(LEGACY)
    assert read.trial == 4 and read.choice == Candidate(4, 3.2e-3, 4, 0.951, 0.002, 0.948, 1.0)
    assert read.confirmed is True and read.best_trial == 4 and read.held == 4
    assert [c.trial for c in read.candidates] == [4, 6]
    assert read.candidates[1].holds is False  # 3 of 4 is under 80%
    assert (read.confirm_study, read.confirm_runs, read.confirm_seconds) == (
        "mnist-weight-decay-confirm",
        8,
        41.5,
    )
    # Written back in the very same format, with the runs' spread it lacked at its default.
    candidates = [{**c, "train_accuracy_std": 0.0} for c in LEGACY["candidates"]]
    assert read.as_attr() == {**LEGACY, "train_accuracy_std": 0.0, "candidates": candidates}


def test_recommendation_from_attr_defaults_what_the_oldest_format_lacks() -> None:
    oldest = {
        k: v
        for k, v in LEGACY.items()
        if k not in ("min_feasible_fraction", "best_trial", "candidates")
    }
    read = Recommendation.from_attr(oldest)
    assert read.min_feasible_fraction == MIN_FEASIBLE_FRACTION
    assert read.best_trial is None and read.candidates == ()


def test_stored_recommendation_reads_a_legacy_study_attribute(url: str) -> None:
    trials = [trial(w, 0.94 + i / 1000, 0.93) for i, w in enumerate([1e-2, 9e-3, 8e-3, 7e-3])]
    study = sqlite_study(url, *trials, trial(3.2e-3, 0.952, 0.949))
    study.set_user_attr("recommendation", LEGACY)  # as a study stored it before the type
    assert stored_recommendation(reopened(study, url)) == Recommendation.from_attr(LEGACY)


def test_candidate_from_runs_counts_a_diverged_run_as_infeasible() -> None:
    runs = [(0.94, 0.950), (0.96, 0.952)]  # (train, val) of the 2 of 4 seeds that finished
    two_of_four = Candidate.from_runs(3, 5e-3, runs, seeds=4, limit=LIMIT)
    assert two_of_four.feasible_fraction == 0.25 and two_of_four.holds is False
    assert two_of_four.val_accuracy_mean == pytest.approx(0.951)
    assert two_of_four.train_accuracy_mean == pytest.approx(0.95)
    assert two_of_four.val_accuracy_std == pytest.approx(0.0014142, rel=1e-4)
    four = Candidate.from_runs(3, 5e-3, [(0.94, 0.95)] * 4 + [(0.96, 0.95)], seeds=5, limit=LIMIT)
    assert four.feasible_fraction == MIN_FEASIBLE_FRACTION and four.holds is True
    assert four.val_accuracy_std == 0.0


# --- the test-set result ------------------------------------------------------------------


def test_test_result_round_trips_for_the_recommended_trial(url: str) -> None:
    study = sqlite_study(url, trial(1e-3, 0.952, 0.949))
    result = TestResult(0, 1e-3, 0.952, 0.9712, 0.093, 10_000, selected_on_test=False)
    record_test_result(study, result)
    assert stored_test_result(reopened(study, url)) == result


def test_stored_test_result_is_none_when_it_belongs_to_another_trial(url: str) -> None:
    study = sqlite_study(url, trial(1e-3, 0.952, 0.949))
    record_test_result(study, TestResult(0, 1e-3, 0.952, 0.9712, 0.093, 10_000, False))
    study.add_trial(trial(3e-3, 0.955, 0.94))  # now trial 1 is recommended
    assert stored_test_result(reopened(study, url)) is None


def test_stored_test_result_follows_the_confirmed_recommendation(url: str) -> None:
    study = sqlite_study(url, trial(1e-3, 0.952, 0.949), trial(2e-3, 0.95, 0.94))
    record_recommendation(study, recommendation(candidate(1, 2e-3, 0.95, 1.0), 0))
    of_best = TestResult(0, 1e-3, 0.952, 0.97, 0.09, 10_000, False)
    record_test_result(study, of_best)
    assert stored_test_result(study) is None  # trial 0 is best, but 1 is recommended
    of_recommended = TestResult(1, 2e-3, 0.95, 0.968, 0.1, 10_000, True)
    record_test_result(study, of_recommended)
    assert stored_test_result(reopened(study, url)) == of_recommended


def test_counts_put_each_trial_in_exactly_one_kind() -> None:
    def made(state: TrialState, constraint: float | None, reason: str | None = None):
        return create_trial(
            state=state,
            value=0.9 if state == TrialState.COMPLETE else None,
            params={} if state == TrialState.RUNNING else {"weight_decay": 1e-3},
            distributions={} if state == TrialState.RUNNING else SPACE,
            intermediate_values={} if state == TrialState.RUNNING else {1: 0.9},
            user_attrs={} if reason is None else {"pruned_reason": reason},
            system_attrs={} if constraint is None else {"constraints": [constraint]},
        )

    study = optuna.create_study(direction="maximize")
    kinds = {
        "feasible": made(TrialState.COMPLETE, -0.01),
        "infeasible": made(TrialState.COMPLETE, 0.01),
        # Stopped over the limit: infeasible for good, counted once, not also "infeasible".
        "over_limit": made(TrialState.PRUNED, 0.04, "infeasible: train accuracy 0.99 over"),
        # Stopped for its score while under the limit: its feasibility is unknown.
        "pruned": made(TrialState.PRUNED, -0.02, "pruned by the median pruner at epoch 3"),
        "failed": made(TrialState.FAIL, None),
        "running": made(TrialState.RUNNING, None),
    }
    for trial in kinds.values():
        study.add_trial(trial)
    trials = study.get_trials(deepcopy=False)
    assert [trial_kind(t) for t in trials] == list(kinds)
    counts = Counts.of(trials)
    assert counts == Counts(1, 1, 1, 1, 1, 1) and counts.total == len(trials)
    assert counts.finished == 4
    assert counts.text() == (
        "1 feasible, 1 infeasible, 1 over the limit, 1 pruned, 1 running, 1 failed"
    )


def test_a_trial_line_names_the_constraints_measure_and_gives_the_other() -> None:
    both = {"train_accuracy_running": 0.9489, "train_accuracy_final": 0.9531}
    running = TrialOutcome(
        0.2, 0.9489, 0.3, 0.95, True, 10, **both, train_accuracy_measure="running"
    )
    final = TrialOutcome(0.2, 0.9531, 0.3, 0.95, False, 10, **both, train_accuracy_measure="final")
    assert running.train_text() == "train_acc=0.9489 (running; final 0.9531)"
    assert final.train_text() == "train_acc=0.9531 (final; running 0.9489)"
    # A study from before both were measured shows the one it has, as it always did.
    assert TrialOutcome(0.2, 0.9489, 0.3, 0.95, True, 10).train_text() == "train_acc=0.9489"


def test_a_final_measure_recommendation_says_so_and_reads_back() -> None:
    choice = Candidate(4, 3.2e-3, 4, 0.951, 0.002, 0.948, 1.0, 0.001)
    made = Recommendation(choice, True, 0.8, 4, (choice,), "s-confirm", 4, 9.0, measure="final")
    assert made.as_attr()["measure"] == "final"
    assert Recommendation.from_attr(made.as_attr()) == made
    running = Recommendation(choice, True, 0.8, 4, (choice,), "s-confirm", 4, 9.0)
    assert "measure" not in running.as_attr()  # the default, stored as before it existed
    assert Recommendation.from_attr(running.as_attr()).measure == "running"


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("infeasible: running train accuracy 0.9612 over the limit 0.95 at epoch 3", "over_limit"),
        ("diverged: training loss is nan in epoch 2", "diverged"),
        ("pruned by the median pruner at epoch 4", "pruned"),
    ],
)
def test_a_stop_stored_before_its_kind_reads_its_kind_off_its_sentence(
    reason: str, kind: str
) -> None:
    older = create_trial(
        state=TrialState.PRUNED,
        params={"weight_decay": 1e-3},
        distributions=SPACE,
        intermediate_values={1: 0.9},
        user_attrs={"pruned_reason": reason},
    )
    assert Stop.read(older) == Stop(kind, reason)  # type: ignore[arg-type]


def test_a_stored_kind_wins_over_the_sentence() -> None:
    # The kind is the fact; the sentence is only shown (a pruner's wording could start with
    # any word).
    study = optuna.create_study(direction="maximize")
    trial = study.ask(SPACE)
    Stop("pruned", "infeasible-looking words from a pruner").write(trial)
    study.tell(trial, state=TrialState.PRUNED)
    (frozen,) = study.trials
    assert Stop.read(frozen) == Stop("pruned", "infeasible-looking words from a pruner")
    assert trial_kind(frozen) == "pruned"
