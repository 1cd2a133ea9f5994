"""``run_study``, the library call behind ``search.run``: a tiny real study run, then run again
once its budget is met."""

from __future__ import annotations

import optuna
import pytest

from search.config import StudyConfig
from search.engine.run_study import Outcome, run_study
from search.study.record import confirm_study_name, stored_best


@pytest.mark.slow
def test_run_study_trains_confirms_and_then_only_reports(tiny_config: StudyConfig) -> None:
    config = tiny_config.replace(trials=2, epochs=1, confirm_seeds=2, quiet=True)
    lines: list[str] = []
    first = run_study(config, say=lines.append)
    assert isinstance(first, Outcome)
    assert (first.study_name, first.budget, first.finished) == (config.study_name, 2, 2)
    assert first.trained_now is True and first.status == 0 and first.summary_known
    assert first.wall_s is not None and first.wall_s > 0
    assert any("0 of 2 trials finished" in line for line in lines)
    study = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    assert len(study.trials) == 2
    # One epoch on 2,000 images trains far below the 0.95 limit: there is a feasible best.
    assert first.best is not None and first.recommendation is not None
    assert stored_best(study) == first.best  # the study names its best trial itself
    assert first.best_params["weight_decay"] == first.best.weight_decay
    assert first.confirmed_now is True
    assert first.recommendation.best_trial == first.best.number
    assert first.recommendation.choice.confirm_seeds == 2
    assert first.recommendation.confirm_runs > 0
    confirm = optuna.load_study(
        study_name=confirm_study_name(config.study_name), storage=config.storage_url
    )
    assert len(confirm.trials) == first.recommendation.confirm_runs

    lines.clear()
    again = run_study(config, say=lines.append)
    assert again.trained_now is False and again.confirmed_now is False
    assert again.finished == 2 and again.wall_s is None and again.status == 0
    assert again.best is not None and again.best.number == first.best.number
    assert again.best == first.best
    assert again.recommendation == first.recommendation
    assert any("already holds 2 finished trials" in line for line in lines)
    study = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    assert len(study.trials) == 2  # nothing trained
