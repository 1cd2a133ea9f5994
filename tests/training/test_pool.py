"""The trial pool: a pooled trial is the same trial as alone, and the pool drives a study."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from search.config import StudyConfig
from search.data.splits import Splits
from search.data.synthetic import load_synthetic
from search.engine.budget import FINISHED
from search.engine.drive import run_pool, run_trials
from search.engine.objective import Objective, suggest_weight_decay
from search.engine.strategy import new_study
from search.study.artifacts import artifact_store, load_state_dict
from search.study.history import trial_history
from search.study.storage import make_storage
from search.training.pool import TrialPool, default_parallel_trials
from search.training.seeds import trial_seed
from search.training.train import (
    DivergedError,
    EpochMetrics,
    evaluate,
    init_model,
    train,
)
from tests.helpers import GRACE_S, age_heartbeats

WEIGHT_DECAYS = [1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1]


def reference(
    splits: Splits, config: StudyConfig, seed: int, weight_decay: float
) -> list[EpochMetrics]:
    """The same trial trained alone by the single-trial loop."""
    return list(train(init_model(seed), splits, config.recipe(weight_decay), config, seed))


def assert_same_metrics(pooled: list[EpochMetrics], alone: list[EpochMetrics]) -> None:
    assert [m.epoch for m in pooled] == [m.epoch for m in alone]
    for p, a in zip(pooled, alone, strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert getattr(p, key) == pytest.approx(getattr(a, key), rel=1e-5, abs=1e-6), (
                f"{key} of epoch {p.epoch}"
            )


def train_pool(pool: TrialPool, epochs: int) -> dict[int, list[EpochMetrics]]:
    histories: dict[int, list[EpochMetrics]] = {}
    for _ in range(epochs):
        for key, metrics in pool.train_epoch().items():
            assert isinstance(metrics, EpochMetrics)
            histories.setdefault(key, []).append(metrics)
    return histories


def test_pool_of_8_matches_each_trial_trained_alone(tiny_splits: Splits) -> None:
    config = StudyConfig(epochs=2)
    pool = TrialPool(tiny_splits, config, capacity=8)
    for number, weight_decay in enumerate(WEIGHT_DECAYS):
        pool.add(number, trial_seed(config.seed, number), config.recipe(weight_decay))
    histories = train_pool(pool, config.epochs)
    # 2,000 images in batches of 64 end in a partial batch of 16: handled as the reference does.
    assert len(tiny_splits.train_x) % config.batch_size != 0
    for number, weight_decay in enumerate(WEIGHT_DECAYS):
        seed = trial_seed(config.seed, number)
        model = init_model(seed)
        alone = list(train(model, tiny_splits, config.recipe(weight_decay), config, seed))
        assert_same_metrics(histories[number], alone)
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(pool.state_dict(number)[name], tensor, rtol=1e-4, atol=1e-5)


def test_pool_refilled_slot_starts_its_own_bias_correction(tiny_splits: Splits) -> None:
    config = StudyConfig(epochs=3)
    pool = TrialPool(tiny_splits, config, capacity=4)
    for number in range(4):
        pool.add(number, trial_seed(0, number), config.recipe(WEIGHT_DECAYS[number]))
    first = train_pool(pool, 1)
    # Trial 1 leaves after one epoch; trial 9 joins while the others start their epoch 2.
    pool.remove(1)
    pool.add(9, trial_seed(0, 9), config.recipe(1e-3))
    later = train_pool(pool, 2)
    steps_per_epoch = -(-len(tiny_splits.train_x) // config.batch_size)
    # Trial 9 took the freed slot 1; nobody else moved.
    assert pool.keys() == [0, 9, 2, 3] and pool.slot(9) == 1
    steps = {key: pool.steps[pool.slot(key)].item() for key in pool.keys()}
    assert steps == {0: 3 * steps_per_epoch, 9: 2 * steps_per_epoch, 2: 3 * steps_per_epoch,
                     3: 3 * steps_per_epoch}  # fmt: skip
    assert [m.epoch for m in later[9]] == [1, 2]
    assert_same_metrics(
        later[9], reference(tiny_splits, config.replace(epochs=2), trial_seed(0, 9), 1e-3)
    )
    # The others kept their slots and their state.
    for number in (0, 2, 3):
        alone = reference(tiny_splits, config, trial_seed(0, number), WEIGHT_DECAYS[number])
        assert_same_metrics(first[number] + later[number], alone)


def pooled_trial_7(splits: Splits, config: StudyConfig, schedule: str) -> tuple[list, dict]:
    """Trial 7 trained in a pool of 4 beside ``schedule``'s companions; its metrics without
    wall time, and its final weights.

    Schedules: ``alone``; ``last`` (joins after three others, so sits in the last slot);
    ``churn`` (joins between two; after epoch 1 its left neighbour leaves and a newcomer takes
    that slot, after epoch 2 its right neighbour leaves).
    """
    pool = TrialPool(splits, config, capacity=4)

    def add(key: int) -> None:
        pool.add(key, trial_seed(0, key), config.recipe(WEIGHT_DECAYS[key % len(WEIGHT_DECAYS)]))

    before, after = {"alone": ([], []), "last": ([0, 1, 2], []), "churn": ([0], [1])}[schedule]
    for key in [*before, 7, *after]:
        add(key)
    history = []
    for epoch in range(1, config.epochs + 1):
        history.append(pool.train_epoch()[7])
        if schedule == "churn" and epoch == 1:
            pool.remove(0)
            add(20)
        if schedule == "churn" and epoch == 2:
            pool.remove(1)
    metrics = [{k: v for k, v in m.as_dict().items() if k != "seconds"} for m in history]
    return metrics, pool.state_dict(7)


@pytest.mark.parametrize("schedule", ["last", "churn"])
def test_pool_trial_is_bit_identical_whatever_its_slot_and_companions(
    tiny_splits: Splits, schedule: str
) -> None:
    """Same seed, decay and capacity: the very same numbers, so a replay can compare with ==."""
    config = StudyConfig(epochs=3)
    alone, alone_weights = pooled_trial_7(tiny_splits, config, "alone")
    metrics, weights = pooled_trial_7(tiny_splits, config, schedule)
    assert metrics == alone
    for name, tensor in weights.items():
        assert torch.equal(tensor, alone_weights[name]), name


def test_pool_weight_decay_is_per_slot(tiny_splits: Splits) -> None:
    config = StudyConfig(epochs=2)
    pool = TrialPool(tiny_splits, config, capacity=2)
    seed = trial_seed(0, 0)
    pool.add(0, seed, config.recipe(1e-6))
    pool.add(
        1, seed, config.recipe(1e-1)
    )  # same initial weights and batches, only the decay differs
    histories = train_pool(pool, config.epochs)
    weak, strong = pool.params[0][0].norm().item(), pool.params[0][1].norm().item()
    assert strong < 0.5 * weak
    assert histories[1][-1].train_accuracy < histories[0][-1].train_accuracy - 0.03


def test_pool_diverged_slot_leaves_the_others_alone(tiny_splits: Splits) -> None:
    config = StudyConfig(epochs=1)
    pool = TrialPool(tiny_splits, config, capacity=2)
    pool.add(0, trial_seed(0, 0), config.recipe(1e-4))
    pool.add(1, trial_seed(0, 1), config.recipe(1e-4))
    pool.params[0][0, 0, 0] = float("nan")  # slot 0's fc1 weight: its loss goes NaN
    results = pool.train_epoch()
    assert isinstance(results[0], DivergedError)
    assert str(results[0]) == "training loss is nan in epoch 1"
    assert isinstance(results[1], EpochMetrics)
    assert_same_metrics([results[1]], reference(tiny_splits, config, trial_seed(0, 1), 1e-4))


# Every recipe the CLI offers: (optimizer, decay_biases), each with a weight decay that does
# something in two epochs (AdamW's decoupled decay is lr * decay per step, so it needs more).
RECIPES = [
    ("adam", True, 3e-3),
    ("adam", False, 3e-3),
    ("adamw", True, 3e-1),
    ("adamw", False, 3e-1),
    ("sgd", True, 3e-3),
    ("sgd", False, 3e-3),
]


@pytest.fixture(scope="module")
def synthetic_splits() -> Splits:
    return load_synthetic()


@pytest.mark.parametrize("task", ["mnist", "synthetic"])
def test_pool_of_mixed_recipes_matches_each_trained_alone(
    tiny_splits: Splits, synthetic_splits: Splits, task: str
) -> None:
    """One pool holds every optimizer and bias rule at once, each slot training as
    ``make_optimizer``'s optimizer trains it alone, on either task's network."""
    splits = tiny_splits if task == "mnist" else synthetic_splits
    config = StudyConfig(epochs=2, task=task)  # type: ignore[arg-type]
    pool = TrialPool(splits, config, capacity=8)
    for number, (optimizer, decay_biases, weight_decay) in enumerate(RECIPES):
        pool.add(
            number, trial_seed(0, number), config.recipe(weight_decay, optimizer, decay_biases)
        )
    histories = train_pool(pool, config.epochs)
    for number, (optimizer, decay_biases, weight_decay) in enumerate(RECIPES):
        seed = trial_seed(0, number)
        model = init_model(seed, "cpu", task)
        recipe = config.recipe(weight_decay, optimizer, decay_biases)
        alone = list(train(model, splits, recipe, config, seed))
        assert_same_metrics(histories[number], alone)
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(pool.state_dict(number)[name], tensor, rtol=1e-4, atol=1e-5)


def test_pool_recipes_differ_where_their_decay_does(tiny_splits: Splits) -> None:
    """Same seed and decay, so any difference is the recipe's: AdamW's decoupled decay is
    weaker than Adam's L2 at the same value, SGD moves far less than Adam in two epochs, and
    undecayed biases end larger than decayed ones."""
    config = StudyConfig(epochs=2)
    pool = TrialPool(tiny_splits, config, capacity=4)
    seed = trial_seed(0, 0)
    for key, (optimizer, decay_biases) in enumerate(
        [("adam", True), ("adamw", True), ("sgd", True), ("adam", False)]
    ):
        pool.add(key, seed, config.recipe(0.1, optimizer, decay_biases))
    train_pool(pool, config.epochs)
    w1, b1 = pool.params[0], pool.params[1]
    norms = [w1[slot].norm().item() for slot in range(4)]
    assert norms[1] > 2 * norms[0]  # AdamW at 0.1 shrinks by 1e-4 a step; Adam's L2 far more
    initial = init_model(seed).fc1.weight.norm().item()
    assert abs(norms[2] - initial) < abs(norms[0] - initial)  # SGD barely moved
    assert b1[3].norm().item() > 1.5 * b1[0].norm().item()


def test_pool_trial_is_bit_identical_whatever_its_companions_train(tiny_splits: Splits) -> None:
    """An AdamW trial without bias decay gives the same numbers beside Adam and SGD slots as
    alone: what a neighbour optimizes with never reaches its slot."""
    config = StudyConfig(epochs=2)

    def run(companions: list[tuple[str, bool, float]]) -> tuple[list, dict]:
        pool = TrialPool(tiny_splits, config, capacity=4)
        for key, (optimizer, decay_biases, weight_decay) in enumerate(companions[:1]):
            pool.add(
                10 + key,
                trial_seed(0, 10 + key),
                config.recipe(weight_decay, optimizer, decay_biases),
            )
        pool.add(7, trial_seed(0, 7), config.recipe(3e-1, "adamw", False))
        for key, (optimizer, decay_biases, weight_decay) in enumerate(companions[1:], 1):
            pool.add(
                10 + key,
                trial_seed(0, 10 + key),
                config.recipe(weight_decay, optimizer, decay_biases),
            )
        history = [pool.train_epoch()[7] for _ in range(config.epochs)]
        metrics = [{k: v for k, v in m.as_dict().items() if k != "seconds"} for m in history]
        return metrics, pool.state_dict(7)

    alone, alone_weights = run([])
    mixed, mixed_weights = run([RECIPES[4], RECIPES[0], RECIPES[1]])
    assert mixed == alone
    for name, tensor in mixed_weights.items():
        assert torch.equal(tensor, alone_weights[name]), name


def test_a_recipe_rejects_an_unknown_optimizer_and_the_pool_another_rate(
    tiny_splits: Splits,
) -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; one of adam, adamw, sgd"):
        StudyConfig().recipe(1e-4, "rmsprop", True)  # type: ignore[arg-type]
    pool = TrialPool(tiny_splits, StudyConfig(), capacity=2)
    with pytest.raises(ValueError, match="trains at lr 0.001, not the recipe's 0.01"):
        pool.add(0, 0, StudyConfig(lr=1e-2).recipe(1e-4))
    assert len(pool) == 0


def test_pool_rejects_full_pool_and_duplicate_key(tiny_splits: Splits) -> None:
    pool = TrialPool(tiny_splits, StudyConfig(), capacity=1)
    pool.add(0, 0, StudyConfig().recipe(1e-4))
    with pytest.raises(ValueError, match="already in the pool"):
        pool.add(0, 0, StudyConfig().recipe(1e-4))
    with pytest.raises(ValueError, match=r"pool is full \(1 slots\)"):
        pool.add(1, 1, StudyConfig().recipe(1e-4))


def test_default_parallel_trials_is_larger_on_a_gpu() -> None:
    cpu = default_parallel_trials(torch.device("cpu"))
    assert 1 < cpu < default_parallel_trials(torch.device("cuda"))


def enqueued_study(config: StudyConfig, weight_decays: list[float], storage: str) -> optuna.Study:
    study = new_study(make_storage(storage), config, {})
    for weight_decay in weight_decays:
        study.enqueue_trial({"weight_decay": weight_decay})
    return study


def without_time(trial: FrozenTrial) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in trial_history(trial)]


def test_run_pool_fills_the_budget_and_calls_callbacks(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    config = tiny_config.replace(trials=5, max_train_acc=1.0)
    study = new_study(make_storage(config.storage_url), config, {})
    told: list[int] = []
    ran = run_pool(
        study,
        config,
        TrialPool(tiny_splits, config, 3),
        callbacks=[lambda s, t: told.append(t.number)],
    )
    assert ran == 5 and sorted(told) == [0, 1, 2, 3, 4]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    assert study.user_attrs["best_feasible_trial"]["number"] == study.best_trial.number
    # The budget is the study's: a re-run has nothing left to do.
    assert run_pool(study, config, TrialPool(tiny_splits, config, 3)) == 0


def test_run_pool_counts_other_workers_running_trials(
    tiny_config: StudyConfig, tiny_splits: Splits, still_clock: list[float]
) -> None:
    config = tiny_config.replace(trials=3, max_train_acc=1.0, grace_period=GRACE_S)
    study = new_study(make_storage(config.storage_url), config, {})
    other = study.ask()  # another worker's trial, running (and, without heartbeats, never failed)
    ran = run_pool(study, config, TrialPool(tiny_splits, config, 4))
    # Two places were free; the pool then waited on the other trial, and took its place only
    # once it had sat still for twice the grace period (search.budget's rule for stuck trials):
    # looks at 0, 1 and 2 grace periods still counted it.
    assert ran == 3 and still_clock[-1] > 2 * GRACE_S
    assert study.trials[other.number].state == TrialState.RUNNING
    assert len(study.get_trials(states=FINISHED)) == 3


def test_run_pool_stores_each_complete_trials_weights(
    tiny_config: StudyConfig, tiny_splits: Splits, tmp_path: Path
) -> None:
    config = tiny_config.replace(trials=2, max_train_acc=1.0)
    study = new_study(make_storage(config.storage_url), config, {})
    store = artifact_store(config.storage_url, tmp_path / "artifacts", create=True)
    run_pool(study, config, TrialPool(tiny_splits, config, 2), artifact_store=store)
    for trial in study.trials:
        model = init_model(0)
        model.load_state_dict(load_state_dict(study, trial.number, store))
        _, accuracy = evaluate(model, tiny_splits.val_x, tiny_splits.val_y)
        assert accuracy == trial.user_attrs["val_accuracy"]


def test_run_pool_prunes_an_infeasible_trial_like_the_single_path(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    config = tiny_config.replace(trials=1, epochs=3, max_train_acc=0.1)
    study = enqueued_study(config, [1e-5], config.storage_url)
    run_pool(study, config, TrialPool(tiny_splits, config, 2))
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["pruned_reason"].startswith("infeasible: running train accuracy")
    assert trial.user_attrs["epochs_run"] == 1 and trial.user_attrs["feasible"] is False


def test_run_pool_prunes_a_diverged_trial_like_the_single_path(
    tiny_config: StudyConfig, tiny_splits: Splits, tmp_path: Path
) -> None:
    x = tiny_splits.train_x.clone()
    x[0, 0] = float("nan")  # every trial meets this image in its first epoch
    broken = Splits(x, tiny_splits.train_y, tiny_splits.val_x, tiny_splits.val_y, "holdout", {})
    config = tiny_config.replace(trials=2)
    pooled = new_study(make_storage(config.storage_url), config, {})
    run_pool(pooled, config, TrialPool(broken, config, 2))
    single = new_study(make_storage(f"sqlite:///{tmp_path / 'single.db'}"), config, {})
    run_trials(single, Objective(config, broken), config)
    for p, s in zip(pooled.trials, single.trials, strict=True):
        assert p.state == s.state == TrialState.PRUNED
        reason = "diverged: training loss is nan in epoch 1"
        assert p.user_attrs["pruned_reason"] == s.user_attrs["pruned_reason"] == reason


def test_run_pool_trials_equal_run_trials_trials(
    tiny_config: StudyConfig, tiny_splits: Splits, tmp_path: Path
) -> None:
    """Pool independence end to end: trial n is the same trial however the study ran."""
    config = tiny_config.replace(trials=4, epochs=3, max_train_acc=0.83)
    weight_decays = [1e-6, 1e-3, 3e-2, 1e-1]
    pooled = enqueued_study(config, weight_decays, config.storage_url)
    run_pool(pooled, config, TrialPool(tiny_splits, config, 3))
    single = enqueued_study(config, weight_decays, f"sqlite:///{tmp_path / 'single.db'}")
    run_trials(single, Objective(config, tiny_splits), config)
    assert {t.state for t in pooled.trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    for p, s in zip(pooled.trials, single.trials, strict=True):
        assert (p.number, p.state, p.params) == (s.number, s.state, s.params)
        assert p.user_attrs.get("pruned_reason") == s.user_attrs.get("pruned_reason")
        for ph, sh in zip(without_time(p), without_time(s), strict=True):
            assert ph == pytest.approx(sh, rel=1e-5, abs=1e-6)


def test_run_pool_fails_running_trials_on_interrupt(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    config = tiny_config.replace(trials=4, max_train_acc=1.0)
    study = enqueued_study(config, [1e-5, 1e-4, 1e-3], config.storage_url)

    def interrupt(study: optuna.Study, trial: FrozenTrial) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pool(study, config, TrialPool(tiny_splits, config, 3), callbacks=[interrupt])
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_run_pool_keeps_heartbeats_and_retries_stale_trials(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    """A crashed worker's trial is failed and retried; the pool's own trials stay alive."""
    storage = RDBStorage(
        tiny_config.storage_url,
        heartbeat_interval=1,
        grace_period=GRACE_S,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
    )
    config = tiny_config.replace(trials=3, max_train_acc=1.0)
    study = new_study(storage, config, {})
    with pytest.warns(UserWarning, match="Heartbeat"):  # the pool silences this one itself
        crashed = study.ask()  # a worker that beat once and died
    suggest_weight_decay(crashed, config)
    storage.record_heartbeat(crashed._trial_id)

    def pause(study: optuna.Study, trial: FrozenTrial) -> None:
        # After every trial, a pause longer than the grace period as the database sees it:
        # every beat aged past it. The crashed trial is then stale at the next claim; the
        # pool's own running trial (the one beside the second told) must not be, so the pool
        # beats before it claims. Half a heartbeat interval of real time makes that beat due
        # by the pool's own clock (it beats every half interval).
        age_heartbeats(storage)
        time.sleep(0.5 * storage.get_heartbeat_interval())

    run_pool(study, config, TrialPool(tiny_splits, config, 2), callbacks=[pause])
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    (retry,) = (t for t in trials if "failed_trial" in t.system_attrs)
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == trials[0].params
    assert len(study.get_trials(states=FINISHED)) == config.trials
