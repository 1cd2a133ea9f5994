"""A trial's per-epoch history: stored as columns out of what Optuna prints, read back as rows,
and read from studies stored before as well."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from search.config import StudyConfig
from search.data.splits import Splits
from search.study.history import to_columns, to_rows, trial_history
from tests.helpers import enqueued_study


def test_history_stays_out_of_what_optuna_prints(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    study = enqueued_study(tiny_config.replace(max_train_acc=1.0), tiny_splits, [1e-4])
    (trial,) = study.trials
    assert "history" not in trial.user_attrs  # `optuna trials` prints user attributes in full
    assert max(len(json.dumps(v)) for v in trial.user_attrs.values()) < 120
    columns = trial.system_attrs["history"]
    assert columns["epoch"] == [1, 2] and set(columns) == {
        "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
        "train_accuracy_final",
    }  # fmt: skip
    assert trial_history(trial) == to_rows(columns) and to_columns(to_rows(columns)) == columns


def test_trial_history_reads_studies_stored_before(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'old.db'}")
    trial = study.ask()
    rows = [{"epoch": 1, "val_accuracy": 0.9}, {"epoch": 2, "val_accuracy": 0.95}]
    trial.set_user_attr("history", rows)
    study.tell(trial, 0.95)
    assert trial_history(study.trials[0]) == rows
