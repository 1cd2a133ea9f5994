"""Seed confirmation: which candidates are confirmed, which is recommended, and a real run
that records its confirmation runs beside the study and reuses them when run again."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search import export, run
from search.config import MAX_ROUNDS, StudyConfig
from search.data.splits import Splits
from search.engine.choose import candidates, choose, confirmation_rounds
from search.engine.confirm import confirm, confirmation_seed, start_run, train_runs
from search.reporting.tables import CONFIRM_COLUMNS
from search.study.record import (
    Candidate,
    confirm_study_name,
    recommended_trial,
    stored_recommendation,
)
from search.training.seeds import trial_seed
from tests.helpers import run_cli


def candidate(trial: int, val: float, feasible_fraction: float) -> Candidate:
    return Candidate(trial, 5e-3, 4, val, 0.001, 0.949, feasible_fraction)


def test_choose_rejects_a_candidate_feasible_by_one_seeds_luck() -> None:
    lucky = candidate(7, val=0.951, feasible_fraction=0.25)  # on the edge: 1 of 4 seeds held
    solid = candidate(9, val=0.947, feasible_fraction=1.0)
    assert choose([lucky, solid], 0.95) == (solid, True)


def test_choose_takes_the_best_mean_among_those_that_hold() -> None:
    held = [candidate(1, 0.946, 0.8), candidate(2, 0.948, 1.0), candidate(3, 0.950, 0.75)]
    assert choose(held, 0.95) == (held[1], True)


def test_choose_with_no_candidate_that_holds_says_unconfirmed() -> None:
    weak = [candidate(1, 0.950, 0.25), candidate(2, 0.949, 0.5)]
    assert choose(weak, 0.95) == (weak[1], False)


def searched(results: list[tuple[float, float, float]]) -> optuna.Study:
    """A study of complete trials with these (weight decay, value, constraint) results."""
    study = optuna.create_study(direction="maximize")
    for weight_decay, value, violation in results:
        study.add_trial(
            create_trial(
                params={"weight_decay": weight_decay},
                distributions={"weight_decay": FloatDistribution(1e-6, 1e-1, log=True)},
                value=value,
                system_attrs={"constraints": [violation]},
            )
        )
    return study


def test_candidates_are_the_best_feasible_trials_spread_from_the_edge_inwards() -> None:
    study = searched(
        [
            (4.0e-3, 0.960, 0.02),  # infeasible: never a candidate
            (5.0e-3, 0.950, -0.001),
            (5.03e-3, 0.949, -0.002),  # 0.6% from 5.0e-3: too close to confirm both
            (6.0e-3, 0.945, -0.005),
            (7.0e-3, 0.940, -0.010),
            (9.0e-3, 0.930, -0.020),
        ]
    )
    chosen = [t.params["weight_decay"] for t in candidates(study, 3)]
    assert chosen[0] in (5.0e-3, 5.03e-3) and chosen[1:] == [6.0e-3, 7.0e-3]


def test_candidates_far_below_the_best_wait_for_a_second_round() -> None:
    feasible = -0.01
    study = searched([(w, v, feasible) for w, v in [(5e-3, 0.95), (6e-3, 0.947), (7e-3, 0.94)]])
    rounds = confirmation_rounds(candidates(study, 3), 2)
    assert [[t.params["weight_decay"] for t in r] for r in rounds] == [[5e-3, 6e-3], [7e-3]]
    infeasible = searched([(5e-3, 0.95, 0.01), (4e-3, 0.96, 0.02)])
    assert confirmation_rounds(candidates(infeasible, 3), 2) == []  # nothing to confirm


@pytest.mark.parametrize(
    ("limit", "trained", "recommended", "fractions"),
    [
        (0.90, 2, 0, {0: 1.0}),  # the best holds: the far candidate is never trained
        (0.81, 4, 1, {0: 0.0, 1: 1.0}),  # it doesn't: the far one is, and is recommended
    ],
)
def test_far_candidates_are_confirmed_only_when_the_near_ones_fail(
    limit: float,
    trained: int,
    recommended: int,
    fractions: dict[int, float],
    tiny_config: StudyConfig,
    tiny_splits: Splits,
) -> None:
    # Measured on these 2,000 images in 2 epochs: training accuracy about 0.83 at a weight
    # decay of 1e-6, 0.77 at 0.1. The search results are made up: 1e-6 looks best by far.
    study = searched([(1e-6, 0.99, -0.01), (1e-1, 0.90, -0.01)])
    config = tiny_config.replace(confirm_seeds=2, max_train_acc=limit)
    stored, ran = confirm(study, config, tiny_splits, 1, say=lambda line: None)
    assert stored is not None and stored.confirm_runs == ran == trained
    assert stored.confirmed_after == 2 and stored.confirmed_at is not None
    # Again: every run is there, so none is trained, and the cost is the first one's.
    again, ran = confirm(study, config, tiny_splits, 1, say=lambda line: None)
    assert ran == 0 and again == stored
    assert {c.trial: c.feasible_fraction for c in stored.candidates} == fractions
    assert stored.trial == recommended and stored.confirmed is True


@pytest.mark.slow
def test_run_confirms_its_best_candidates_beside_the_study(
    tiny_config: StudyConfig, tmp_path, capsys
) -> None:
    argv = [
        "--storage", tiny_config.storage_url, "--data-dir", str(tiny_config.data_dir),
        "--subset", "2000", "--epochs", "2", "--trials", "6", "--wd-low", "1e-3",
        "--max-train-acc", "0.99", "--confirm-seeds", "2", "--confirm-candidates", "2",
    ]  # fmt: skip
    status, out, _ = run_cli(run.main, argv, capsys)
    assert status == 0
    study = optuna.load_study(study_name=tiny_config.study_name, storage=tiny_config.storage_url)
    confirm = optuna.load_study(
        study_name=confirm_study_name(study.study_name), storage=tiny_config.storage_url
    )
    runs = confirm.get_trials(states=(TrialState.COMPLETE,))
    # Every run is feasible at this limit: the first round, of --confirm-candidates, holds.
    near = confirmation_rounds(candidates(study, 2 * MAX_ROUNDS), 2)[0]
    assert len(near) == 2 and len(runs) == 2 * len(near)
    # Each candidate's weight decay, with seeds of their own, never any search trial's.
    assert sorted((r.user_attrs["confirms"], r.user_attrs["replicate"]) for r in runs) == sorted(
        (t.number, i) for t in near for i in range(2)
    )
    for r in runs:
        source = study.trials[r.user_attrs["confirms"]]
        assert r.params == source.params
        assert r.user_attrs["seed"] == confirmation_seed(
            0, source.number, r.user_attrs["replicate"]
        )
        assert r.user_attrs["seed"] not in {trial_seed(0, t.number) for t in study.trials}
        assert r.user_attrs["feasible"] == (r.user_attrs["train_accuracy"] <= 0.99)
    stored = stored_recommendation(study)
    assert stored is not None and stored.confirm_runs == len(runs)
    mine = [r for r in runs if r.user_attrs["confirms"] == stored.trial]
    assert stored.choice.val_accuracy_mean == pytest.approx(
        sum(r.user_attrs["val_accuracy"] for r in mine) / 2
    )
    assert recommended_trial(study).number == stored.trial
    assert f"recommended trial #{stored.trial}" in out and "not counted in --trials" in out

    out_csv = tmp_path / "best.csv"
    assert run_cli(export.main, ["--storage", tiny_config.storage_url, "--out", str(out_csv)],
                   capsys)[0] == 0  # fmt: skip
    row = pd.read_csv(out_csv).iloc[0]
    assert row["trial"] == stored.trial and row["confirm_seeds"] == 2
    assert not any(math.isnan(row[c]) for c in CONFIRM_COLUMNS if c != "confirmed")

    # The same command again: nothing to train, nothing to confirm again.
    status, out, _ = run_cli(run.main, argv, capsys)
    assert status == 0 and "already holds" in out and "confirming" not in out
    assert len(confirm.get_trials()) == len(runs)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_train_runs_tells_progress_every_epoch(
    optimizer: str, tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    # Confirmation is a phase of its own after the search: its bar or lines count run-epochs.
    # Every recipe's runs train side by side in the pool.
    config = tiny_config.replace(optimizer=optimizer)
    study = searched([(1e-4, 0.9, -0.01)])
    confirm_study = optuna.create_study(direction="maximize")
    runs = [start_run(confirm_study, config, study.trials[0], r) for r in range(2)]
    told: list[tuple[str, int]] = []
    train_runs(runs, config, tiny_splits, lambda text, n: told.append((text, n)))
    assert told == [(f"epoch {e}/2 of 2 runs side by side", 2) for e in (1, 2)]
    assert all(run.trial.user_attrs["parallel_trials"] == 2 for run in runs)
    assert all(len(run.history) == 2 for run in runs)
