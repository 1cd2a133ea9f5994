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
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np
import optuna

from search.config import StudyConfig
from search.engine.drive import run_pool
from search.engine.strategy import make_pruner, make_sampler
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
    from search.engine.choose import MAX_ROUNDS, candidates, choose_confirmed
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
        # A single run inside the span of points measured with several seeds is one seed's
        # draw among means of many: its luck would be read as the curve's shape there.
        several = [w for w, point in zip(weight_decays, runs, strict=True) if len(point) > 1]
        if several:
            kept = [
                (w, point)
                for w, point in zip(weight_decays, runs, strict=True)
                if len(point) > 1 or not min(several) < w < max(several)
            ]
            weight_decays, runs = [w for w, _ in kept], [p for _, p in kept]
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

    def __call__(self, weight_decay: float, seed: int) -> list[tuple[float, ...]] | None:
        i, share = self._bracket(weight_decay)
        nearest = i - 1 if share < 0.5 else i
        if self.runs[nearest][seed % len(self.runs[nearest])] is None:
            return None
        mean = self._mean(i, share)
        if mean is None:
            return None
        curve = mean + self.deviations[seed % len(self.deviations)]
        return [tuple(float(v) for v in row) for row in curve]

    def _bracket(self, weight_decay: float) -> tuple[int, float]:
        x = math.log(weight_decay)
        i = min(max(bisect.bisect_right(self.log_wd, x), 1), len(self.log_wd) - 1)
        x0, x1 = self.log_wd[i - 1], self.log_wd[i]
        return i, min(1.0, max(0.0, (x - x0) / (x1 - x0)))

    def _mean(self, i: int, share: float) -> np.ndarray | None:
        low, high = self.means[i - 1], self.means[i]
        low, high = (low, low) if share == 0 else (high, high) if share == 1 else (low, high)
        if low is None or high is None:
            return None
        return np.asarray(low + share * (high - low))

    def expected(self, weight_decay: float) -> tuple[float, ...] | None:
        """The noise-free last epoch at ``weight_decay``: the interpolated mean of the runs,
        (running training, validation[, final training]) accuracy."""
        mean = self._mean(*self._bracket(weight_decay))
        return None if mean is None else tuple(float(v) for v in mean[-1])

    def feasible_share(self, weight_decay: float, measure: str, limit: float) -> float:
        """The share of seeds whose last epoch holds ``limit`` by ``measure`` at
        ``weight_decay``: the mean plus each pooled deviation."""
        mean = self._mean(*self._bracket(weight_decay))
        if mean is None:
            return 0.0
        column = 2 if measure == "final" and mean.shape[1] > 2 else 0
        finals = [float(mean[-1, column] + d[-1, column]) for d in self.deviations]
        return sum(v <= limit for v in finals) / len(finals)

    def span(self) -> tuple[float, float]:
        """The weight decays measured with two seeds or more: where the noise is known."""
        dense = [math.exp(x) for x, m in zip(self.log_wd, self.runs, strict=True) if len(m) > 1]
        return (
            (min(dense), max(dense))
            if dense
            else (math.exp(self.log_wd[0]), math.exp(self.log_wd[-1]))
        )


# ``EdgeCurves``' seed spreads (standard deviations) and the final weights' lead over the
# running training accuracy, as measured on MNIST near the edge over 8 held-out seeds
# (docs/search-quality.md): running training accuracy 0.03 points, validation 0.25, the final
# weights' training accuracy 0.15 points, 0.4 points above the running one.
RUNNING_NOISE = 0.0003
VAL_NOISE = 0.0025
FINAL_NOISE = 0.0015
FINAL_OFFSET = 0.004


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
        noise: float = RUNNING_NOISE,
        val_noise: float | None = None,
        final_noise: float | None = None,
    ) -> None:
        self.edge = edge
        self.limit = limit
        self.epochs = epochs
        self.noise = noise  # the running training accuracy's seed spread
        # Unless given, the others' in proportion, as measured on MNIST.
        self.val_noise = VAL_NOISE * noise / RUNNING_NOISE if val_noise is None else val_noise
        self.final_noise = (
            FINAL_NOISE * noise / RUNNING_NOISE if final_noise is None else final_noise
        )

    def final_error(self, weight_decay: float) -> float:
        """The expected training error after the last epoch: ``1 - limit`` at the edge."""
        return 0.004 + (1 - self.limit - 0.004) * (weight_decay / self.edge) ** 0.3

    def gap(self, weight_decay: float) -> float:
        return 0.018 * math.exp(-2 * weight_decay / self.edge)

    def __call__(self, weight_decay: float, seed: int) -> list[tuple[float, float, float]]:
        rng = np.random.default_rng([seed, 0x5EED])
        final = self.final_error(weight_decay) + self.noise * rng.standard_normal()
        val_noise = self.val_noise * rng.standard_normal()
        # The final weights score higher on the training split than the running figure and
        # scatter more from seed to seed, as measured on MNIST (docs/search-quality.md).
        weights_noise = self.final_noise * rng.standard_normal()
        gap = self.gap(weight_decay)
        floor = final - 0.1 * self.epochs**-1.2
        points = []
        for epoch in range(1, self.epochs + 1):
            error = floor + 0.1 * epoch**-1.2
            points.append(
                (1 - error, 1 - error - gap + val_noise, 1 - error + FINAL_OFFSET + weights_noise)
            )
        return points

    def expected(self, weight_decay: float) -> tuple[float, float, float]:
        """The noise-free last epoch: (running, validation, final) accuracy."""
        error = self.final_error(weight_decay)
        return 1 - error, 1 - error - self.gap(weight_decay), 1 - error + FINAL_OFFSET

    def feasible_share(self, weight_decay: float, measure: str, limit: float) -> float:
        """The probability over seeds that the last epoch holds ``limit`` by ``measure``."""
        mean = self.expected(weight_decay)[2 if measure == "final" else 0]
        spread = math.hypot(self.noise, self.final_noise) if measure == "final" else self.noise
        if spread == 0:
            return float(mean <= limit)
        return NormalDist(mean, spread).cdf(limit)

    def span(self) -> tuple[float, float]:
        return self.edge / 2, self.edge * 2


class Truth(Protocol):
    """What a simulated study is scored against: the noise-free value of a weight decay."""

    def expected(self, weight_decay: float) -> tuple[float, ...] | None: ...

    def feasible_share(self, weight_decay: float, measure: str, limit: float) -> float: ...

    def span(self) -> tuple[float, float]: ...


# A weight decay is robustly feasible when at least this share of seeds holds the limit (7 of
# 8): the robust optimum is the best noise-free value among those.
ROBUST_FRACTION = 7 / 8


def noise_free_optimum(
    truth: Truth, measure: str, limit: float, points: int = 241
) -> tuple[float, float] | None:
    """(weight decay, noise-free validation accuracy) of the robust optimum, over a fine grid
    of ``truth``'s span; None if nothing there is robustly feasible."""
    low, high = truth.span()
    best: tuple[float, float] | None = None
    for weight_decay in np.geomspace(low, high, points):
        w = float(weight_decay)
        row = truth.expected(w)
        if row is None or truth.feasible_share(w, measure, limit) < ROBUST_FRACTION:
            continue
        if best is None or row[1] > best[1]:
            best = (w, row[1])
    return best


def noise_free_regret(
    truth: Truth, weight_decay: float | None, optimum: float, measure: str, limit: float
) -> tuple[float, float]:
    """(regret, share of seeds feasible) of recommending ``weight_decay``: the optimum's
    noise-free value less its own (inf without a recommendation)."""
    if weight_decay is None:
        return math.inf, 0.0
    row = truth.expected(weight_decay)
    if row is None:
        return math.inf, 0.0
    return optimum - row[1], float(truth.feasible_share(weight_decay, measure, limit))
