"""Which confirmed candidate to recommend, and which trials are candidates at all.

A best trial found on the feasibility edge is often feasible by its seed's luck.
``search.engine.confirm`` retrains the best few candidates with further seeds; this module
picks them and chooses among their results. The choice is stored through the record
(``search.study.record.Recommendation``).
"""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.engine.edge import unit_scale
from search.engine.sampling import EDGE_RESOLUTION
from search.study.record import (
    MIN_FEASIBLE_FRACTION,
    Candidate,
    Recommendation,
    best_feasible_trial,
    confirm_study_name,
    is_feasible,
)

# Candidates are at least this far apart (share of the weight decay's log range, 0.05 decades):
# near-identical weight decays on the edge would all pass or fail together, so the few
# confirmed are spread from the edge inwards and one of them is likely to hold.
CANDIDATE_SPACING = 2 * EDGE_RESOLUTION
# Candidates whose value is further than this below the best trial's (0.5 points of accuracy)
# are confirmed only if none of the closer ones holds. Across seeds a weight decay's validation
# accuracy moves by 0.14 to 0.20 points (standard deviations over 4 seeds), so they can hardly
# beat it on the mean; they are the fallback when the best turns out feasible by luck, and
# confirming them up front would cost as much again.
CONTENTION_MARGIN = 0.005


def candidates(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The best ``n`` feasible complete trials, at least ``CANDIDATE_SPACING`` apart."""
    feasible = sorted(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and is_feasible(t)
        ),
        key=lambda t: float(t.value),  # type: ignore[arg-type]
        reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE,
    )
    chosen: list[FrozenTrial] = []
    for trial in feasible:
        if len(chosen) == n:
            break
        if all(not _close(trial, other) for other in chosen):
            chosen.append(trial)
    return chosen


def confirmation_rounds(chosen: list[FrozenTrial]) -> list[list[FrozenTrial]]:
    """``chosen`` (best first) in the rounds they are confirmed in: those within
    ``CONTENTION_MARGIN`` of the best, then the rest, only if none of the first holds."""
    values = [float(t.value) for t in chosen]  # type: ignore[arg-type]
    near = [
        t for t, v in zip(chosen, values, strict=True) if abs(values[0] - v) <= CONTENTION_MARGIN
    ]
    rest = [t for t in chosen if t not in near]
    return [r for r in (near, rest) if r]


def _close(a: FrozenTrial, b: FrozenTrial) -> bool:
    """Same other parameters and weight decays closer than ``CANDIDATE_SPACING``."""
    if {k: v for k, v in a.params.items() if k != "weight_decay"} != {
        k: v for k, v in b.params.items() if k != "weight_decay"
    }:
        return False
    distribution = a.distributions["weight_decay"]
    assert isinstance(distribution, FloatDistribution)
    to_unit, _ = unit_scale(distribution)
    gap = abs(to_unit(a.params["weight_decay"]) - to_unit(b.params["weight_decay"]))
    return gap < CANDIDATE_SPACING


def choose(confirmed: list[Candidate]) -> tuple[Candidate, bool]:
    """The candidate to recommend, and whether it held the limit in enough seeds.

    The best mean validation accuracy among those feasible in at least
    ``MIN_FEASIBLE_FRACTION`` of their runs; if none is, the most often feasible one (then
    the best mean), unconfirmed.
    """
    held = [c for c in confirmed if c.holds]
    if held:
        return max(held, key=lambda c: c.val_accuracy_mean), True
    return max(confirmed, key=lambda c: (c.feasible_fraction, c.val_accuracy_mean)), False


def recommend(
    study: optuna.Study,
    confirmed: list[Candidate],
    runs: int,
    seconds: float,
    confirmed_at: str | None = None,
    confirmed_after: int | None = None,
) -> Recommendation:
    """Choose among ``confirmed``: the recommendation to store on the study."""
    choice, held = choose(confirmed)
    best = best_feasible_trial(study)
    return Recommendation(
        choice=choice,
        confirmed=held,
        min_feasible_fraction=MIN_FEASIBLE_FRACTION,
        best_trial=None if best is None else best.number,
        candidates=tuple(confirmed),
        confirm_study=confirm_study_name(study.study_name),
        confirm_runs=runs,
        confirm_seconds=seconds,
        confirmed_at=confirmed_at,
        confirmed_after=confirmed_after,
    )
