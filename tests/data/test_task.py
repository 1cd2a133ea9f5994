"""A user's own search.Task: every bad one refused in one line before a study exists, and a
good one through the whole service (study, confirmation, evaluate, replay, export, load_best).

The tasks are small tables built in the test's own files: no MNIST, no network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from search import Task, evaluate, export, load_best, report, run
from search.data.task import TaskError, load_user_task
from search.study.notes import study_note
from search.study.record import stored_settings
from tests.helpers import REPO, run_cli

EXAMPLE = REPO / "docs" / "examples" / "tabular_task.py"

# A file defining a small Task whose pieces each case below breaks: {model}, {train}, {val}.
TEMPLATE = """
import torch
from torch import nn
from search import Task

gen = torch.Generator().manual_seed(0)
x = torch.randn(300, 6, generator=gen)
y = (x[:, 0] > 0).long()

def model():
    return {model}

task = Task(model=model, train={train}, val={val})
"""
GOOD = dict(
    model="nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))",
    train="(x[:200], y[:200])",
    val="(x[200:], y[200:])",
)


def write_task(tmp_path: Path, **changes: str) -> str:
    path = tmp_path / "bad_task.py"
    path.write_text(TEMPLATE.format(**(GOOD | changes)))
    return f"{path}:task"


def fast(tmp_path: Path) -> list[str]:
    return [
        "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--artifacts", str(tmp_path / "art"),
        "--epochs", "2", "--device", "cpu", "--quiet",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("reference", "changes", "message"),
    [
        ("missing.py:task", {}, "there is no file missing.py"),
        ("FILE:nothing", {}, "defines no 'nothing'; it has the Task task"),
        ("FILE:torch", {}, "torch is a module, not a search.Task or a function returning one"),
        ("FILE:x", {}, "x is a Tensor, not a search.Task"),
        ("no_such_module_here:task", {}, "no module 'no_such_module_here' to import"),
        ("FILE:task", dict(train="(x[:200], y[:199])"), "train has 200 inputs but 199 labels"),
        (
            "FILE:task",
            dict(val="(x[200:], y[200:] + 5)"),
            "labels go up to 6 but the model gives 2",
        ),
        ("FILE:task", dict(val="(x[200:], y[200:] - 1)"), "val labels go down to -1"),
        ("FILE:task", dict(train="(x[:200].long(), y[:200])"), "train inputs are torch.int64"),
        (
            "FILE:task",
            dict(val="(x[200:, :5], y[200:])"),
            "val inputs are (5,) each, train's are (6,)",
        ),
        (
            "FILE:task",
            dict(model="nn.Linear(7, 2)"),
            "the model fails on a batch of 2 training inputs: RuntimeError",
        ),
        (
            "FILE:task",
            dict(model="nn.Linear(6, 2).eval"),
            "model() returned a method, not an nn.Module",
        ),
        (
            "FILE:task",
            dict(model="nn.Sequential(nn.Linear(6, 2), nn.Flatten(0))"),
            "the model returns (4,) for a batch of 2",
        ),
        (
            "FILE:task",
            dict(model="nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))"),
            "BatchNorm1d keeps running statistics",
        ),
        (
            "FILE:task",
            dict(model="nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.1), nn.Linear(8, 2))"),
            "Dropout(p=0.1) would draw every trial's masks",
        ),
        ("FILE:task", dict(model="1 / 0"), "building the model failed: ZeroDivisionError"),
        ("FILE:task", dict(train="undefined_name"), "importing FILE failed: NameError"),
        ("not a reference", {}, "is neither a built-in task (mnist, synthetic) nor"),
    ],
)
def test_a_bad_task_is_one_line_exit_2_and_creates_nothing(
    tmp_path: Path, reference: str, changes: dict[str, str], message: str, capsys
) -> None:
    written = write_task(tmp_path, **changes)
    file = written.rpartition(":")[0]
    reference = reference.replace("FILE", file)
    status, out, err = run_cli(run.main, ["--task", reference, *fast(tmp_path)], capsys)
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message.replace("FILE", file) in err
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "art").exists()
    assert out == ""


def test_a_task_can_be_a_function_and_a_module_reference(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_tasks.py").write_text(
        TEMPLATE.format(**GOOD) + "\ndef make():\n    return task\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    made = load_user_task("my_tasks:make")
    assert isinstance(made, Task) and made.model().__class__.__name__ == "Sequential"
    assert load_user_task("my_tasks:make") is made  # imported once per process
    sys.modules.pop("my_tasks", None)


def test_a_users_task_runs_through_the_whole_service(tmp_path: Path, capsys) -> None:
    """The docs' tabular example: study, confirmation, test split, replay, export, load_best."""
    reference = f"{EXAMPLE}:task"
    argv = ["--task", reference, "--trials", "4", "--confirm-seeds", "2", *fast(tmp_path)]
    status, out, err = run_cli(run.main, argv, capsys)
    assert status == 0, err
    study_name = "tabular-mlp-weight-decay"  # the Task's name, not mnist's default
    assert f"study {study_name!r}: 4 of 4 trials finished" in out
    assert "recommended trial #" in out
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert stored_settings(study)["task"] == reference
    checksums = study.user_attrs["data_checksums"]
    assert checksums["task"] == reference and {"train", "val", "test"} <= checksums.keys()
    # The generic pool trained it, and every trial knows its slot for the replay.
    assert all(t.user_attrs["parallel_trials"] == 16 for t in study.trials)
    assert sorted(t.user_attrs["pool_slot"] for t in study.trials) == [0, 1, 2, 3]

    where = [
        "--study-name",
        study_name,
        "--storage",
        storage,
        "--artifacts",
        str(tmp_path / "art"),
    ]
    status, out, err = run_cli(evaluate.main, [*where, "--device", "cpu"], capsys)
    assert status == 0, err
    assert "test set (500 examples)" in out and "test_accuracy=0." in out
    note = study_note(optuna.load_study(study_name=study_name, storage=storage))
    assert note is not None and "(500 test examples, `python -m search.evaluate`)" in note
    assert "MNIST" not in note and "images" not in note
    status, out, err = run_cli(report.main, [*where[:4], "--out", str(tmp_path / "r")], capsys)
    assert status == 0, err
    index = (tmp_path / "r" / "index.html").read_text()
    assert "on 500 examples" in index and "images" not in index

    trial = study.best_trials[0].number if study.best_trials else 0
    argv = [*where, "--device", "cpu", "--replay", "--trial", str(trial)]
    status, out, err = run_cli(evaluate.main, argv, capsys)
    assert status == 0, err
    assert (
        "the metrics of all 2 epochs equal the recorded ones, and so do its final weights" in out
    )

    csv = tmp_path / "best.csv"
    status, out, err = run_cli(export.main, [*where[:4], "--out", str(csv)], capsys)
    assert status == 0, err
    best = pd.read_csv(csv)
    assert len(best) == 1 and best.loc[0, "weight_decay"] > 0

    model = load_best(study_name, storage, tmp_path / "art")
    assert type(model).__name__ == "TabularMLP"  # the user's class, with its trained weights
    task = load_user_task(reference)
    with torch.no_grad():
        accuracy = (model(task.val[0]).argmax(1) == task.val[1]).double().mean().item()
    assert accuracy == pytest.approx(model.val_accuracy, abs=1e-6)


def test_a_resumed_task_study_refuses_changed_data_and_another_task(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "table.py"
    path.write_text(TEMPLATE.format(**GOOD))
    argv = ["--task", f"{path}:task", "--confirm-seeds", "0", *fast(tmp_path)]
    assert run_cli(run.main, ["--trials", "2", *argv], capsys)[0] == 0

    # Another process would import the file afresh: here, forget the first import.
    from search.data import task as task_module

    task_module._LOADED.clear()
    path.write_text(TEMPLATE.format(**GOOD).replace("manual_seed(0)", "manual_seed(1)"))
    status, _, err = run_cli(run.main, ["--trials", "3", *argv], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "study 'task-weight-decay' was made on other data (train, val changed since)" in err

    where = ["--study-name", "task-weight-decay", *fast(tmp_path)]
    status, _, err = run_cli(run.main, ["--task", "synthetic", "--trials", "3", *where], capsys)
    assert status == 2 and f"was created with --task {path}:task (got synthetic)" in err
    study = optuna.load_study(
        study_name="task-weight-decay", storage=f"sqlite:///{tmp_path / 'study.db'}"
    )
    assert len(study.trials) == 2  # nothing ran on the wrong data


def test_validation_test_is_refused_for_a_users_task(tmp_path: Path, capsys) -> None:
    argv = ["--task", write_task(tmp_path), "--validation", "test", *fast(tmp_path)]
    status, _, err = run_cli(run.main, argv, capsys)
    assert status == 2 and "validates on its own val split" in err


def test_evaluate_refuses_a_task_without_a_test_split(tmp_path: Path, capsys) -> None:
    argv = ["--task", write_task(tmp_path), "--trials", "2", "--confirm-seeds", "0"]
    assert run_cli(run.main, [*argv, *fast(tmp_path)], capsys)[0] == 0
    where = [
        "--study-name",
        "task-weight-decay",
        "--storage",
        f"sqlite:///{tmp_path / 'study.db'}",
    ]
    status, _, err = run_cli(evaluate.main, [*where, "--device", "cpu"], capsys)
    assert status != 0 and "which has no test set" in err and err.count("\n") == 1


def test_load_user_task_raises_task_error_for_a_missing_name(tmp_path: Path) -> None:
    reference = write_task(tmp_path).replace(":task", ":other")
    with pytest.raises(TaskError, match="defines no 'other'"):
        load_user_task(reference)
