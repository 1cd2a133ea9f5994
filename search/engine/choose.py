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

from search.config import HOLD_CONFIDENCE, MAX_ROUNDS, MIN_FEASIBLE_FRACTION, StudyConfig
from search.engine.edge import unit_scale
from search.engine.expected import expected_values
from search.engine.sampling import EDGE_RESOLUTION
from search.study.record import (
    Candidate,
    Recommendation,
    best_feasible_trial,
    confirm_study_name,
    is_feasible,
    recipe_of,
)

# Candidates are at least this far apart (share of the weight decay's log range, the edge
# sampler's resolution): near-identical weight decays on the edge would all pass or fail
# together, so the few confirmed step from the edge inwards and one of them is likely to hold.
CANDIDATE_SPACING = EDGE_RESOLUTION


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


def robust(
    confirmed: list[Candidate],
    limit: float,
    group: Callable[[Candidate], object] | None = None,
) -> list[Candidate]:
    """Those of ``confirmed`` feasible in at least ``MIN_FEASIBLE_FRACTION`` of their runs
    whose one-sided ``HOLD_CONFIDENCE`` prediction bound for a further seed's training
    accuracy stays within ``limit``.

    Where is a further seed's training accuracy expected? Near the edge the training accuracy
    is a smooth, nearly straight function of log weight decay plus seed noise, so the
    candidates of one ``group`` (one recipe: default, each candidate alone) share a line
    fitted through all their confirmation runs: a candidate's expected value then rests on
    every run, not on its own 4, and the seed noise is pooled over every candidate's runs.
    """
    from scipy.stats import t as student

    held = [c for c in confirmed if c.holds]
    fits, squares, dof = line_fits(confirmed, group or (lambda c: c.trial))
    if not held or dof <= 0:
        return held
    spread = math.sqrt(squares / dof)
    factor = float(student.ppf(HOLD_CONFIDENCE, dof))
    return [
        c
        for c in held
        if fits[c.trial][0] + factor * spread * math.sqrt(1 + fits[c.trial][1]) <= limit
    ]


def line_fits(
    confirmed: list[Candidate], group: Callable[[Candidate], object]
) -> tuple[dict[int, tuple[float, float]], float, int]:
    """Per candidate (trial number): the training accuracy a line through its group's runs
    expects at its weight decay, and that estimate's variance in units of one run's; the
    residual sum of squares over every run, and its degrees of freedom.

    Computed from each candidate's mean, spread and count (its runs are not kept): the least
    squares line through all runs is the line through the means weighted by their counts.
    """
    groups: dict[object, list[Candidate]] = {}
    for c in confirmed:
        if c.confirm_seeds > 0 and math.isfinite(c.train_accuracy_mean):
            groups.setdefault(group(c), []).append(c)
    fits: dict[int, tuple[float, float]] = {}
    squares, dof = 0.0, 0
    for members in groups.values():
        n = [float(c.confirm_seeds) for c in members]
        x = [math.log(c.weight_decay) for c in members]
        y = [c.train_accuracy_mean for c in members]
        total = sum(n)
        x_mean = sum(w * v for w, v in zip(n, x, strict=True)) / total
        y_mean = sum(w * v for w, v in zip(n, y, strict=True)) / total
        sxx = sum(w * (v - x_mean) ** 2 for w, v in zip(n, x, strict=True))
        lines = sxx > 1e-12 * max(1.0, x_mean**2)
        slope = (
            sum(w * (a - x_mean) * (b - y_mean) for w, a, b in zip(n, x, y, strict=True)) / sxx
            if lines
            else 0.0
        )
        for c, w, a, b in zip(members, n, x, y, strict=True):
            fitted = y_mean + slope * (a - x_mean) if lines else b
            variance = 1 / total + (a - x_mean) ** 2 / sxx if lines else 1 / w
            fits[c.trial] = (fitted, variance)
            squares += (w - 1) * c.train_accuracy_std**2 + w * (b - fitted) ** 2
        dof += int(total) - (2 if lines else len(members))
    return fits, squares, dof


def recipes(study: optuna.Study) -> Callable[[Candidate], object]:
    """A candidate's recipe (its trial's parameters but weight decay): ``robust``'s groups."""
    params = {t.number: recipe_of(t) for t in study.get_trials(deepcopy=False)}
    return lambda c: repr(sorted(params.get(c.trial, {}).items()))


def choose(
    confirmed: list[Candidate],
    limit: float,
    expected: dict[int, float] | None = None,
    group: Callable[[Candidate], object] | None = None,
) -> tuple[Candidate, bool]:
    """The candidate to recommend, and whether it held the limit (``robust``).

    The best ``expected`` value (by trial number; default: the confirmation's mean) among the
    robust ones; if none is, the most often feasible one (then the best mean), unconfirmed.
    """
    held = robust(confirmed, limit, group)
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
        if robust(confirmed, config.max_train_acc, recipes(study)):
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
    expected = expected_with_runs(study, observed)
    choice, _ = choose(confirmed, config.max_train_acc, expected, recipes(study))
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
    expected = expected_with_runs(study, observed or {})
    choice, held = choose(confirmed, limit, expected, recipes(study))
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
