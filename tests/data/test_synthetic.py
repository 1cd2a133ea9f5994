"""The synthetic task of the pipeline seed: the table, its splits, its network, and search.run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from models import SimpleNN, TabularNN
from search import run
from search.config import StudyConfig
from search.data import synthetic
from search.data.synthetic import generate, load_synthetic
from search.data.task import TaskError
from search.data.tasks import load_task
from search.study.history import trial_history
from search.training.seeds import trial_seed
from search.training.train import init_model, train
from tests.helpers import run_cli


def test_load_synthetic_has_the_seed_pipelines_shapes() -> None:
    data = load_synthetic()
    assert data.train_x.shape == (800, 10) and data.val_x.shape == (200, 10)
    assert data.train_y.shape == (800,) and data.val_y.shape == (200,)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert set(data.train_y.tolist()) == set(data.val_y.tolist()) == {0, 1}
    assert data.validation == "holdout"
    assert "seed=0 rows=1000 features=10" in data.checksums["synthetic"]


def test_load_synthetic_standardises_with_training_statistics_only() -> None:
    raw_x, _ = generate()
    data = load_synthetic()
    torch.testing.assert_close(data.train_x.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.train_x.std(0, correction=0), torch.ones(10))
    # Validation rows are scaled by the training split's statistics, not their own.
    train, val = raw_x[:800], raw_x[800:]
    expected = (val - train.mean(0)) / train.std(0)
    torch.testing.assert_close(data.val_x, torch.from_numpy(expected))
    assert data.val_x.mean(0).abs().max() > 0.05


def test_generate_depends_on_the_seed_only() -> None:
    x, y = generate(0)
    again_x, again_y = generate(0)
    other_x, _ = generate(1)
    assert np.array_equal(x, again_x) and np.array_equal(y, again_y)
    assert not np.array_equal(x, other_x)
    # Raw columns have their own offsets and scales: standardising is not a no-op.
    assert np.ptp(x.std(0)) > 0.5 and np.abs(x.mean(0)).max() > 0.5


def test_load_synthetic_subset_keeps_the_first_rows() -> None:
    full, small = load_synthetic(), load_synthetic(subset=100)
    assert small.train_x.shape == (100, 10) and small.val_x.shape == (100, 10)
    assert torch.equal(small.train_y, full.train_y[:100])
    assert small.checksums == full.checksums


def test_load_task_picks_the_task_data() -> None:
    data = load_task(StudyConfig(task="synthetic", subset=50))
    assert data.train_x.shape == (50, 10)


def test_tabular_nn_returns_logits_and_probabilities() -> None:
    model = TabularNN(10, 16, 2)
    x = torch.randn(5, 10)
    assert model(x).shape == (5, 2)
    probabilities = model.predict_proba(x)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(5))
    torch.testing.assert_close(probabilities, torch.softmax(model(x), dim=1))


def test_init_model_builds_the_model_of_the_task() -> None:
    tabular = init_model(3, "cpu", "synthetic")
    assert isinstance(tabular, TabularNN)
    assert (tabular.fc1.in_features, tabular.fc1.out_features) == (10, synthetic.HIDDEN)
    assert tabular.fc2.out_features == 2
    assert isinstance(init_model(3), SimpleNN)
    again = init_model(3, "cpu", "synthetic")
    assert isinstance(again, TabularNN) and torch.equal(tabular.fc1.weight, again.fc1.weight)
    with pytest.raises(TaskError, match="'cifar' is neither a built-in task"):
        init_model(3, "cpu", "cifar")


def final_epoch(weight_decay: float, epochs: int) -> tuple[float, float, float]:
    """(train accuracy, validation accuracy, validation loss) after ``epochs`` epochs."""
    seed = trial_seed(0, 0)
    config = StudyConfig(task="synthetic", epochs=epochs)
    model = init_model(seed, "cpu", "synthetic")
    last = list(train(model, load_synthetic(), config.recipe(weight_decay), config, seed))[-1]
    return last.train_accuracy, last.val_accuracy, last.val_loss


@pytest.mark.slow
def test_weight_decay_curbs_overfitting_on_the_synthetic_task() -> None:
    # Long enough to memorise the 800 rows: unregularised, training accuracy runs away from
    # validation; with decay the gap closes and validation loss is lower.
    free_train, free_val, free_loss = final_epoch(0.0, epochs=100)
    decayed_train, decayed_val, decayed_loss = final_epoch(3e-2, epochs=100)
    assert free_train - free_val > 0.12
    assert decayed_train - decayed_val < 0.08
    assert decayed_val > free_val and decayed_loss < free_loss - 0.05


def test_run_trains_the_synthetic_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["--task", "synthetic", "--trials", "2", "--epochs", "2", "--storage", storage]
    status, out, _ = run_cli(run.main, [*argv, "--device", "cpu"], capsys)
    assert status == 0 and "2 of 2 trials finished" in out
    study = optuna.load_study(study_name=StudyConfig.study_name, storage=storage)
    assert study.user_attrs["config"]["task"] == "synthetic"
    assert (study.user_attrs["train_size"], study.user_attrs["val_size"]) == (800, 200)
    assert "table_md5" in study.user_attrs["data_checksums"]
    assert all(len(trial_history(t)) == 2 for t in study.trials)


def test_run_refuses_test_validation_for_the_synthetic_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--task", "synthetic", "--validation", "test"]
    status, _, err = run_cli(run.main, argv, capsys)
    assert status == 2
    assert "--validation test: the synthetic task has no test set" in err
    assert len(err.strip().splitlines()) == 1
