"""Replay whole studies on learning curves instead of training: the edge search's test bench.

Where a study lands depends on which trials its sampler proposes, which depends on what each
trial reported and when: an infeasible trial stops at epoch 2, a feasible one reports ten
epochs later. ``CurvePool`` stands in for the trial pool and reads each member's epochs off a
curve, a function of (weight decay, seed), so the real driver (``run_pool``: the budget, the
held-back trials, the pruner, the constraint and its projection, the sampler) runs a 50-trial
study without training a network, in a small fraction of a real study's time (real studies'
times: docs/search-quality.md). That makes it cheap to measure a sampling rule over a hundred
study seeds, which real studies can't afford.

The curves it replays, and the noise-free truth it is scored against, are in
``search.benchmarks.truth``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from search.config import StudyConfig
from search.engine.drive import run_pool
from search.engine.strategy import make_pruner, make_sampler
from search.recipe import Recipe
from search.study.record import Candidate
from search.study.study import create_study
from search.training.train import DivergedError, EpochMetrics

# (weight decay, seed) -> each epoch's (running training accuracy, validation accuracy[, final
# weights' training accuracy]), or None for a trial whose training diverges.
Curve = Callable[[float, int], Sequence[Sequence[float]] | None]
# A curve per (optimizer, decay_biases): a --search-space full study's recipes, each with an
# edge of its own.
RecipeCurves = Mapping[tuple[str, bool], Curve]


class CurvePool:
    """A trial pool that trains nothing: each member's epochs are read off ``curve``.

    Losses are not simulated (reported as 0) and an epoch takes no time.
    """

    def __init__(self, curve: Curve | RecipeCurves, capacity: int) -> None:
        self.curve = curve
        self.capacity = capacity
        # key -> (its curve, or None if it diverges; epochs done)
        self.members: dict[int, tuple[Sequence[Sequence[float]] | None, int]] = {}
        self.slots: dict[int, int] = {}  # key -> its slot, as a real pool fills them
        self.passes = 0  # epochs trained: what a study's wall time grows with in a real pool

    def __len__(self) -> int:
        return len(self.members)

    def add(self, key: int, seed: int, recipe: Recipe, slot: int | None = None) -> None:
        if len(self.members) >= self.capacity:
            raise ValueError(f"the pool is full ({self.capacity} members)")
        curve = self.curve
        if isinstance(curve, Mapping):
            curve = curve[(recipe.optimizer, recipe.decay_biases)]
        self.members[key] = (curve(recipe.weight_decay, seed), 0)
        taken = set(self.slots.values())
        self.slots[key] = min(s for s in range(self.capacity) if s not in taken)

    def remove(self, key: int) -> None:
        del self.members[key]
        del self.slots[key]

    def slot(self, key: int) -> int:
        return self.slots[key]

    def train_epoch(
        self, on_step: Callable[[], None] | None = None
    ) -> dict[int, EpochMetrics | DivergedError]:
        self.passes += 1
        results: dict[int, EpochMetrics | DivergedError] = {}
        for key, (points, done) in list(self.members.items()):
            if points is None:
                results[key] = DivergedError("the simulated training loss is nan in epoch 1")
                continue
            row = points[done]
            final = row[2] if len(row) > 2 else math.nan
            self.members[key] = (points, done + 1)
            results[key] = EpochMetrics(done + 1, 0.0, row[0], 0.0, row[1], 0.0, final)
        return results

    def state_dict(self, key: int) -> dict[str, Any]:
        raise NotImplementedError("a simulated trial has no weights")


def simulate_study(
    config: StudyConfig, curve: Curve | RecipeCurves, capacity: int
) -> optuna.Study:
    """One study of ``config`` (its seed, budget, sampler, limit) run on ``curve``, in memory;
    a ``--search-space full`` study on a curve per recipe."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = config.replace(storage="sqlite:///:memory:")
    storage = optuna.storages.InMemoryStorage()
    study = create_study(storage, config, {}, make_sampler(config), make_pruner(config))
    run_pool(study, config, CurvePool(curve, capacity))
    return study


def simulated_recommendation(
    study: optuna.Study, config: StudyConfig, curve: Curve | RecipeCurves
) -> Candidate | None:
    """What the study's seed confirmation would recommend, its runs read off ``curve`` with
    the confirmation's own seeds, as ``search.engine.confirm`` chooses; None without a
    feasible trial."""
    from search.config import MAX_ROUNDS
    from search.engine.choose import candidates, choose_confirmed
    from search.engine.confirm import confirmation_seed

    chosen = candidates(study, config.confirm_candidates * MAX_ROUNDS)
    if not chosen:
        return None

    def runs(trial: optuna.trial.FrozenTrial) -> list[tuple[float, float]]:
        wd = float(trial.params["weight_decay"])
        this = curve if not isinstance(curve, Mapping) else curve[recipe_key(trial)]
        found = []
        for r in range(config.confirm_seeds):
            points = this(wd, confirmation_seed(config.seed, trial.number, r))
            if points is not None:
                row = points[-1]
                train = row[2] if config.train_accuracy == "final" else row[0]
                found.append((float(train), float(row[1])))
        return found

    return choose_confirmed(study, chosen, runs, config)


def recipe_key(trial: optuna.trial.FrozenTrial) -> tuple[str, bool]:
    return (str(trial.params.get("optimizer")), bool(trial.params.get("decay_biases")))


@dataclass(frozen=True)
class Spread:
    """A distribution of regrets, in accuracy (0.003 is 0.3 points)."""

    median: float
    p90: float
    worst: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
        return cls(statistics.median(ordered), p90, ordered[-1], len(ordered))

    def __str__(self) -> str:
        return (
            f"median {100 * self.median:.2f}, p90 {100 * self.p90:.2f}, "
            f"worst {100 * self.worst:.2f} points over {self.n} seeds"
        )
