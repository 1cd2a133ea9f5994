"""The trials table says feasible only where it is known: a trial stopped early for its score
never reached the epoch that decides it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest

from search.reporting.tables import all_frame
from tests.reporting.stored import BY_PRUNER, EPOCHS, LIMIT, OVER_LIMIT, add_trial, empty_study


def curve(train: float, epochs: int = EPOCHS) -> list[tuple[float, float]]:
    return [(train - 0.01 * (epochs - e), 0.9) for e in range(1, epochs + 1)]


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    """#0 complete feasible, #1 complete over the limit, #2 stopped over the limit, #3 and #4
    stopped by the pruner under it, #5 failed (nothing stored)."""
    study = empty_study(tmp_path)
    add_trial(study, 1e-2, curve(0.94), 1)
    add_trial(study, 1e-3, curve(0.96), 2)
    add_trial(study, 1e-5, curve(0.96, 2), 3, OVER_LIMIT)
    add_trial(study, 3e-2, curve(0.90, 2), 4, BY_PRUNER)
    add_trial(study, 2e-2, curve(0.93, 3), 5, BY_PRUNER)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return study


def test_all_frame_feasible_is_empty_where_the_trial_never_reached_its_end(
    study: optuna.Study,
) -> None:
    frame = all_frame(study)
    assert frame["state"].tolist() == [
        "COMPLETE",
        "COMPLETE",
        "PRUNED",
        "PRUNED",
        "PRUNED",
        "FAIL",
    ]
    assert frame["feasible"].tolist()[:3] == [True, False, False]  # over the limit is final
    assert frame["feasible"].iloc[3:].isna().all()
    # The record itself still says "feasible as of the epoch it stopped": only the table
    # refuses to call that final.
    assert [t.user_attrs.get("feasible") for t in study.trials[3:]] == [True, True, None]


def test_all_frame_keeps_each_trials_constraint_as_stored(study: optuna.Study) -> None:
    frame = all_frame(study)
    expected = [0.94 - LIMIT, 0.96 - LIMIT, 0.96 - LIMIT, 0.90 - LIMIT, 0.93 - LIMIT]
    assert frame["constraint"].iloc[:5].tolist() == pytest.approx(expected)
    assert pd.isna(frame["constraint"].iloc[5])
