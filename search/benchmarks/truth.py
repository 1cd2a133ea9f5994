"""What a simulated study is scored against: learning curves and their noise-free truth.

A recommendation of a simulated study (``search.benchmarks.simulate``) is scored by its
*noise-free* value: the curves' mean at its weight decay against the best mean among the weight
decays that hold the limit on at least ``ROBUST_FRACTION`` of the seeds. The same truth says
what a rule that knew the mean curve and the seed spread exactly would choose
(``oracle_choice``): the floor below which no confirmation rule can push its regret and its
misses together. NumPy only, no torch and no Optuna: ``python -m search.evidence`` reads it.

Two kinds of curves: ``MeasuredCurves``, interpolated from a grid of real MNIST runs
(``python -m search.bench quality`` trains it once), and ``EdgeCurves``, a cheap analytic
family with its edge wherever a test puts it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Protocol

import numpy as np


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
            None for a run that diverged (``search.benchmarks.quality``'s grid ``curves``).
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
        column = self.column(measure)
        finals = [float(mean[-1, column] + d[-1, column]) for d in self.deviations]
        return sum(v <= limit for v in finals) / len(finals)

    def seed_spread(self, measure: str) -> float:
        """The standard deviation of the last epoch's training accuracy by ``measure`` over
        the pooled deviations: the seed noise a confirmation rule has to allow for."""
        column = self.column(measure)
        return float(np.std([d[-1, column] for d in self.deviations]))

    def column(self, measure: str) -> int:
        """Where an epoch's row holds the training accuracy by ``measure``: the final
        weights' when the grid measured it, else the running one."""
        sample = next(m for m in self.means if m is not None)
        return 2 if measure == "final" and sample.shape[1] > 2 else 0

    def span(self) -> tuple[float, float]:
        """The weight decays measured with two seeds or more: where the noise is known."""
        dense = [math.exp(x) for x, m in zip(self.log_wd, self.runs, strict=True) if len(m) > 1]
        return (
            (min(dense), max(dense))
            if dense
            else (math.exp(self.log_wd[0]), math.exp(self.log_wd[-1]))
        )


# ``EdgeCurves``' seed spreads (standard deviations) of the running training accuracy, the
# validation accuracy and the final weights' training accuracy, and the final weights' lead
# over the running training accuracy, as fractions of 1: read off MNIST near the edge over the
# held-out seeds (the measured figures: docs/search-quality.md).
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


def oracle_choice(
    truth: MeasuredCurves, measure: str, limit: float, confidence: float, points: int = 2001
) -> float | None:
    """The smallest weight decay of ``truth``'s span whose noise-free training accuracy (by
    ``measure``) plus the ``confidence`` quantile of a normal seed noise of the measured
    spread stays within ``limit``: what a confirmation would recommend that knew the mean
    curve and the spread exactly, with no run left to estimate them from. None if nothing
    there does.

    Scored like a study's recommendation (``noise_free_regret``), it shows what a confidence
    level costs and buys on these seeds before any estimation error: on the committed
    final-weights grid a 90% bound misses the 7-of-8 share by the held-out seeds' own spread,
    whose second-highest deviation lies further out than a normal one would.
    """
    column = truth.column(measure)
    margin = NormalDist().inv_cdf(confidence) * truth.seed_spread(measure)
    low, high = truth.span()
    for weight_decay in np.geomspace(low, high, points):
        row = truth.expected(float(weight_decay))
        if row is not None and row[column] + margin <= limit:
            return float(weight_decay)
    return None
