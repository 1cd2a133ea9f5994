"""search.export: the best feasible configuration and every trial, as CSV read back by pandas."""

from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from search import export
from search.config import StudyConfig
from search.data.splits import Splits
from search.reporting.tables import BEST_COLUMNS, CONFIRM_COLUMNS, HISTORY_COLUMNS, all_frame
from search.study.history import trial_history
from search.study.record import CONSTRAINT
from search.training.seeds import trial_seed
from tests.helpers import enqueued_study, run_cli
from tests.reporting.stored import BY_PRUNER, OVER_LIMIT, add_trial, empty_study


@pytest.fixture
def study(tiny_config: StudyConfig, tiny_splits: Splits) -> optuna.Study:
    """Three trials: one pruned as infeasible at epoch 2, two complete and feasible."""
    config = tiny_config.replace(epochs=3, max_train_acc=0.83)
    return enqueued_study(config, tiny_splits, [1e-6, 1e-1, 1e-1])


def exported(url: str, out: Path, capsys, *flags: str) -> tuple[str, pd.DataFrame]:
    """``search.export`` of the study at ``url`` to ``out``: its stdout and the CSV it wrote."""
    argv = ["--storage", url, "--out", str(out), *flags]
    status, stdout, err = run_cli(export.main, argv, capsys)
    assert status == 0, err
    return stdout, pd.read_csv(out)


def test_export_best_writes_the_best_feasible_trial(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "best.csv"
    stdout, frame = exported(tiny_config.storage_url, out, capsys)
    assert f"wrote 1 row to {out}" in stdout
    assert list(frame.columns) == BEST_COLUMNS + CONFIRM_COLUMNS and len(frame) == 1
    assert frame[CONFIRM_COLUMNS].isna().all(axis=None)  # this study was never confirmed
    row = frame.iloc[0]
    best = study.best_trial
    assert row["study"] == "mnist-weight-decay" and row["trial"] == best.number
    assert row["weight_decay"] == pytest.approx(best.params["weight_decay"], rel=1e-12)
    assert row["val_accuracy"] == best.value and bool(row["feasible"]) is True
    assert row["train_accuracy"] == best.user_attrs["train_accuracy"] <= 0.83
    assert (row["lr"], row["batch_size"], row["epochs"]) == (1e-3, 64, 3)
    assert row["validation"] == "holdout"


def test_export_best_adds_the_test_set_figure_of_the_best_trial_only(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    url, out = tiny_config.storage_url, tmp_path / "best.csv"
    best = study.best_trial.number
    # As `python -m search.evaluate` stores it, but first for a trial that is not the best:
    # a stale figure (the study found a better trial since) is left out.
    result = {"trial": best + 1, "test_loss": 0.25, "test_accuracy": 0.9312}
    study.set_user_attr("test_evaluation", result)
    assert list(exported(url, out, capsys)[1].columns) == BEST_COLUMNS + CONFIRM_COLUMNS
    study.set_user_attr("test_evaluation", result | {"trial": best})
    _, frame = exported(url, out, capsys)
    assert list(frame.columns) == [*BEST_COLUMNS, *CONFIRM_COLUMNS, "test_accuracy", "test_loss"]
    assert (frame.loc[0, "test_accuracy"], frame.loc[0, "test_loss"]) == (0.9312, 0.25)


def test_export_all_has_state_constraint_feasibility_and_timing(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    _, frame = exported(tiny_config.storage_url, tmp_path / "all.csv", capsys, "--all")
    assert len(frame) == 3
    assert list(frame["state"]) == ["PRUNED", "COMPLETE", "COMPLETE"]
    assert list(frame["feasible"]) == [False, True, True]
    assert frame.loc[0, "pruned_reason"].startswith("infeasible: running train accuracy")
    # Both training accuracies; train_accuracy is the one the constraint read, the running one.
    assert list(frame["train_accuracy_measure"]) == ["running"] * 3
    assert frame["train_accuracy"].tolist() == frame["train_accuracy_running"].tolist()
    assert (frame["train_accuracy_final"] != frame["train_accuracy_running"]).all()
    assert frame["train_accuracy_final"].between(0, 1).all()
    constraints = [t.constraints[CONSTRAINT] for t in study.trials]
    assert frame["constraint"].tolist() == pytest.approx(constraints)
    # The trial stopped over the limit records where it would have ended, not where it stopped.
    final = frame["projected_train_accuracy"].fillna(frame["train_accuracy"])
    assert frame["constraint"].tolist() == pytest.approx((final - 0.83).tolist())
    assert frame.loc[0, "projected_train_accuracy"] > frame.loc[0, "train_accuracy"]
    assert frame["projected_train_accuracy"].iloc[1:].isna().all()
    assert (frame["duration_s"] > 0).all()
    assert pd.to_datetime(frame["datetime_start"]).notna().all()
    assert frame["epochs_run"].tolist() == [2, 3, 3]


def test_export_all_leaves_feasible_empty_for_a_trial_the_pruner_stopped(
    tmp_path: Path, capsys
) -> None:
    study = empty_study(tmp_path)
    add_trial(study, 1e-2, [(0.90, 0.9), (0.92, 0.9), (0.93, 0.9), (0.94, 0.9)], 1)
    add_trial(study, 1e-5, [(0.93, 0.9), (0.96, 0.9)], 2, OVER_LIMIT)
    add_trial(study, 2e-2, [(0.90, 0.9), (0.91, 0.9)], 3, BY_PRUNER)
    url, out = f"sqlite:///{tmp_path / 'stored.db'}", tmp_path / "all.csv"
    _, frame = exported(url, out, capsys, "--all", "--study-name", "stored")
    assert frame["state"].tolist() == ["COMPLETE", "PRUNED", "PRUNED"]
    with out.open(newline="") as stream:
        cells = [row["feasible"] for row in csv.DictReader(stream)]
    # Stopped for its score before its last epoch: whether it would have ended feasible is
    # unknown, not True. Stopped over the limit: infeasible for good.
    assert cells == ["True", "False", ""]


def test_export_with_no_feasible_trial_writes_nothing(
    tiny_config: StudyConfig, tiny_splits: Splits, tmp_path: Path, capsys
) -> None:
    enqueued_study(tiny_config.replace(max_train_acc=0.05), tiny_splits, [1e-3])
    out = tmp_path / "best.csv"
    status, _, err = run_cli(
        export.main, ["--storage", tiny_config.storage_url, "--out", str(out)], capsys
    )
    assert status == 1 and "no feasible complete trial" in err and "--all" in err
    assert not out.exists()


def test_export_of_a_missing_study_creates_no_database(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'nothing.db'}"
    status, _, err = run_cli(export.main, ["--storage", url], capsys)
    assert status == 2 and "no study database" in err
    assert not (tmp_path / "nothing.db").exists()


def test_export_names_the_studies_a_storage_holds(
    study: optuna.Study, tiny_config: StudyConfig, capsys
) -> None:
    argv = ["--storage", tiny_config.storage_url, "--study-name", "typo"]
    status, _, err = run_cli(export.main, argv, capsys)
    assert status == 2 and "no study named 'typo'" in err and "mnist-weight-decay" in err


def test_export_to_a_missing_directory_is_one_line(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "nope" / "best.csv"
    status, _, err = run_cli(
        export.main, ["--storage", tiny_config.storage_url, "--out", str(out)], capsys
    )
    assert status == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_export_to_a_directory_is_one_line_and_exit_2(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    before = sorted(tmp_path.iterdir())
    argv = ["--storage", tiny_config.storage_url, "--out", str(tmp_path)]
    status, _, err = run_cli(export.main, argv, capsys)
    assert status == 2 and "is a directory" in err and len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.iterdir()) == before


def test_export_neutralises_spreadsheet_formulas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'evil.db'}"
    study = optuna.create_study(storage=url, study_name="=HYPERLINK(1)", direction="maximize")
    trial = optuna.trial.create_trial(
        params={"weight_decay": 1e-3},
        distributions={
            "weight_decay": optuna.distributions.FloatDistribution(1e-6, 1e-1, log=True)
        },
        value=0.9,
        user_attrs={"pruned_reason": "@SUM(A1)", "val_accuracy": -0.5},
        state=TrialState.COMPLETE,
    )
    study.add_trial(trial)
    out = tmp_path / "all.csv"
    export.write_csv(all_frame(study), out)
    frame = pd.read_csv(out)
    assert frame.loc[0, "study"] == "'=HYPERLINK(1)"
    assert frame.loc[0, "pruned_reason"] == "'@SUM(A1)"
    assert frame.loc[0, "val_accuracy"] == -0.5  # numbers are left alone


def test_export_seed_is_the_trials_own_and_study_seed_the_studys(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    _, frame = exported(tiny_config.storage_url, tmp_path / "all.csv", capsys, "--all")
    assert frame["seed"].tolist() == [trial_seed(0, n) for n in range(3)]
    assert frame["seed"].nunique() == 3 and (frame["study_seed"] == 0).all()
    # The pruned trial's figures are those of the epoch it stopped at, and the row says which.
    assert frame["epochs_run"].tolist() == [len(trial_history(t)) for t in study.trials]
    assert frame.loc[0, "epochs_run"] < frame.loc[0, "epochs"] == 3
    columns = list(frame.columns)
    assert columns.index("epochs_run") + 1 == columns.index("val_accuracy")


def test_export_history_is_long_one_row_per_trial_and_epoch(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "history.csv"
    stdout, frame = exported(tiny_config.storage_url, out, capsys, "--history")
    epochs = [len(trial_history(t)) for t in study.trials]
    assert f"wrote {sum(epochs)} rows" in stdout
    assert list(frame.columns) == HISTORY_COLUMNS
    assert frame.groupby("trial")["epoch"].max().tolist() == epochs
    assert frame.groupby("trial")["state"].first().tolist() == ["PRUNED", "COMPLETE", "COMPLETE"]
    last = frame[frame["trial"] == 1].iloc[-1]
    assert last["val_accuracy"] == study.trials[1].value
    curves = frame.pivot(index="epoch", columns="trial", values="val_accuracy")
    assert curves.shape == (3, 3) and curves[0].isna().sum() == 3 - epochs[0]


def test_export_all_and_history_are_one_or_the_other(tiny_config: StudyConfig, capsys) -> None:
    argv = ["--storage", tiny_config.storage_url, "--all", "--history"]
    status, _, err = run_cli(export.main, argv, capsys)
    assert status == 2 and "not allowed with argument" in err


FORMULAS = [
    "=1+1", "+1+2", "-2+3", "@SUM(A1)", "\r=1+1", "\n=1+1", "\t=1+1", "  =1+1", "\u3000=1+1",
    "\uff1d1+1", "\uff0b1", "\uff0d1", "\uff20SUM(A1)", "\x00=1", "\u00a0=1+1",
]  # fmt: skip


@pytest.mark.parametrize("payload", FORMULAS)
def test_export_neutralises_a_formula_whatever_leads_it(payload: str, tmp_path: Path) -> None:
    frame = pd.DataFrame({"study": ["s"], "pruned_reason": [payload], "constraint": [-0.5]})
    out = tmp_path / "all.csv"
    export.write_csv(frame, out)
    with out.open(newline="") as stream:
        rows = list(csv.reader(stream))
    assert len(rows) == 2  # a line break in a cell starts no new row
    assert rows[1] == ["s", "'" + payload, "-0.5"]


@pytest.mark.parametrize("text", ["weight decay 1e-3", "a=b", "x-y", "pruned: a\nb"])
def test_export_leaves_harmless_text_alone_and_quotes_line_breaks(
    text: str, tmp_path: Path
) -> None:
    out = tmp_path / "all.csv"
    export.write_csv(pd.DataFrame({"pruned_reason": [text]}), out)
    with out.open(newline="") as stream:
        assert list(csv.reader(stream)) == [["pruned_reason"], [text]]
    assert ("\n" in text) == ('"' in out.read_text())


def test_export_file_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        export.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "a.csv")
        os.umask(0o077)
        export.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "b.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.csv").stat().st_mode) == 0o600


def test_export_removes_the_temporary_file_a_killed_export_left(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a writer that no longer exists, as after a SIGKILL mid-write
    out = tmp_path / "best.csv"
    stale = export.temp_path(out, gone.pid)
    stale.write_text("")
    live = export.temp_path(out, os.getppid())  # a writer still at work: left alone
    live.write_text("")
    other = export.temp_path(tmp_path / "other.csv", gone.pid)  # another file's
    other.write_text("")
    export.write_csv(pd.DataFrame({"a": [1]}), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["best.csv", live.name, other.name]
    )
