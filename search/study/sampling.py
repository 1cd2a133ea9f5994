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
from typing import Any

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
    """

    def __init__(
        self,
        base: BaseSampler,
        startup: BaseSampler,
        n_startup: int,
        param: str = "weight_decay",
        resolution: float = EDGE_RESOLUTION,
    ) -> None:
        self._base = base
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
        return self._base.sample_relative(study, trial, space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler = self._startup if self._in_startup(study) else self._base
        return sampler.sample_independent(study, trial, param_name, param_distribution)

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
        before there is one, the least infeasible finished trial, bracketed up to the range's
        end or the first trial not known to be infeasible. The running trials inside a
        bracket split it into gaps, so trials asked together spread over it instead of piling
        up. Only trials with the anchor's values for every other parameter count, and only
        final verdicts: a trial pruned while still under the limit might have ended over it.
        """
        distribution = search_space.get(self._param)
        if not isinstance(distribution, FloatDistribution) or len(study.directions) != 1:
            return None
        trials = study._get_trials(deepcopy=False, states=CLAIMING)
        best = best_feasible_trial(study)
        infeasible = [t for t in trials if t.state != TrialState.RUNNING and not is_feasible(t)]
        anchor = best or min(infeasible, key=lambda t: violation(t) or 0.0, default=None)
        if anchor is None or self._param not in anchor.params:
            return None
        others = {k: v for k, v in anchor.params.items() if k != self._param}
        to_unit, from_unit = unit_scale(distribution)
        known: list[tuple[float, bool]] = []  # (x, feasible) of the final verdicts
        running: list[float] = []
        for t in trials:
            if self._param not in t.params or any(t.params.get(k) != v for k, v in others.items()):
                continue
            x = to_unit(t.params[self._param])
            if t.state == TrialState.RUNNING:
                running.append(x)
            elif t.state == TrialState.COMPLETE or not is_feasible(t):
                known.append((x, is_feasible(t)))
        x_anchor = to_unit(anchor.params[self._param])
        gaps: list[tuple[float, float, float]] = []
        for side in (-1.0, 1.0):
            beyond = [(x, ok) for x, ok in known if (x - x_anchor) * side > 0]
            if best is None:  # an infeasible anchor: up to the range's end, if nothing between
                beyond.append((max(0.0, side), True))
            if not beyond:
                continue
            x_next, next_ok = min(beyond, key=lambda p: abs(p[0] - x_anchor))
            if next_ok == (best is not None):
                continue  # the same verdict at both ends: no edge between them
            low, high = sorted((x_anchor, x_next))
            points = sorted([low, high, *(x for x in running if low < x < high)])
            gaps += [(b - a, a, b) for a, b in zip(points, points[1:], strict=False)]
        if not gaps:
            return None
        width, low, high = max(gaps)
        if width < self._resolution:
            return None
        return {**others, self._param: from_unit((low + high) / 2)}


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
