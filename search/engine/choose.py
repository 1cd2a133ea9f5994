"""Which confirmed candidate to recommend, and which trials are candidates at all.

A best trial found on the feasibility edge is often feasible by its seed's luck, and its
validation accuracy the luckiest of its neighbours' draws. Candidates are therefore ranked by
their *expected* value (``search.engine.expected``: a fit over the trials around each, which
averages the seed noise away), not their own; ``search.engine.confirm`` retrains the best few
with further seeds, and the recommendation is the best expected value, its confirmation runs
counted as observations too, among those that held the limit in enough of them. The choice is
stored through the record (``search.study.record.Recommendation``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.config import StudyConfig
from search.engine.edge import unit_scale
from search.engine.expected import expected_values
from search.engine.sampling import EDGE_RESOLUTION
from search.study.record import (
    MIN_FEASIBLE_FRACTION,
    Candidate,
    Recommendation,
    best_feasible_trial,
    confirm_study_name,
    is_feasible,
)

# Candidates are at least this far apart (share of the weight decay's log range, the edge
# sampler's resolution): near-identical weight decays on the edge would all pass or fail
# together, so the few confirmed step from the edge inwards and one of them is likely to hold.
CANDIDATE_SPACING = EDGE_RESOLUTION
# Rounds of confirmation at most: when none of a round's candidates holds, the next ones
# inwards are confirmed, up to this many rounds.
MAX_ROUNDS = 3


def candidates(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The ``n`` feasible complete trials of best expected value, ``CANDIDATE_SPACING``
    apart."""
    expected = expected_values(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    feasible = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.number in expected and is_feasible(t)),
        key=lambda t: expected[t.number],
        reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE,
    )
    chosen: list[FrozenTrial] = []
    for trial in feasible:
        if len(chosen) == n:
            break
        if all(not _close(trial, other) for other in chosen):
            chosen.append(trial)
    return chosen


def confirmation_rounds(chosen: list[FrozenTrial], per_round: int) -> list[list[FrozenTrial]]:
    """``chosen`` (best expected value first) in the rounds they are confirmed in,
    ``per_round`` each: a round runs only if none of the earlier ones held."""
    size = max(1, per_round)
    return [chosen[i : i + size] for i in range(0, len(chosen), size)][:MAX_ROUNDS]


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


# How sure the recommendation must be that a further seed holds the limit: the one-sided
# prediction bound of the confirmation runs at this level stays within it. A weight decay
# whose seeds hold the limit 90% of the time or more passes 7 of 8 fresh seeds most of the
# time; one just over its edge, feasible in all 4 confirmation seeds by luck, does not pass.
HOLD_CONFIDENCE = 0.9


def robust(confirmed: list[Candidate], limit: float) -> list[Candidate]:
    """Those of ``confirmed`` feasible in at least ``MIN_FEASIBLE_FRACTION`` of their runs
    whose one-sided ``HOLD_CONFIDENCE`` prediction bound for a further seed's training
    accuracy stays within ``limit``.

    The spread is pooled over every candidate's runs: the seed noise of one recipe changes
    little over a few percent of weight decay, and 4 runs alone would bound it loosely.
    """
    from scipy.stats import t as student

    held = [c for c in confirmed if c.holds]
    dof = sum(c.confirm_seeds - 1 for c in confirmed if c.confirm_seeds > 1)
    if not held or dof == 0:
        return held
    pooled = math.sqrt(
        sum((c.confirm_seeds - 1) * c.train_accuracy_std**2 for c in confirmed) / dof
    )
    factor = float(student.ppf(HOLD_CONFIDENCE, dof))
    return [
        c
        for c in held
        if c.train_accuracy_mean + factor * pooled * math.sqrt(1 + 1 / c.confirm_seeds) <= limit
    ]


def choose(
    confirmed: list[Candidate], limit: float, expected: dict[int, float] | None = None
) -> tuple[Candidate, bool]:
    """The candidate to recommend, and whether it held the limit (``robust``).

    The best ``expected`` value (by trial number; default: the confirmation's mean) among the
    robust ones; if none is, the most often feasible one (then the best mean), unconfirmed.
    """
    held = robust(confirmed, limit)
    if held:
        value = expected or {}
        return max(held, key=lambda c: value.get(c.trial, c.val_accuracy_mean)), True
    return max(confirmed, key=lambda c: (c.feasible_fraction, c.val_accuracy_mean)), False


def expected_with_runs(
    study: optuna.Study, runs: dict[int, list[tuple[float, float]]]
) -> dict[int, float]:
    """Expected values with each candidate's confirmation runs (trial number -> its (train,
    validation) accuracies) counted as observations at its weight decay."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    by_number = {t.number: t for t in complete}
    extra = [(by_number[n], v) for n, found in runs.items() if n in by_number for _, v in found]
    return expected_values(complete, extra=extra)


def choose_confirmed(
    study: optuna.Study,
    chosen: list[FrozenTrial],
    runs: Callable[[FrozenTrial], list[tuple[float, float]]],
    config: StudyConfig,
) -> Candidate | None:
    """What the confirmation of ``chosen`` recommends, round by round as ``search.engine
    .confirm`` runs it, with ``runs`` giving each candidate's (train, validation) accuracy
    per confirmation seed that finished."""
    confirmed: list[Candidate] = []
    observed: dict[int, list[tuple[float, float]]] = {}
    for round_ in confirmation_rounds(chosen, config.confirm_candidates):
        if robust(confirmed, config.max_train_acc):
            break
        for trial in round_:
            observed[trial.number] = runs(trial)
            confirmed.append(
                Candidate.from_runs(
                    trial.number,
                    float(trial.params["weight_decay"]),
                    observed[trial.number],
                    config.confirm_seeds,
                    config.max_train_acc,
                )
            )
    if not confirmed:
        return None
    choice, _ = choose(confirmed, config.max_train_acc, expected_with_runs(study, observed))
    return choice


def recommend(
    study: optuna.Study,
    confirmed: list[Candidate],
    limit: float,
    runs: int,
    seconds: float,
    confirmed_at: str | None = None,
    confirmed_after: int | None = None,
    observed: dict[int, list[tuple[float, float]]] | None = None,
    measure: str = "running",
) -> Recommendation:
    """Choose among ``confirmed`` (``observed``: their confirmation runs): the recommendation
    to store on the study."""
    choice, held = choose(confirmed, limit, expected_with_runs(study, observed or {}))
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
        measure=measure,
    )
