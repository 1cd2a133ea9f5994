"""Spend a constrained study's trials where the constraint binds: the edge sampler and pruner.

Weight decay trades validation accuracy for a lower training accuracy, so the constrained
optimum sits on the feasibility edge: the smallest weight decay whose training accuracy stays
under the limit. That edge is a few percent wide in weight decay out of five decades, and the
trial pool asks 16 trials before any finishes; TPE and GP model the whole range and spend few
of a study's trials on so narrow a band (what the edge rule gives: docs/search-quality.md).

``EdgeSampler`` splits the bracket between the best feasible trial and its infeasible
neighbour, first where their constraint values interpolate to the limit, so it never needs to
know where any task's edge lies: it reads the study's own results. It expects the constraint
to fall as the parameter rises (weight decay lowers training accuracy) and checks that
against the trials (``constraint_direction``); with a direction, the infeasible trials below
every feasible one prove everything beyond them infeasible (``Edge.frontier``), and no trial
goes there. Where there is no bracket (an optimum inside the feasible region, say) the base
sampler proposes as usual. ``ConstrainedMedianPruner`` judges a trial against the feasible
trials only: near the edge the infeasible trials score best at every epoch and would get
exactly the trials that decide the study pruned as below median.

Written by hand: Optuna has no boundary-seeking sampler, and its pruners ignore constraints.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.engine.budget import CLAIMING
from search.engine.edge import (
    Edge,
    Verdict,
    edge_belief,
    has_verdict,
)
from search.engine.expected import best_expected_trial
from search.study.record import (
    FINISHED,
    is_feasible,
    recipe_of,
    violation,
)

# A bracket narrower than this share of the parameter's range (in log space for a log
# parameter: 0.005 decades of weight decay's five, 1.2%) is not split again. Near the edge the
# seed's running training accuracy moves across such a step by about its own seed-to-seed
# spread (docs/search-quality.md, its dense grids): finer bisection would chase one seed's
# luck, coarser leaves validation on the table.
EDGE_RESOLUTION = 0.001


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
        return len(study.get_trials(deepcopy=False, states=states)) <= self._n_startup

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._in_startup(study):
            return self._startup.infer_relative_search_space(study, trial)
        # Every parameter of the finished trials: an edge proposal sets them all, the best
        # trial's values for the others and a new value for ``param``.
        finished = study.get_trials(deepcopy=False, states=FINISHED)
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
        """Where in the edge bracket the next trial goes, or None if nothing is left to split.

        The bracket runs from an anchor to its nearest finished neighbour on a side where
        that neighbour's feasibility differs. The anchor is the best feasible complete trial;
        before there is one, the infeasible trial nearest the feasible side (``Edge.frontier``),
        bracketed up to the range's end or the first trial not known to be infeasible. With
        a best trial, the window reaches past it, as far again at most: it may be feasible by
        its seed's luck. The trials tried inside it split it into gaps, so trials asked
        together spread over it instead of piling up; the gap holding the most of the belief
        about where the edge is (``edge_belief``) is split next. Only trials with the anchor's
        values for every other parameter count, and only final verdicts: a trial pruned while
        still under the limit might have ended over it.
        """
        distribution = search_space.get(self._param)
        if not isinstance(distribution, FloatDistribution) or len(study.directions) != 1:
            return None
        trials = study.get_trials(deepcopy=False, states=CLAIMING)
        for best, recipe in self.anchors(trials, self.anchor(study, trials)):
            edge = Edge.of(trials, self._param, distribution, best, self._direction, recipe)
            if edge is not None:
                # Another recipe's edge before it has a feasible trial: bisect up to the
                # range's end, not creep from its frontier (as the study's first edge does).
                proposal = self.bracket_proposal(edge, best, creep=recipe is None)
                if proposal is not None:
                    return proposal
        return None

    def anchor(self, study: Study, trials: list[FrozenTrial]) -> FrozenTrial | None:
        """The feasible complete trial the edge is bracketed from: the best *expected* one
        (``search.engine.expected``), not the luckiest draw, which may sit well inside the
        feasible side with the trials nearer the edge scoring less by their seeds' luck."""
        return best_expected_trial(trials, study.direction == StudyDirection.MAXIMIZE, self._param)

    def anchors(
        self, trials: list[FrozenTrial], best: FrozenTrial | None
    ) -> list[tuple[FrozenTrial | None, dict[str, Any] | None]]:
        """Whose edge to split, in turn: the best feasible trial's, alone when every trial
        shares one recipe (the other parameters' values).

        With several recipes (``--search-space full``: an optimizer and a bias rule each),
        each has an edge of its own and the best one's is not known until each is found.
        Every recipe whose trials reached a higher value than the best feasible trial (an
        infeasible one scores more: it decays less) may hold a better edge: those come
        first, highest first, each around its own best feasible trial (or, before it has
        one, its infeasible trial nearest the feasible side), and the best trial's recipe
        after them. A recipe stops asking once its bracket is split to the resolution.
        """
        groups: dict[str, list[FrozenTrial]] = {}
        for trial in trials:
            if has_verdict(trial) and self._param in trial.params and trial.value is not None:
                groups.setdefault(repr(recipe_of(trial, self._param)), []).append(trial)
        if len(groups) <= 1 or best is None or best.value is None:
            return [(best, None)]
        promising: list[tuple[float, FrozenTrial | None, dict[str, Any]]] = []
        for group in groups.values():
            recipe = recipe_of(group[0], self._param)
            if recipe == recipe_of(best, self._param):
                continue
            reached = max(t.value for t in group if t.value is not None)
            if reached <= best.value:
                continue  # it scored less than the best even where it decays least
            feasible = [t for t in group if t.state == TrialState.COMPLETE and is_feasible(t)]
            own_best = max(feasible, key=lambda t: t.value or 0.0, default=None)
            promising.append((reached, own_best, recipe))
        promising.sort(key=lambda entry: entry[0], reverse=True)
        return [(own, recipe) for _, own, recipe in promising] + [(best, None)]

    def bracket_proposal(
        self, edge: Edge, best: FrozenTrial | None, creep: bool = True
    ) -> dict[str, Any] | None:
        """The next split of ``edge``'s bracket around ``best`` (see ``edge_proposal``);
        ``creep``: before any feasible trial, from the frontier up (``first_open_gap``)."""
        if best is None and edge.frontier is not None and creep:
            x_first = self.first_open_gap(edge)
            return None if x_first is None else {**edge.others, self._param: x_first}
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

    def first_open_gap(self, edge: Edge) -> float | None:
        """Before any trial is feasible: the edge lies beyond the frontier, most likely below
        the first trial there not yet known to be infeasible (a running one, say), which the
        constraint may still catch. The widest gap between the frontier and that trial is
        split first; only once every gap there is at resolution does the window reach to the
        next such trial, and so on up to the range's end. Far inside the feasible side a
        trial trains every epoch before the pruner can judge it, so going there blind, before
        the gaps near the frontier, would cost the most and tell the least.
        """
        frontier, direction = edge.frontier, edge.direction
        assert frontier is not None and direction != 0
        infeasible = {v.x for v in edge.known if not v.feasible}
        ahead = sorted(
            (x for x in edge.tried if (x - frontier) * direction > 0 and x not in infeasible),
            key=lambda x: abs(x - frontier),
        )
        cuts = [x for x in edge.tried if (x - frontier) * direction > 0]
        for ceiling in [*ahead, 1.0 if direction > 0 else 0.0]:
            low, high = sorted((frontier, ceiling))
            points = sorted({low, high, *(x for x in cuts if low < x < high)})
            gaps = [(b - a, (a + b) / 2) for a, b in zip(points, points[1:], strict=False)]
            wide = [gap for gap in gaps if gap[0] >= self._resolution]
            if wide:
                return edge.from_unit(max(wide)[1])
        return None

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
        trials = study.get_trials(deepcopy=False, states=CLAIMING)
        best = self.anchor(study, trials)
        edge = Edge.of(trials, self._param, distribution, best, self._direction)
        if edge is None or not edge.is_dead(edge.to_unit(value)):
            return value
        if any(params.get(k, v) != v for k, v in edge.others.items()):
            return value
        if any(k not in params for k in edge.others):
            return value  # the other parameters are not chosen yet: their edge is unknown
        return edge.from_unit(edge.live_gap_middle())


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
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
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
