"""Training and the objective on a tiny real-MNIST subset: metrics, constraint, pruning."""

from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState

from search.config import StudyConfig
from search.data.splits import Splits
from search.engine.objective import projected_train_accuracy
from search.study.history import trial_history
from search.study.record import CONSTRAINT, TrialFacts, record_best_feasible
from search.training.seeds import trial_seed
from search.training.train import EpochMetrics, init_model, train
from tests.helpers import enqueued_study


def history(splits: Splits, config: StudyConfig, weight_decay: float, seed: int) -> list[dict]:
    model = init_model(seed)
    return [m.as_dict() for m in train(model, splits, config.recipe(weight_decay), config, seed)]


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_train_same_seed_gives_identical_metrics(tiny_splits: Splits) -> None:
    config = StudyConfig(epochs=2)
    first = history(tiny_splits, config, 1e-4, seed=7)
    second = history(tiny_splits, config, 1e-4, seed=7)
    other = history(tiny_splits, config, 1e-4, seed=8)
    assert without_time(first) == without_time(second)
    assert without_time(first) != without_time(other)


def test_train_reports_each_epoch_with_sane_values(tiny_splits: Splits) -> None:
    rows = history(tiny_splits, StudyConfig(epochs=3), 1e-5, seed=0)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert 0 < row["train_loss"] < math.log(10) + 0.5
        assert 0.5 < row["val_accuracy"] <= 1
    # 2,000 images, 3 epochs: the model learns, so the running training loss falls.
    assert rows[2]["train_loss"] < rows[0]["train_loss"]


def test_weight_decay_lowers_training_accuracy(tiny_splits: Splits) -> None:
    config = StudyConfig(epochs=2)
    weak = history(tiny_splits, config, 1e-6, seed=0)[-1]
    strong = history(tiny_splits, config, 1e-1, seed=0)[-1]
    assert strong["train_accuracy"] < weak["train_accuracy"] - 0.03


def test_trial_seed_depends_on_study_seed_and_number_only() -> None:
    assert trial_seed(0, 3) == trial_seed(0, 3)
    assert len({trial_seed(0, n) for n in range(100)}) == 100
    assert trial_seed(0, 3) != trial_seed(1, 3)


def test_objective_stores_history_metrics_and_constraint(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    study = enqueued_study(tiny_config.replace(max_train_acc=1.0), tiny_splits, [1e-4])
    (trial,) = study.trials
    attrs = trial.user_attrs
    assert trial.state == TrialState.COMPLETE
    history = trial_history(trial)
    assert [h["epoch"] for h in history] == [1, 2]
    assert trial.intermediate_values == {h["epoch"]: h["val_accuracy"] for h in history}
    assert trial.value == attrs["val_accuracy"] == history[-1]["val_accuracy"]
    assert attrs["train_accuracy"] == history[-1]["train_accuracy"]
    assert attrs["epochs_run"] == 2 and attrs["duration_s"] > 0
    assert attrs["seed"] == trial_seed(tiny_config.seed, 0)
    assert trial.constraints[CONSTRAINT] == pytest.approx(attrs["train_accuracy"] - 1.0)
    # Mirrored in the legacy list form, the only one optuna-dashboard 0.21 shows.
    assert trial.system_attrs["constraints"] == [trial.constraints[CONSTRAINT]]
    assert attrs["feasible"] is True


def test_constraint_marks_infeasible_and_best_trial_is_feasible(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    config = tiny_config.replace(constraint_pruning=False)
    weak = history(tiny_splits, config, 1e-6, trial_seed(config.seed, 0))[-1]
    strong = history(tiny_splits, config, 1e-1, trial_seed(config.seed, 1))[-1]
    # The weakly regularised trial validates better but trains above the limit set between them.
    assert weak["val_accuracy"] > strong["val_accuracy"]
    limit = (weak["train_accuracy"] + strong["train_accuracy"]) / 2
    study = enqueued_study(config.replace(max_train_acc=limit), tiny_splits, [1e-6, 1e-1])
    infeasible, feasible = study.trials
    assert infeasible.state == feasible.state == TrialState.COMPLETE
    assert infeasible.user_attrs["feasible"] is False and infeasible.constraints[CONSTRAINT] > 0
    assert feasible.user_attrs["feasible"] is True and feasible.constraints[CONSTRAINT] <= 0
    assert infeasible.value > feasible.value
    assert study.best_trial.number == feasible.number
    record_best_feasible(study)
    assert study.user_attrs["best_feasible_trial"]["number"] == feasible.number


def test_no_feasible_trial_means_no_best_trial(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    config = tiny_config.replace(max_train_acc=0.01, constraint_pruning=False)
    study = enqueued_study(config, tiny_splits, [1e-3])
    assert study.trials[0].state == TrialState.COMPLETE
    assert study.trials[0].user_attrs["feasible"] is False
    with pytest.raises(ValueError, match="feasible"):
        _ = study.best_trial


def test_constraint_pruning_stops_an_infeasible_trial_early(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    config = tiny_config.replace(epochs=4, max_train_acc=0.5)
    study = enqueued_study(config, tiny_splits, [1e-6])
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["epochs_run"] < 4
    assert trial.user_attrs["pruned_reason"].startswith("infeasible: running train accuracy")
    assert trial.constraints[CONSTRAINT] > 0 and trial.user_attrs["feasible"] is False
    facts = TrialFacts.read(trial)  # the typed record of the same trial
    assert facts.stop is not None and facts.stop.kind == "over_limit"
    assert facts.stop.reason == trial.user_attrs["pruned_reason"]
    assert facts.outcome is not None and facts.outcome.epochs_run < 4
    assert facts.projected_train_accuracy is not None
    assert facts.projected_train_accuracy >= facts.outcome.train_accuracy
    assert trial.constraints[CONSTRAINT] == pytest.approx(facts.projected_train_accuracy - 0.5)
    assert facts.seed == trial_seed(config.seed, 0) and facts.parallel_trials >= 1
    assert facts.duration_s is not None and facts.duration_s > 0


def test_no_constraint_pruning_trains_every_epoch(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    config = tiny_config.replace(epochs=3, max_train_acc=0.5, constraint_pruning=False)
    (trial,) = enqueued_study(config, tiny_splits, [1e-6]).trials
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["epochs_run"] == 3
    assert trial.user_attrs["feasible"] is False


def test_median_pruner_prunes_a_clearly_worse_trial(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    # Five good trials complete (the pruner's startup), then one whose huge decay cripples it.
    config = tiny_config.replace(epochs=6, max_train_acc=1.0, wd_high=10.0)
    study = enqueued_study(config, tiny_splits, [1e-5] * 5 + [10.0])
    *good, bad = study.trials
    assert all(t.state == TrialState.COMPLETE for t in good)
    assert bad.state == TrialState.PRUNED
    assert bad.user_attrs["pruned_reason"] == "pruned by the median pruner at epoch 4"
    stop = TrialFacts.read(bad).stop
    assert stop is not None and stop.kind == "pruned"
    assert (
        TrialFacts.read(good[0]).stop is None
        and TrialFacts.read(bad).projected_train_accuracy is None
    )
    assert bad.user_attrs["epochs_run"] == 4  # epochs 1-3 are warm-up, never judged


def epochs(*accuracies: float) -> list[EpochMetrics]:
    """A trial's history with these training accuracies, epoch 1 on."""
    return [EpochMetrics(i + 1, 0.1, a, 0.1, 0.9, 1.0) for i, a in enumerate(accuracies)]


def test_projected_train_accuracy_carries_the_last_error_factor_to_the_end() -> None:
    # Error 0.06 -> 0.049 is a factor of 49/60 an epoch, carried over one more epoch.
    assert projected_train_accuracy(epochs(0.940, 0.951), 3) == pytest.approx(
        1 - 0.049 * 0.049 / 0.06
    )
    assert projected_train_accuracy(epochs(0.951), 10) == pytest.approx(1 - 0.049**10)
    assert projected_train_accuracy(epochs(0.96, 0.95), 10) == 0.95  # never below measured
    assert projected_train_accuracy(epochs(0.90, 0.96), 2) == 0.96  # the last epoch: measured


def test_projected_train_accuracy_ranks_trials_the_old_cap_tied() -> None:
    """Carried linearly and capped at 100%, all four projected exactly 1.0 from epoch 2 or 3."""
    crossed = {
        "far over, at epoch 2": epochs(0.93, 0.97),
        "over, at epoch 2": epochs(0.92, 0.955),
        "far over, at epoch 3": epochs(0.90, 0.94, 0.965),
        "just over, at epoch 3": epochs(0.90, 0.93, 0.951),
    }
    projected = {name: projected_train_accuracy(h, 10) for name, h in crossed.items()}
    assert all(0.95 < p < 1.0 for p in projected.values())
    assert list(projected) == sorted(projected, key=projected.__getitem__, reverse=True)
