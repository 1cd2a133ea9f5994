"""The one driver of runs through epochs (``search.training.runs``): results in key order,
hooks in their places, a diverged run out of the pool once its result is told. On the real
pool where numbers matter (``train_runs`` equals the pool trained by hand), and on the study
simulator's curve pool where only the order of events does."""

from __future__ import annotations

import torch

from search.benchmarks.simulate import CurvePool
from search.config import StudyConfig
from search.data.splits import Splits
from search.training.pool import TrialPool
from search.training.runs import Result, Run, train_pass, train_runs
from search.training.seeds import trial_seed
from search.training.train import DivergedError, EpochMetrics


def curve(weight_decay: float, seed: int) -> list[tuple[float, float]] | None:
    """Three epochs of rising accuracy; a weight decay over 1 diverges at once."""
    if weight_decay > 1:
        return None
    return [(0.5 + epoch / 10, weight_decay) for epoch in range(3)]


def test_train_runs_tells_every_result_in_key_order_and_drops_a_diverged_run() -> None:
    recipe = StudyConfig().recipe
    pool = CurvePool(curve, capacity=3)
    runs = [Run(9, 1, recipe(0.3)), Run(2, 2, recipe(5.0)), Run(4, 3, recipe(0.1))]
    told: list[tuple[int, int | str]] = []
    passes: list[tuple[int, int]] = []

    def record(key: int, result: Result) -> None:
        told.append((key, "diverged" if isinstance(result, DivergedError) else result.epoch))

    train_runs(pool, runs, 3, record, lambda epoch, trained: passes.append((epoch, trained)))
    assert told == [(2, "diverged"), (4, 1), (9, 1), (4, 2), (9, 2), (4, 3), (9, 3)]
    assert passes == [(1, 3), (2, 2), (3, 2)]  # the diverged run trained its one epoch
    assert sorted(pool.members) == [4, 9] and pool.passes == 3


def test_train_runs_stops_once_every_run_diverged() -> None:
    pool = CurvePool(curve, capacity=2)
    passes: list[int] = []
    train_runs(
        pool, [Run(0, 0, StudyConfig().recipe(2.0))], 5, on_pass=lambda e, n: passes.append(e)
    )
    assert passes == [1] and len(pool) == 0


def test_train_pass_says_the_epoch_is_trained_before_any_result() -> None:
    pool = CurvePool(curve, capacity=2)
    pool.add(1, 0, StudyConfig().recipe(0.1))
    pool.add(0, 0, StudyConfig().recipe(0.2))
    events: list[object] = []
    trained = train_pass(
        pool, lambda key, r: events.append(key), on_trained=lambda: events.append("trained")
    )
    assert trained == 2 and events == ["trained", 0, 1]
    assert len(pool) == 2  # the caller owns what happens to a member in a pass


def test_train_runs_trains_the_pool_as_by_hand(tiny_splits: Splits) -> None:
    config = StudyConfig(epochs=2, device="cpu")
    runs = [Run(k, trial_seed(0, k), config.recipe(wd)) for k, wd in enumerate((1e-4, 1e-2))]
    driven: dict[int, list[EpochMetrics]] = {0: [], 1: []}

    def record(key: int, result: Result) -> None:
        assert isinstance(result, EpochMetrics)
        driven[key].append(result)

    pool = TrialPool(tiny_splits, config, capacity=2)
    train_runs(pool, runs, config.epochs, record)
    by_hand = TrialPool(tiny_splits, config, capacity=2)
    for run in runs:
        by_hand.add(run.key, run.seed, run.recipe)
    for epoch in range(config.epochs):
        for key, result in by_hand.train_epoch().items():
            assert isinstance(result, EpochMetrics)
            mine = driven[key][epoch]
            assert {k: v for k, v in mine.as_dict().items() if k != "seconds"} == {
                k: v for k, v in result.as_dict().items() if k != "seconds"
            }
    for key in (0, 1):
        for name, tensor in pool.state_dict(key).items():
            assert torch.equal(tensor, by_hand.state_dict(key)[name]), name
