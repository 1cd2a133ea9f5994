"""What a study's finished trials say of the feasibility edge in one float parameter.

The edge sampler (``search.engine.sampling``) asks this model where the edge is: which trials
have a final verdict, which way the constraint runs (``constraint_direction``), what is
proven infeasible (``frontier_of``), and where between two trials the constraint crosses the
limit (``edge_belief``). Positions are in [0, 1] of the parameter's range (``unit_scale``), so
a log parameter's decades count alike. Plain Python over Optuna's trials, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, NamedTuple

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.study.record import is_feasible, recipe_of, stopped_over_limit, violation


class Verdict(NamedTuple):
    """A finished trial's final feasibility at position ``x`` of the parameter's range."""

    x: float
    feasible: bool
    value: float | None  # its constraint value


# The spread of the belief about where the edge lies, as a share of the bracket: interpolated
# constraint values point at it, but a stopped trial's value is a projection.
BELIEF_SPREAD = 0.25


@dataclass(frozen=True)
class Belief:
    """Where in a bracket the edge lies: a normal distribution, or uniform (``spread`` None)."""

    centre: float
    spread: float | None

    def split(self, a: float, b: float, bracket: float) -> tuple[float, float]:
        """The gap (a, b)'s weight (its share of the belief, scaled by the bracket's width,
        so gaps of brackets alike compare by width) and where to split it: at the centre if
        the gap's middle half holds it, else where it halves the gap's share, held inside
        the gap's middle 80% so that a split never lands on a trial already there."""
        if self.spread is None:
            return b - a, (a + b) / 2
        normal = NormalDist(self.centre, self.spread)
        low, high = normal.cdf(a), normal.cdf(b)
        quarter = (b - a) / 4
        if a + quarter <= self.centre <= b - quarter:
            return bracket * (high - low), self.centre
        x = normal.inv_cdf((low + high) / 2) if high - low > 1e-12 else (a + b) / 2
        margin = (b - a) / 10
        return bracket * (high - low), min(b - margin, max(a + margin, x))


def edge_belief(x0: float, v0: float | None, x1: float, v1: float | None) -> Belief:
    """Where the constraint crosses 0 between two trials, interpolated from their values.

    Linear in position (regula falsi), held inside the bracket's middle 80% against a
    projected value far off; uniform where a value is missing or both have one sign.
    """
    width = abs(x1 - x0)
    if v0 is None or v1 is None or v0 * v1 > 0 or v0 == v1:
        return Belief((x0 + x1) / 2, None)
    share = min(0.9, max(0.1, v0 / (v0 - v1)))
    return Belief(x0 + share * (x1 - x0), BELIEF_SPREAD * width)


@dataclass
class Edge:
    """What a study's finished trials say of the feasibility edge in one float parameter.

    Positions are in [0, 1] of the parameter's range (``unit_scale``). ``direction`` is +1
    when the constraint falls as the parameter rises (weight decay lowers training accuracy:
    the feasible side is above), -1 when it rises, 0 when the trials show no clear direction.
    With a direction, ``frontier`` is the furthest infeasible trial on the infeasible side of
    every feasible one: everything beyond it, away from the feasible side, is proven
    infeasible (``is_dead``) and is worth no trial.
    """

    anchor: FrozenTrial
    x_anchor: float
    others: dict[str, Any]  # the anchor's values of the other parameters
    known: list[Verdict]  # the final verdicts
    tried: list[float]  # every claimed trial's position: finished, pruned or running
    direction: int
    frontier: float | None
    to_unit: Callable[[float], float]
    from_unit: Callable[[float], float]

    @classmethod
    def of(
        cls,
        trials: Sequence[FrozenTrial],
        param: str,
        distribution: FloatDistribution,
        best: FrozenTrial | None,
        expected: int,
        recipe: dict[str, Any] | None = None,
    ) -> Edge | None:
        """The edge around the best feasible trial ``best``, or before there is one, around
        the infeasible trial nearest the feasible side; None if there is no such trial.

        ``expected`` is the direction expected of the parameter (``EdgeSampler``'s).
        ``recipe``: without ``best``, look among the trials with these values of the other
        parameters only (one optimizer's edge in a full search space, say).
        """
        verdicts = [t for t in trials if has_verdict(t) and param in t.params]
        infeasible = [t for t in verdicts if not is_feasible(t)]
        if recipe is not None:
            infeasible = [t for t in infeasible if recipe_of(t, param) == recipe]
        # Before a feasible trial: the group of the least infeasible trial, which the
        # projected constraint ranks (how far over the limit, and how early it went over).
        seed = best or min(infeasible, key=lambda t: violation(t) or 0.0, default=None)
        if seed is None:
            return None
        others = recipe_of(seed, param)

        def same_group(t: FrozenTrial) -> bool:
            return param in t.params and all(t.params.get(k) == v for k, v in others.items())

        to_unit, from_unit = unit_scale(distribution)
        group = [t for t in verdicts if same_group(t)]
        known = [Verdict(to_unit(t.params[param]), is_feasible(t), violation(t)) for t in group]
        tried = [to_unit(t.params[param]) for t in trials if same_group(t)]
        direction = constraint_direction(
            [(to_unit(t.params[param]), violation(t) or 0.0) for t in group], expected
        )
        frontier = frontier_of(known, direction)
        anchor = best
        if anchor is None:
            frontier_trials = [t for t in group if to_unit(t.params[param]) == frontier]
            anchor = frontier_trials[0] if frontier_trials else seed
        x_anchor = to_unit(anchor.params[param])
        return cls(
            anchor,
            x_anchor,
            others,
            known,
            tried,
            direction,
            frontier,
            to_unit,
            from_unit,
        )

    def is_dead(self, x: float) -> bool:
        """Whether ``x`` lies beyond the frontier, away from the feasible side."""
        return self.frontier is not None and (x - self.frontier) * self.direction < 0

    def live_gap_middle(self) -> float:
        """The middle of the widest gap between the frontier and the range's end on the
        feasible side, split by the trials there, finished or running.

        Where a proposal lands beyond the frontier, the edge bracket is already split to its
        resolution (or it would have been proposed there): what can still change the answer
        is an optimum inside the feasible side, which the base sampler missed. Trials far
        inside it are cheap, too: the median pruner stops the weak ones after a few epochs,
        where a replicate at the edge would train every epoch.
        """
        frontier = self.frontier
        assert frontier is not None and self.direction != 0
        low, high = sorted((frontier, 1.0 if self.direction > 0 else 0.0))
        cuts = sorted({low, high, *(x for x in self.tried if low < x < high)})
        _, middle = max((b - a, (a + b) / 2) for a, b in zip(cuts, cuts[1:], strict=False))
        return middle


def has_verdict(trial: FrozenTrial) -> bool:
    """Whether the trial's feasibility is final: it completed, or it was stopped over the
    limit by more than any recorded run came back from (``search.engine.monotone``). A trial
    pruned under the limit might have ended over it, and one pruned by the pruner just over
    it might have ended within it."""
    if trial.state == TrialState.COMPLETE:
        return True
    return stopped_over_limit(trial)


# How strongly the trials must rank position against constraint value (Kendall's tau) to show a
# direction: seed noise near the edge swaps a few neighbours, a parameter with no monotone
# effect scatters them.
DIRECTION_TAU = 0.5
DIRECTION_MIN_TRIALS = 4


def constraint_direction(points: Sequence[tuple[float, float]], expected: int = 0) -> int:
    """+1 when the constraint falls as the parameter rises, -1 when it rises, 0 when neither.

    ``points`` are (position, constraint value) of the trials with a final verdict. Their
    Kendall tau decides where there are enough of them and it is clear (``DIRECTION_TAU``);
    a tau between says the parameter has no clear direction, and the sampler then proves
    nothing infeasible and brackets the edge on both sides of its anchor. Where the trials
    can't tell (too few, or every value tied, as stopped trials were when their projection
    was capped), the ``expected`` direction stands.
    """
    if len(points) < DIRECTION_MIN_TRIALS:
        return expected
    from scipy.stats import kendalltau

    tau = kendalltau([x for x, _ in points], [v for _, v in points]).statistic
    if not math.isfinite(tau):
        return expected
    if abs(tau) < DIRECTION_TAU:
        return 0
    return 1 if tau < 0 else -1


def frontier_of(known: Sequence[Verdict], direction: int) -> float | None:
    """The infeasible trial nearest the feasible side among those beyond every feasible one.

    With the feasible side above (``direction`` +1): the highest infeasible position below the
    lowest feasible one, so seed noise that puts a feasible trial below an infeasible one
    narrows what counts as proven instead of contradicting it. None without a direction or
    without such a trial.
    """
    if direction == 0:
        return None
    oriented = [(v.x * direction, v.feasible) for v in known]
    lowest_feasible = min((y for y, ok in oriented if ok), default=math.inf)
    below = [y for y, ok in oriented if not ok and y < lowest_feasible]
    return max(below) * direction if below else None


def unit_scale(
    distribution: FloatDistribution,
) -> tuple[Callable[[float], float], Callable[[float], float]]:
    """Maps from a float parameter to [0, 1] of its range (log range if log) and back."""
    scale: Callable[[float], float] = math.log if distribution.log else float
    unscale: Callable[[float], float] = math.exp if distribution.log else float
    low, high = scale(distribution.low), scale(distribution.high)

    def to_unit(value: float) -> float:
        return (scale(value) - low) / (high - low)

    def from_unit(x: float) -> float:
        value = unscale(low + x * (high - low))
        return min(distribution.high, max(distribution.low, value))

    return to_unit, from_unit
