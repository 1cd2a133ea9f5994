"""The study's recommendation: which trial's weight decay to ship, after seed confirmation.

A best trial found on the feasibility edge is often feasible by its seed's luck. ``search.study
.confirm`` retrains the best few candidates with further seeds; this module chooses among
them and reads the stored choice back. It never imports torch: export, report and dashboard
read the recommendation without training anything.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import save_note

from search.config import SIBLING_SUFFIX
from search.study.edge import is_feasible, unit_scale
from search.study.notes import best_feasible_note
from search.study.sampling import EDGE_RESOLUTION, best_feasible_trial

RECOMMENDATION_ATTR = "recommendation"  # the study user attribute that holds it
# A candidate is confirmed when at least this share of its confirmation runs is feasible.
MIN_FEASIBLE_FRACTION = 0.8
# Candidates are at least this far apart (share of the weight decay's log range, 0.05 decades):
# near-identical weight decays on the edge would all pass or fail together, so the few
# confirmed are spread from the edge inwards and one of them is likely to hold.
CANDIDATE_SPACING = 2 * EDGE_RESOLUTION
# Candidates whose value is further than this below the best trial's (0.5 points of accuracy)
# are confirmed only if none of the closer ones holds. Across seeds a weight decay's mean moves
# by 0.1 to 0.3 points, so they can hardly beat it on the mean; they are the fallback when the
# best turns out feasible by luck, and confirming them up front would cost as much again.
CONTENTION_MARGIN = 0.005


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def confirm_study_name(study_name: str) -> str:
    return study_name + SIBLING_SUFFIX  # the sibling study that holds the runs


@dataclass(frozen=True)
class Candidate:
    """One candidate trial's confirmation: its R runs with seeds of their own."""

    trial: int
    weight_decay: float
    confirm_seeds: int
    val_accuracy_mean: float
    val_accuracy_std: float
    train_accuracy_mean: float
    feasible_fraction: float

    @property
    def holds(self) -> bool:
        """Feasible in enough of its seeds to be recommended as confirmed."""
        return self.feasible_fraction >= MIN_FEASIBLE_FRACTION

    @classmethod
    def from_runs(
        cls,
        trial: int,
        weight_decay: float,
        runs: list[tuple[float, float]],
        seeds: int,
        limit: float,
    ) -> Candidate:
        """``runs``: (train accuracy, validation accuracy) of each of the ``seeds`` runs that
        finished; one that did not (it diverged) counts as infeasible."""
        train = [t for t, _ in runs]
        val = [v for _, v in runs]
        nan = float("nan")
        return cls(
            trial=trial,
            weight_decay=weight_decay,
            confirm_seeds=seeds,
            val_accuracy_mean=statistics.fmean(val) if val else nan,
            val_accuracy_std=statistics.stdev(val) if len(val) > 1 else 0.0,
            train_accuracy_mean=statistics.fmean(train) if train else nan,
            feasible_fraction=sum(t <= limit for t in train) / seeds,
        )


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


def record_recommendation(
    study: optuna.Study, confirmed: list[Candidate], cost: dict[str, Any]
) -> dict[str, Any]:
    """Choose among ``confirmed`` and store the choice on the study; returns what was stored."""
    choice, held = choose(confirmed)
    best = best_feasible_trial(study)
    stored = {
        **asdict(choice),
        "confirmed": held,
        "min_feasible_fraction": MIN_FEASIBLE_FRACTION,
        "best_trial": None if best is None else best.number,  # what it was confirmed against
        "candidates": [asdict(c) for c in confirmed],
        "confirm_study": confirm_study_name(study.study_name),
        **cost,
    }
    study.set_user_attr(RECOMMENDATION_ATTR, stored)
    return stored


def save_study_note(study: optuna.Study, extra: str = "") -> None:
    """The note on top of the study's dashboard page: best trial, recommendation, ``extra``."""
    summary = study.user_attrs.get("best_feasible_trial")
    if summary is None:
        return
    note = best_feasible_note(study, summary)
    stored = stored_recommendation(study)
    if stored is not None:
        runs = ", ".join(
            f"#{c['trial']} wd={c['weight_decay']:.3g}: feasible {c['feasible_fraction']:.0%}, "
            f"val {c['val_accuracy_mean']:.4f}"
            for c in stored["candidates"]
        )
        note += (
            f"\n\n## Recommended: trial #{stored['trial']}\n\n"
            + describe_recommendation(stored).replace("\n", "\n\n")
            + f"\n\nCandidates: {runs}. Their runs are the trials of study "
            f"`{stored['confirm_study']}`."
        )
    save_note(study, note + extra)


def stored_recommendation(study: optuna.Study) -> dict[str, Any] | None:
    """The stored recommendation if it is current: confirmed against today's best trial.

    A resumed study may have found a better trial since; the old confirmation is then stale
    and ``search.run`` confirms again.
    """
    stored = study.user_attrs.get(RECOMMENDATION_ATTR)
    best = best_feasible_trial(study)
    if stored is None or best is None or stored.get("best_trial") != best.number:
        return None
    return dict(stored)


def recommended_trial(study: optuna.Study) -> FrozenTrial | None:
    """The trial to ship: the confirmed recommendation, else the best feasible trial."""
    stored = stored_recommendation(study)
    if stored is None:
        return best_feasible_trial(study)
    return study.get_trials(deepcopy=False)[stored["trial"]]


def describe_recommendation(stored: dict[str, Any]) -> str:
    """The recommendation in a few lines: what to ship, how it held, what confirming cost."""
    seeds = stored["confirm_seeds"]
    return (
        f"recommended trial #{stored['trial']}: {how_it_held(stored)}\n"
        f"confirmation: {plural(len(stored['candidates']), 'candidate')} x {seeds} seeds in "
        f"study {stored['confirm_study']!r}, {stored['confirm_runs']} runs trained now in "
        f"{stored['confirm_seconds']:.0f}s, not counted in --trials"
    )


def how_it_held(stored: dict[str, Any]) -> str:
    """The recommended weight decay, its verdict and its means over the further seeds."""
    seeds = stored["confirm_seeds"]
    held = round(stored["feasible_fraction"] * seeds)
    verdict = (
        f"feasible in {held} of {seeds} further seeds"
        if stored["confirmed"]
        else f"UNCONFIRMED: no candidate was feasible in {stored['min_feasible_fraction']:.0%} "
        f"of {seeds} further seeds; the most often feasible one held in {held}"
    )
    return (
        f"weight_decay={stored['weight_decay']:.4g}, {verdict}; val_accuracy "
        f"{stored['val_accuracy_mean']:.4f} +- {stored['val_accuracy_std']:.4f}, train_accuracy "
        f"{stored['train_accuracy_mean']:.4f} (means over those seeds)"
    )
