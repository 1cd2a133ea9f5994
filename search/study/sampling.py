"""Spend a constrained study's trials where the constraint binds: the edge sampler and pruner.

Weight decay trades validation accuracy for a lower training accuracy, so the constrained
optimum sits on the feasibility edge: the smallest weight decay whose training accuracy stays
under the limit. That edge is a few percent wide in weight decay out of five decades, and the
trial pool asks 16 trials before any finishes; TPE and GP model the whole range and, measured
here, end a 50-trial study 0.3 to 1.7 points below the optimum (README, "Search quality").

``EdgeSampler`` bisects the bracket between the best feasible trial and its infeasible
neighbour, so it never needs to know where any task's edge lies: it reads the study's own
results, and where there is no such bracket (no feasible trial yet, or an optimum inside the
feasible region) the base sampler proposes as usual. ``ConstrainedMedianPruner`` judges a
trial against the feasible trials only: near the edge the infeasible trials score best at
every epoch and would get exactly the trials that decide the study pruned as below median.

Written by hand: Optuna has no boundary-seeking sampler, and its pruners ignore constraints.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, NamedTuple

from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.study.budget import CLAIMING, FINISHED

# A bracket narrower than this share of the parameter's range (in log space for a log
# parameter: 0.025 decades of weight decay's five, 6%) is not split again: finer than the
# seed-to-seed spread of the edge, further bisection would only chase one seed's luck.
EDGE_RESOLUTION = 0.005


def violation(trial: FrozenTrial) -> float | None:
    """The trial's largest constraint value (feasible when <= 0), or None if it has none."""
    constraints = trial.constraints
    return max(constraints.values()) if constraints else None


def is_feasible(trial: FrozenTrial) -> bool:
    value = violation(trial)
    return value is None or value <= 0


class EdgeSampler(BaseSampler):
    """Bisects the feasibility edge next to the best feasible trial in one float parameter.

    Args:
        base: proposes whatever the edge rule does not (TPE, say).
        startup: proposes the first ``n_startup`` trials, spread over the space (QMC, say).
        n_startup: trials, running ones included, that ``startup`` proposes.
        param: the float parameter whose edge is bisected.
        resolution: the narrowest gap, as a share of ``param``'s range, that is still split.
        direction: +1 if the constraint is expected to fall as ``param`` rises (weight decay
            lowers training accuracy), -1 if to rise, 0 to expect nothing; the trials can
            overrule it (``constraint_direction``).
    """

    def __init__(
        self,
        base: BaseSampler,
        startup: BaseSampler,
        n_startup: int,
        param: str = "weight_decay",
        resolution: float = EDGE_RESOLUTION,
        direction: int = 1,
    ) -> None:
        self._base = base
        self._direction = direction
        self._startup = startup
        self._n_startup = n_startup
        self._param = param
        self._resolution = resolution

    def _in_startup(self, study: Study) -> bool:
        states = CLAIMING  # the trial being sampled is running
        return len(study._get_trials(deepcopy=False, states=states)) <= self._n_startup

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._in_startup(study):
            return self._startup.infer_relative_search_space(study, trial)
        # Every parameter of the finished trials: an edge proposal sets them all, the best
        # trial's values for the others and a new value for ``param``.
        finished = study._get_trials(deepcopy=False, states=FINISHED)
        return dict(finished[-1].distributions) if finished else {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self._in_startup(study):
            return self._startup.sample_relative(study, trial, search_space)
        proposal = self.edge_proposal(study, search_space)
        if proposal is not None:
            return proposal
        space = self._base.infer_relative_search_space(study, trial)
        proposal = self._base.sample_relative(study, trial, space)
        distribution = space.get(self._param)
        if self._param in proposal and isinstance(distribution, FloatDistribution):
            proposal[self._param] = self.alive(study, proposal, distribution)
        return proposal

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler = self._startup if self._in_startup(study) else self._base
        value = sampler.sample_independent(study, trial, param_name, param_distribution)
        if param_name == self._param and isinstance(param_distribution, FloatDistribution):
            return self.alive(study, {**trial.params, param_name: value}, param_distribution)
        return value

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._startup.before_trial(study, trial)
        self._base.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._startup.after_trial(study, trial, state, values)
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._startup.reseed_rng()
        self._base.reseed_rng()

    def edge_proposal(
        self, study: Study, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any] | None:
        """The midpoint of the widest gap left in the edge bracket, or None.

        The bracket runs from an anchor to its nearest finished neighbour on a side where
        that neighbour's feasibility differs. The anchor is the best feasible complete trial;
        before there is one, the infeasible trial nearest the feasible side (``Edge.frontier``),
        bracketed up to the range's end or the first trial not known to be infeasible. The
        running trials inside a bracket split it into gaps, so trials asked together spread
        over it instead of piling up. Only trials with the anchor's values for every other
        parameter count, and only final verdicts: a trial pruned while still under the limit
        might have ended over it.
        """
        distribution = search_space.get(self._param)
        if not isinstance(distribution, FloatDistribution) or len(study.directions) != 1:
            return None
        trials = study._get_trials(deepcopy=False, states=CLAIMING)
        best = best_feasible_trial(study)
        edge = Edge.of(trials, self._param, distribution, best, self._direction)
        if edge is None:
            return None
        v_anchor = violation(edge.anchor) or 0.0
        gaps: list[tuple[float, float]] = []  # (weight, where to split)
        for side in (-1.0, 1.0):
            beyond = [v for v in edge.known if (v.x - edge.x_anchor) * side > 0]
            if best is None:  # an infeasible anchor: up to the range's end, if nothing between
                beyond.append(Verdict(max(0.0, side), True, None))
            if not beyond:
                continue
            neighbour = min(beyond, key=lambda v: abs(v.x - edge.x_anchor))
            if neighbour.feasible == (best is not None):
                continue  # the same verdict at both ends: no edge between them
            belief = edge_belief(edge.x_anchor, v_anchor, neighbour.x, neighbour.value)
            far = edge.x_anchor
            if best is not None and edge.direction == -side:
                # The edge lies below the best trial, which may be feasible by its seed's
                # luck: the window reaches past it as far again, or to the next trial there.
                mirror = min(1.0, max(0.0, 2 * edge.x_anchor - neighbour.x))
                ahead = [v.x for v in edge.known if (v.x - edge.x_anchor) * side < 0]
                far = min([*ahead, mirror], key=lambda x: abs(x - edge.x_anchor))
            low, high = sorted((far, neighbour.x))
            points = sorted({low, high, *(x for x in edge.tried if low < x < high)})
            for a, b in zip(points, points[1:], strict=False):
                if b - a >= self._resolution and not edge.is_dead((a + b) / 2):
                    gaps.append(belief.split(a, b, bracket=high - low))
        if not gaps:
            return None
        _, x = max(gaps)
        return {**edge.others, self._param: edge.from_unit(x)}

    def alive(
        self, study: Study, params: dict[str, Any], distribution: FloatDistribution
    ) -> float:
        """The proposal ``params``' value of the parameter, moved if finished trials prove it
        infeasible.

        A proposal beyond the frontier (``Edge.is_dead``) moves to the widest gap on the
        feasible side (``Edge.live_gap_middle``), where another trial can still change the
        answer.
        Only where the proposal's other parameters (as far as they are chosen yet) are the
        edge's: another optimizer, say, has an edge of its own.
        """
        value = float(params[self._param])
        trials = study._get_trials(deepcopy=False, states=CLAIMING)
        best = best_feasible_trial(study)
        edge = Edge.of(trials, self._param, distribution, best, self._direction)
        if edge is None or not edge.is_dead(edge.to_unit(value)):
            return value
        if any(params.get(k, v) != v for k, v in edge.others.items()):
            return value
        if any(k not in params for k in edge.others):
            return value  # the other parameters are not chosen yet: their edge is unknown
        return edge.from_unit(edge.live_gap_middle())


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
    ) -> Edge | None:
        """The edge around the best feasible trial ``best``, or before there is one, around
        the infeasible trial nearest the feasible side; None if there is no such trial.

        ``expected`` is the direction expected of the parameter (``EdgeSampler``'s).
        """
        verdicts = [t for t in trials if has_verdict(t) and param in t.params]
        infeasible = [t for t in verdicts if not is_feasible(t)]
        # Before a feasible trial: the group of the least infeasible trial, which the
        # projected constraint ranks (how far over the limit, and how early it went over).
        seed = best or min(infeasible, key=lambda t: violation(t) or 0.0, default=None)
        if seed is None:
            return None
        others = {k: v for k, v in seed.params.items() if k != param}

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
    """Whether the trial's feasibility is final: it completed, or it stopped over the limit
    (training accuracy only rises, so a trial over the limit stays over it). A trial pruned
    under the limit might have ended over it."""
    if trial.state == TrialState.COMPLETE:
        return True
    return trial.state == TrialState.PRUNED and not is_feasible(trial)


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


def best_feasible_trial(study: Study) -> FrozenTrial | None:
    """The complete, feasible trial with the highest validation accuracy, if any.

    What the search found; what the study *recommends* after seed confirmation is
    ``search.study.recommend.recommended_trial``, which everything that names "the" result
    (the run's summary, the best export, the report, evaluate, ``load_best``) asks.
    """
    # Optuna's ``study.best_trial`` already skips infeasible trials; this only turns its
    # "nothing yet" errors into None.
    try:
        return study.best_trial
    except ValueError:
        return None


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


class ConstrainedMedianPruner(BasePruner):
    """Prunes a trial whose value at a step is worse than the feasible trials' median there.

    Optuna's ``MedianPruner`` with the median taken over the complete *feasible* trials.

    Args:
        n_startup_trials: feasible complete trials to wait for before pruning anything.
        n_warmup_steps: steps before which no trial is pruned.
    """

    def __init__(self, n_startup_trials: int, n_warmup_steps: int) -> None:
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self._n_warmup_steps:
            return False
        feasible = [
            t
            for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if is_feasible(t)
        ]
        if len(feasible) < self._n_startup_trials:
            return False
        values = [t.intermediate_values[step] for t in feasible if step in t.intermediate_values]
        if not values:
            return False
        median = statistics.median(values)
        value = trial.intermediate_values[step]
        if study.direction == StudyDirection.MAXIMIZE:
            return value < median
        return value > median
