"""Replay whole studies on learning curves instead of training: the edge search's test bench.

Where a study lands depends on which trials its sampler proposes, which depends on what each
trial reported and when: an infeasible trial stops at epoch 2, a feasible one reports ten
epochs later. ``CurvePool`` stands in for the trial pool and reads each member's epochs off a
curve, a function of (weight decay, seed), so the real driver (``run_pool``: the budget, the
held-back trials, the pruner, the constraint and its projection, the sampler) runs a 50-trial
study in about a second instead of a minute and a half. That makes it cheap to measure a
sampling rule over a hundred study seeds, which real studies can't afford.

Two kinds of curves: ``MeasuredCurves``, interpolated from a grid of real MNIST runs
(``python -m search.bench simulate`` trains it once), and ``EdgeCurves``, a cheap analytic
family with its edge wherever a test puts it.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from search.config import StudyConfig
from search.engine.drive import run_pool
from search.engine.strategy import make_pruner, make_sampler
from search.study.record import MIN_FEASIBLE_FRACTION, best_feasible_trial
from search.study.study import create_study
from search.training.train import DivergedError, EpochMetrics

# (weight decay, seed) -> each epoch's (training accuracy, validation accuracy), or None for a
# trial whose training diverges.
Curve = Callable[[float, int], Sequence[tuple[float, float]] | None]
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
        self.members: dict[int, tuple[Sequence[tuple[float, float]] | None, int]] = {}
        self.passes = 0  # epochs trained: what a study's wall time grows with in a real pool

    def __len__(self) -> int:
        return len(self.members)

    def add(
        self,
        key: int,
        seed: int,
        weight_decay: float,
        optimizer: str | None = None,
        decay_biases: bool | None = None,
    ) -> None:
        if len(self.members) >= self.capacity:
            raise ValueError(f"the pool is full ({self.capacity} members)")
        curve = self.curve
        if isinstance(curve, Mapping):
            curve = curve[(str(optimizer), bool(decay_biases))]
        self.members[key] = (curve(weight_decay, seed), 0)

    def remove(self, key: int) -> None:
        del self.members[key]

    def train_epoch(
        self, on_step: Callable[[], None] | None = None
    ) -> dict[int, EpochMetrics | DivergedError]:
        self.passes += 1
        results: dict[int, EpochMetrics | DivergedError] = {}
        for key, (points, done) in list(self.members.items()):
            if points is None:
                results[key] = DivergedError("the simulated training loss is nan in epoch 1")
                continue
            train_accuracy, val_accuracy = points[done]
            self.members[key] = (points, done + 1)
            results[key] = EpochMetrics(done + 1, 0.0, train_accuracy, 0.0, val_accuracy, 0.0)
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


def regret(study: optuna.Study, optimum: float) -> float:
    """How far the study's best feasible trial ends below ``optimum`` (inf if none is)."""
    best = best_feasible_trial(study)
    return math.inf if best is None or best.value is None else optimum - best.value


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


class MeasuredCurves:
    """Curves interpolated from a grid of real runs: one or more seeds at each weight decay.

    A simulated trial follows the grid's mean curve, interpolated in log weight decay between
    the two grid points around its own, plus the deviation of one real run from its own
    point's mean, drawn by the trial's seed from every point with two runs or more. Pooled,
    the deviations carry the seed-to-seed spread of the real runs with as many distinct
    draws as there are runs, where taking a trial's run at its own grid point would give only
    that point's few; trials near the edge land on either side of it as real ones do. A trial
    diverges where the run of its seed at the nearest grid point did.

    Args:
        weight_decays: the grid, ascending.
        runs: for each weight decay, its runs: [training, validation] accuracy per epoch, or
            None for a run that diverged (``search.quality``'s grid ``curves``).
    """

    def __init__(
        self,
        weight_decays: Sequence[float],
        runs: Sequence[Sequence[Sequence[Sequence[float]] | None]],
    ) -> None:
        if len(weight_decays) < 2 or len(runs) != len(weight_decays):
            raise ValueError("a grid of curves needs runs at two weight decays or more")
        self.log_wd = [math.log(w) for w in weight_decays]
        self.runs = runs
        self.means: list[np.ndarray | None] = []
        deviations = []
        for point in runs:
            finished = [np.asarray(run, dtype=float) for run in point if run is not None]
            mean = np.mean(finished, axis=0) if finished else None
            self.means.append(mean)
            if len(finished) > 1:
                deviations += [run - mean for run in finished]
        self.deviations = deviations or [
            np.zeros_like(next(m for m in self.means if m is not None))
        ]

    def __call__(self, weight_decay: float, seed: int) -> list[tuple[float, float]] | None:
        x = math.log(weight_decay)
        i = min(max(bisect.bisect_right(self.log_wd, x), 1), len(self.log_wd) - 1)
        x0, x1 = self.log_wd[i - 1], self.log_wd[i]
        share = min(1.0, max(0.0, (x - x0) / (x1 - x0)))
        nearest = i - 1 if share < 0.5 else i
        if self.runs[nearest][seed % len(self.runs[nearest])] is None:
            return None
        low, high = self.means[i - 1], self.means[i]
        low, high = (low, low) if share == 0 else (high, high) if share == 1 else (low, high)
        if low is None or high is None:
            return None
        curve = low + share * (high - low) + self.deviations[seed % len(self.deviations)]
        return [(float(train), float(val)) for train, val in curve]


class EdgeCurves:
    """A cheap family of learning curves shaped like the seed recipe's on MNIST.

    Training error falls as a power of the epoch towards a floor that rises with weight decay,
    so a trial's final training accuracy crosses ``limit`` at ``edge``: a trial far below the
    edge goes over the limit in its second epoch, one just below it late. Validation error
    follows training error plus a generalization gap that closes as weight decay grows, so the
    constrained optimum sits on the edge. A seed moves a trial's floor and its validation
    accuracy by a little noise, as real seeds do, so trials near the edge land on either side.
    """

    def __init__(
        self,
        edge: float,
        limit: float = 0.95,
        epochs: int = 10,
        noise: float = 0.0015,
    ) -> None:
        self.edge = edge
        self.limit = limit
        self.epochs = epochs
        self.noise = noise

    def final_error(self, weight_decay: float) -> float:
        """The expected training error after the last epoch: ``1 - limit`` at the edge."""
        return 0.004 + (1 - self.limit - 0.004) * (weight_decay / self.edge) ** 0.3

    def gap(self, weight_decay: float) -> float:
        return 0.018 * math.exp(-2 * weight_decay / self.edge)

    def __call__(self, weight_decay: float, seed: int) -> list[tuple[float, float]]:
        rng = np.random.default_rng([seed, 0x5EED])
        final = self.final_error(weight_decay) + self.noise * rng.standard_normal()
        val_noise = self.noise * rng.standard_normal()
        gap = self.gap(weight_decay)
        floor = final - 0.1 * self.epochs**-1.2
        points = []
        for epoch in range(1, self.epochs + 1):
            error = floor + 0.1 * epoch**-1.2
            points.append((1 - error, 1 - error - gap + val_noise))
        return points

    def optimum(self, seeds: int = 64) -> tuple[float, float]:
        """The optimum as the quality benchmark takes it, on a fine grid around the edge: the
        best mean validation accuracy among weight decays feasible in at least 80% of
        ``seeds`` seeds. Returns ``(weight decay, mean validation accuracy)``."""
        best = (math.nan, -math.inf)
        for weight_decay in np.geomspace(self.edge / 2, self.edge * 2, 121):
            finals = [self(float(weight_decay), seed)[-1] for seed in range(seeds)]
            feasible = sum(train <= self.limit for train, _ in finals) / seeds
            value = statistics.fmean(val for _, val in finals)
            if feasible >= MIN_FEASIBLE_FRACTION and value > best[1]:
                best = (float(weight_decay), value)
        return best
