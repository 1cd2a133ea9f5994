"""search.evaluate and search.artifacts: stored weights, the test-set figure, and replays."""

from __future__ import annotations

import functools
import json
import shutil
import sqlite3
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState
from optuna_dashboard import get_note

from search import evaluate, export, report, run
from search.config import StudyConfig
from search.data.mnist import load_splits, load_test
from search.data.splits import Splits
from search.engine.run_study import study_attrs
from search.engine.strategy import new_study
from search.evaluation import verify
from search.evaluation.verify import first_mismatch
from search.reporting.steps import Steps
from search.study.artifacts import ArtifactError, load_model
from search.study.history import trial_history
from search.study.record import TEST_ATTR
from search.study.storage import make_storage
from search.training.train import evaluate as score
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # real, tiny studies and the real test set


def run_study(
    config: StudyConfig,
    max_train_acc: float = 0.83,
    validation: str = "holdout",
    parallel_trials: int | None = None,
) -> optuna.Study:
    """Three trials through the real CLI: #0 pruned as infeasible at epoch 2, #1 complete and
    feasible, #2 complete but over the limit at its last epoch.

    The study is created first, as ``search.run`` would, so that its trials can be enqueued;
    the CLI then resumes it. The limit (83%) sits between what 2,000 images reach with weak
    and with strong decay. ``parallel_trials`` None trains them as the CLI chooses (the pool).
    """
    config = config.replace(
        epochs=3, max_train_acc=max_train_acc, validation=validation, sampler="random"
    )
    splits = load_splits(config.data_dir, validation, config.subset)
    study = new_study(make_storage(config.storage_url), config, study_attrs(splits))
    for weight_decay in (1e-6, 1e-1, 5e-2):
        study.enqueue_trial({"weight_decay": weight_decay})
    argv = [
        "--storage", config.storage_url,
        "--trials", "3",
        "--epochs", "3",
        "--subset", str(config.subset),
        "--max-train-acc", str(max_train_acc),
        "--validation", validation,
        "--sampler", "random",
        "--data-dir", str(config.data_dir),
        "--device", "cpu",
    ]  # fmt: skip
    if parallel_trials is not None:
        argv += ["--parallel-trials", str(parallel_trials)]
    assert run.main(argv) == 0
    return optuna.load_study(study_name=config.study_name, storage=config.storage_url)


def flags(config: StudyConfig) -> list[str]:
    return ["--storage", config.storage_url, "--data-dir", str(config.data_dir), "--device", "cpu"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A folder with the study's database and its artifacts, run once per module."""
    folder = tmp_path_factory.mktemp("finished")
    study = run_study(
        StudyConfig(
            storage=f"sqlite:///{folder / 'study.db'}",
            data_dir=mnist_dir,
            subset=2000,
            device="cpu",
        )
    )
    states = [t.state for t in study.trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    return folder


@pytest.fixture
def study(finished: Path, tiny_config: StudyConfig, tmp_path: Path) -> optuna.Study:
    """A copy of the finished study at ``tiny_config``'s storage, for each test to change."""
    # The whole folder: SQLite may keep recent writes in a -wal file beside the database.
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    return optuna.load_study(study_name=tiny_config.study_name, storage=tiny_config.storage_url)


def test_complete_trials_store_their_weights_and_pruned_ones_do_not(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path
) -> None:
    store_dir = tmp_path / "artifacts"
    stored = sorted(p.name for p in store_dir.iterdir())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert stored == sorted(t.user_attrs["model_artifact_id"] for t in complete)
    metas = optuna.artifacts.get_all_artifact_meta(complete[0], storage=study._storage)
    assert [m.filename for m in metas] == ["trial-1-model.pt"]
    with pytest.raises(ArtifactError, match="only complete trials keep their weights"):
        load_model(study, 0, optuna.artifacts.FileSystemArtifactStore(store_dir))


def test_evaluate_scores_the_best_trial_on_the_test_set(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    status, out, err = run_cli(evaluate.main, flags(tiny_config), capsys)
    assert status == 0 and err == ""
    best = study.best_trial
    result = study.user_attrs[TEST_ATTR]
    assert result["trial"] == best.number and result["test_images"] == 10_000
    assert result["selected_on_test"] is False
    # The same figure, computed here from the stored weights and the test files.
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path / "artifacts")
    x, y = load_test(tiny_config.data_dir)
    loss, accuracy = score(load_model(study, best.number, store), x, y)
    assert (result["test_loss"], result["test_accuracy"]) == (loss, accuracy)
    assert 0.5 < accuracy < 1
    assert f"recommended trial #{best.number}" in out
    assert f"test_accuracy={accuracy:.4f}" in out and f"test_loss={loss:.4f}" in out
    # The dashboard's study note and the best-configuration CSV carry it too.
    assert f"accuracy = {accuracy:.4f}" in get_note(study)
    out_csv = tmp_path / "best.csv"
    argv = ["--storage", tiny_config.storage_url, "--out", str(out_csv)]
    assert run_cli(export.main, argv, capsys)[0] == 0
    row = pd.read_csv(out_csv).iloc[0]
    assert row["test_accuracy"] == accuracy and row["test_loss"] == pytest.approx(loss)
    assert row["val_accuracy"] == best.value
    # And the report's summary table.
    argv = ["--storage", tiny_config.storage_url, "--out", str(tmp_path / "report")]
    assert run_cli(report.main, argv, capsys)[0] == 0
    index = (tmp_path / "report" / "index.html").read_text()
    assert f"accuracy {accuracy:.4f}" in index


def test_evaluate_says_when_the_study_validated_on_the_test_set(
    tiny_config: StudyConfig, capsys
) -> None:
    study = run_study(tiny_config, validation="test")
    status, _, err = run_cli(evaluate.main, flags(tiny_config), capsys)
    assert status == 0 and "validated on the official test set" in err
    assert study.user_attrs[TEST_ATTR]["selected_on_test"] is True
    assert "no unbiased estimate" in get_note(study)


def test_holdout_search_never_reads_the_test_set(study: optuna.Study) -> None:
    assert set(study.user_attrs["data_checksums"]) == {
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    }


def test_evaluate_without_a_feasible_trial_is_one_line(tiny_config: StudyConfig, capsys) -> None:
    run_study(tiny_config, max_train_acc=0.05)
    capsys.readouterr()  # the run's own output
    status, out, err = run_cli(evaluate.main, flags(tiny_config), capsys)
    assert status == 1 and out == ""
    assert "no feasible complete trial" in err and len(err.strip().splitlines()) == 1


def test_evaluate_with_the_wrong_artifacts_folder_is_one_line(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    argv = [*flags(tiny_config), "--artifacts", str(tmp_path / "elsewhere")]
    status, _, err = run_cli(evaluate.main, argv, capsys)
    assert status == 1 and "missing from the artifact store" in err and "--artifacts" in err
    assert TEST_ATTR not in study.user_attrs


def test_evaluate_tests_no_trial_but_the_best(tiny_config: StudyConfig, capsys) -> None:
    status, _, err = run_cli(evaluate.main, [*flags(tiny_config), "--trial", "1"], capsys)
    assert status == 2 and "--trial needs --replay" in err


@pytest.mark.parametrize(
    ("trial", "weights"), [(0, ""), (1, ", and so do its final weights"), (None, "weights")]
)
def test_replay_reproduces_every_recorded_metric(
    study: optuna.Study, tiny_config: StudyConfig, trial: int | None, weights: str, capsys
) -> None:
    argv = [*flags(tiny_config), "--replay"] + ([] if trial is None else ["--trial", str(trial)])
    status, out, err = run_cli(evaluate.main, argv, capsys)
    number = study.best_trial.number if trial is None else trial
    epochs = len(trial_history(study.trials[number]))
    assert status == 0, out + err
    assert f"trial {number}: reproduced on cpu: the metrics of all {epochs} epochs" in out
    assert weights in out
    # Through the path that trained it: the pool, for the CLI's default on a CPU.
    k = study.trials[number].user_attrs["parallel_trials"]
    assert k > 1 and out.rstrip().endswith(
        f"(replayed through a pool of {k} slots, as it trained)"
    )


def test_replay_of_a_single_path_trial_goes_through_the_single_loop(
    tiny_config: StudyConfig, capsys
) -> None:
    study = run_study(tiny_config, parallel_trials=1)
    capsys.readouterr()  # the run's own output
    for number in (0, 1):  # pruned, complete
        assert "parallel_trials" not in study.trials[number].user_attrs
        argv = [*flags(tiny_config), "--replay", "--trial", str(number)]
        status, out, err = run_cli(evaluate.main, argv, capsys)
        assert status == 0, out + err
        assert out.startswith(f"trial {number}: reproduced on cpu")
        assert out.rstrip().endswith("(replayed through the single-trial loop, as it trained)")


def test_replay_names_the_first_metric_that_differs(
    study: optuna.Study, tiny_config: StudyConfig, tmp_path: Path, capsys
) -> None:
    # Change one recorded number in the database, as a different machine's run would.
    history = study.trials[1].system_attrs["history"]  # columns: search.study.history
    history["val_loss"][1] += 1e-9
    with sqlite3.connect(tmp_path / "study.db") as db:
        db.execute(
            "UPDATE trial_system_attributes SET value_json = ? WHERE key = 'history' AND "
            "trial_id = (SELECT trial_id FROM trials WHERE number = 1)",
            (json.dumps(history),),
        )
    status, out, _ = run_cli(
        evaluate.main, [*flags(tiny_config), "--replay", "--trial", "1"], capsys
    )
    assert status == 1
    assert out.startswith("trial 1: NOT reproduced on cpu: epoch 2 val_loss: recorded")


def test_replay_of_a_trial_that_does_not_exist_is_one_line(
    study: optuna.Study, tiny_config: StudyConfig, capsys
) -> None:
    status, _, err = run_cli(
        evaluate.main, [*flags(tiny_config), "--replay", "--trial", "9"], capsys
    )
    assert status == 1 and "--trial 9: study 'mnist-weight-decay' has trials 0 to 2" in err


def test_first_mismatch_ignores_wall_time_only() -> None:
    row = {"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.9, "seconds": 1.0}
    assert first_mismatch([row], [row | {"seconds": 2.0}]) is None
    assert first_mismatch([row], [row | {"val_accuracy": 0.91}]) == (
        "epoch 1 val_accuracy: recorded 0.9, replayed 0.91"
    )
    assert "stopped after epoch 0" in first_mismatch([row], [])


def test_load_model_gives_the_weights_the_trial_ended_with(
    study: optuna.Study, tmp_path: Path
) -> None:
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path / "artifacts")
    model = load_model(study, 1, store)
    saved = torch.load(
        tmp_path / "artifacts" / study.trials[1].user_attrs["model_artifact_id"], weights_only=True
    )
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert model(torch.zeros(2, 784)).shape == (2, 10)


def test_load_best_returns_the_recommended_trials_model_in_eval_mode(
    study: optuna.Study, tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    from search import load_best
    from search.study.record import recommended_trial

    model = load_best(tiny_config.study_name, storage=tiny_config.storage_url, device="cpu")
    best = recommended_trial(study)
    assert best is not None and model.trial_number == best.number
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert (model.config.subset, model.config.epochs, model.config.max_train_acc) == (
        2000,
        3,
        0.83,
    )
    assert model.params == best.params and model.val_accuracy == best.value
    # The very weights the trial was scored with: its validation accuracy comes back.
    _, accuracy = score(model, tiny_splits.val_x, tiny_splits.val_y)
    assert accuracy == pytest.approx(best.value, abs=1e-9)


@pytest.fixture
def every_step_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress as a slow machine shows it: a line at every step, whatever the real speed."""
    monkeypatch.setattr(verify, "Steps", functools.partial(Steps, every_s=0, tick_s=None))


@pytest.mark.usefixtures("every_step_said")
def test_evaluate_shows_the_scoring_on_stderr_and_quiet_silences_it(
    study: optuna.Study, tiny_config: StudyConfig, capsys
) -> None:
    status, out, err = run_cli(evaluate.main, flags(tiny_config), capsys)
    number = study.best_trial.number
    lines = err.splitlines()
    assert status == 0 and len(lines) == 2, err
    assert lines[0].startswith(f"testing trial #{number} on the 10,000 test images: 1/2 steps")
    assert lines[0].endswith("weights loaded")
    assert lines[1].startswith(f"testing trial #{number} on the 10,000 test images: 2/2 steps")
    accuracy = study.user_attrs[TEST_ATTR]["test_accuracy"]
    assert lines[1].endswith(f"elapsed, done  test_accuracy {accuracy:.4f}")
    assert f"test_accuracy={accuracy:.4f}" in out  # the result itself stays on stdout
    status, _, err = run_cli(evaluate.main, [*flags(tiny_config), "--quiet"], capsys)
    assert status == 0 and err == ""


@pytest.mark.usefixtures("every_step_said")
def test_replay_shows_each_epoch_with_an_eta(
    study: optuna.Study, tiny_config: StudyConfig, capsys
) -> None:
    argv = [*flags(tiny_config), "--replay", "--trial", "1"]
    status, _, err = run_cli(evaluate.main, argv, capsys)
    epochs = len(trial_history(study.trials[1]))
    lines = err.splitlines()
    assert status == 0 and len(lines) == epochs, err
    assert lines[0].startswith(f"replaying trial 1: 1/{epochs} epochs, ")
    assert "ETA" in lines[0] and "epoch 1, val_accuracy 0." in lines[0]
    assert lines[-1].startswith(f"replaying trial 1: {epochs}/{epochs} epochs, ")
    assert ", done  epoch " in lines[-1]
    status, _, err = run_cli(evaluate.main, [*argv, "--quiet"], capsys)
    assert status == 0 and err == ""


@pytest.mark.parametrize(
    "recipe",
    [
        ["--task", "synthetic", "--search-space", "full", "--max-train-acc", "0.9"],
        ["--optimizer", "adamw", "--no-decay-biases", "--wd-high", "10", "--subset", "2000"],
        ["--optimizer", "sgd", "--subset", "2000"],
    ],
    ids=["synthetic-full", "mnist-adamw", "mnist-sgd"],
)
def test_every_recipe_trains_in_the_pool_and_replays_bit_for_bit(
    tiny_config: StudyConfig, recipe: list[str], capsys
) -> None:
    """Off the seed's recipe the trials still train side by side, a full search space's
    optimizers mixed in one pool, and a trial of each optimizer retrains to the same numbers
    and weights."""
    argv = [
        "--storage", tiny_config.storage_url,
        "--trials", "10",
        "--epochs", "3",
        "--parallel-trials", "6",
        "--confirm-seeds", "0",
        "--data-dir", str(tiny_config.data_dir),
        "--device", "cpu",
        "--quiet",
        *recipe,
    ]  # fmt: skip
    assert run.main(argv) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name=tiny_config.study_name, storage=tiny_config.storage_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 10
    assert {t.user_attrs["parallel_trials"] for t in finished} == {6}
    by_optimizer = {str(t.params.get("optimizer", recipe[1])): t for t in finished}
    if "full" in recipe:  # the sampler's startup trials cover every optimizer
        assert set(by_optimizer) == {"adam", "adamw", "sgd"}
    for trial in by_optimizer.values():
        argv = [*flags(tiny_config), "--replay", "--trial", str(trial.number)]
        status, out, err = run_cli(evaluate.main, argv, capsys)
        assert status == 0, out + err
        assert out.startswith(f"trial {trial.number}: reproduced on cpu"), out
        assert out.rstrip().endswith("(replayed through a pool of 6 slots, as it trained)")


def test_every_command_works_on_a_synthetic_study(tmp_path: Path, capsys) -> None:
    """The table has no test split: the run's summary offers a replay instead of a test,
    evaluate says so in one line and stores nothing, the replay it offers reproduces the
    trial, report draws it and export writes it; its trials' weights load into the table's
    network, which scores the validation accuracy the trial recorded."""
    from search import load_best
    from search.data.synthetic import load_synthetic

    url = f"sqlite:///{tmp_path / 'table.db'}"
    argv = [
        "--task", "synthetic", "--storage", url, "--trials", "3", "--epochs", "2",
        "--confirm-seeds", "0", "--max-train-acc", "1", "--device", "cpu",
    ]  # fmt: skip
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    assert "test:    " not in out
    (offered,) = [line for line in out.splitlines() if line.startswith("replay:  ")]
    assert offered.endswith("(the synthetic task has no test set)")
    replay_argv = offered.split("python -m search.evaluate ")[1].split("  (")[0].split()
    status, out, err = run_cli(evaluate.main, [*replay_argv, "--quiet"], capsys)
    assert status == 0 and "reproduced on cpu" in out, out + err
    where = ["--storage", url, "--study-name", "mnist-weight-decay"]
    status, out, _ = run_cli(report.main, [*where, "--out", str(tmp_path / "report")], capsys)
    assert status == 0 and (tmp_path / "report" / "index.html").is_file()
    status, _, _ = run_cli(export.main, [*where, "--out", str(tmp_path / "best.csv")], capsys)
    best = pd.read_csv(tmp_path / "best.csv")
    assert status == 0 and best["task"].tolist() == ["synthetic"]
    status, out, err = run_cli(evaluate.main, where, capsys)
    assert status == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "synthetic task, which has no test set" in err and "--replay" in err
    study = optuna.load_study(study_name="mnist-weight-decay", storage=url)
    assert TEST_ATTR not in study.user_attrs
    val = load_synthetic()
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path / "artifacts")
    for model in (load_model(study, 0, store), load_best(storage=url)):
        trial = study.trials[getattr(model, "trial_number", 0)]
        _, accuracy = score(model, val.val_x, val.val_y)
        assert accuracy == pytest.approx(trial.user_attrs["val_accuracy"], abs=1e-9)
