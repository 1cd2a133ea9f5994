"""The study simulator, and the edge search measured on it over many study seeds.

The simulator runs the real driver, sampler, pruner and constraint on curves instead of
training, so a 50-trial study takes well under a second: enough to hold the search to its
worst case over 50 seeds, with edges and limits drawn anew for each.
"""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from search.config import StudyConfig
from search.engine.simulate import CurvePool, EdgeCurves, MeasuredCurves, regret, simulate_study
from search.training.train import DivergedError, EpochMetrics


def test_curve_pool_reads_each_members_epochs_off_its_curve() -> None:
    def curve(weight_decay: float, seed: int) -> list[tuple[float, float]] | None:
        if weight_decay > 1:
            return None  # diverges
        return [(0.5 + seed / 10, weight_decay), (0.6 + seed / 10, weight_decay)]

    pool = CurvePool(curve, capacity=2)
    pool.add(7, seed=1, weight_decay=0.25)
    pool.add(8, seed=2, weight_decay=2.0)
    with pytest.raises(ValueError, match="full"):
        pool.add(9, seed=3, weight_decay=0.5)
    first = pool.train_epoch()
    assert first[7] == EpochMetrics(1, 0.0, 0.6, 0.0, 0.25, 0.0)
    assert isinstance(first[8], DivergedError)
    pool.remove(8)
    second = pool.train_epoch()
    assert list(second) == [7]
    assert isinstance(second[7], EpochMetrics) and second[7].train_accuracy == 0.7
    assert len(pool) == 1


def test_measured_curves_follow_the_mean_plus_one_real_runs_deviation() -> None:
    runs = [
        [[[0.90, 0.80]], [[0.92, 0.82]]],  # weight decay 1e-4: two runs of one epoch
        [[[0.70, 0.60]]],  # 1e-2
        [None],  # 1: diverged
    ]
    curves = MeasuredCurves([1e-4, 1e-2, 1.0], runs)
    # Halfway in log between the means (0.91, 0.81) and (0.70, 0.60), plus a deviation of
    # -0.01 (seed 0: the first run at 1e-4) or +0.01 (seed 1: the second).
    assert curves(1e-3, seed=0) == [pytest.approx((0.795, 0.695))]
    assert curves(1e-3, seed=1) == [pytest.approx((0.815, 0.715))]
    assert curves(1e-4, seed=1) == [pytest.approx((0.92, 0.82))]  # on a grid point: its run
    assert curves(1e-6, seed=0) == [pytest.approx((0.90, 0.80))]  # held at the grid's end
    assert curves(0.2, seed=0) is None  # nearest to a run that diverged


def test_edge_curves_cross_the_limit_at_the_edge_and_early_far_below_it() -> None:
    curves = EdgeCurves(edge=3e-3, noise=0.0)
    assert curves(3e-3, seed=0)[-1][0] == pytest.approx(0.95)
    far_below = [train for train, _ in curves(1e-5, seed=0)]
    assert far_below[0] < 0.95 < far_below[1]  # over the limit in its second epoch
    above = [val for _, val in (curves(w, 0)[-1] for w in (3e-3, 6e-3, 3e-2))]
    assert above == sorted(above, reverse=True)  # validation falls with weight decay
    weight_decay, _ = EdgeCurves(edge=3e-3).optimum()
    assert 3e-3 < weight_decay < 3e-3 * 1.2  # feasible in 80% of seeds: just above the edge


def drawn(seed: int) -> tuple[EdgeCurves, float]:
    """An edge anywhere in 1.8 decades and a limit of 0.90, 0.95 or 0.97, drawn per seed."""
    rng = np.random.default_rng([seed, 0xED6E])
    limit = float(rng.choice([0.90, 0.95, 0.97]))
    return EdgeCurves(edge=float(10 ** rng.uniform(-3.5, -1.7)), limit=limit), limit


@pytest.mark.slow
@pytest.mark.parametrize(("trials", "worst"), [(50, 0.003), (25, 0.004)])
def test_simulated_studies_land_within_the_target_over_50_seeds(trials: int, worst: float) -> None:
    """The issue's targets: at most 0.3 points below the optimum at 50 trials, 0.4 at 25."""
    distances = []
    for seed in range(50):
        curves, limit = drawn(seed)
        config = StudyConfig(trials=trials, seed=seed, max_train_acc=limit)
        study = simulate_study(config, curves, capacity=16)
        distances.append(regret(study, curves.optimum(seeds=32)[1]))
    assert max(distances) <= worst
    assert all(math.isfinite(d) for d in distances)


class Shifted:
    """``curves`` with every validation accuracy lowered by ``shift``: a worse recipe."""

    def __init__(self, curves: EdgeCurves, shift: float) -> None:
        self.curves, self.shift = curves, shift

    def __call__(self, weight_decay: float, seed: int) -> list[tuple[float, float]]:
        return [(train, val - self.shift) for train, val in self.curves(weight_decay, seed)]


def recipe_problem(seed: int) -> tuple[dict[tuple[str, bool], Shifted], dict, tuple[str, bool]]:
    """Six recipes, each with its own edge anywhere in 2.8 decades, a point apart in what
    their edges score: their curves, their optima, and the best recipe."""
    rng = np.random.default_rng([seed, 0xF011])
    combos = list(itertools.product(("adam", "adamw", "sgd"), (True, False)))
    shifts = rng.permutation([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])
    curves, optima = {}, {}
    for combo, shift in zip(combos, shifts, strict=True):
        edge = EdgeCurves(edge=float(10 ** rng.uniform(-4.5, -1.7)))
        curves[combo] = Shifted(edge, float(shift))
        optima[combo] = edge.optimum(seeds=32)[1] - float(shift)
    return curves, optima, max(optima, key=optima.__getitem__)


@pytest.mark.slow
def test_full_search_space_finds_the_best_recipes_edge_over_20_seeds() -> None:
    """Mixed optimizers with a known edge each: the study lands on the best recipe's edge.

    Every recipe whose trials scored above the best feasible one has its own edge bisected
    (``EdgeSampler.anchors``); anchored on the best trial's recipe alone, as before, the
    study picked the best recipe in 14 of these 20 seeds and ended 1.8 points below it.
    """
    distances, right = [], 0
    for seed in range(20):
        curves, optima, best_recipe = recipe_problem(seed)
        config = StudyConfig(trials=50, seed=seed, search_space="full")
        study = simulate_study(config, curves, capacity=16)
        best = study.best_trial
        right += (best.params["optimizer"], best.params["decay_biases"]) == best_recipe
        distances.append(regret(study, optima[best_recipe]))
    assert right >= 17
    assert statistics.median(distances) <= 0.001
    assert max(distances) <= 0.02
