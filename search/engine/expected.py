"""What a trial's weight decay is expected to score, read off its neighbours, not its own draw.

Near the feasibility edge a trial's validation accuracy moves from seed to seed by more than
the whole difference between two weight decays a few percent apart (docs/search-quality.md).
The single best trial of a study is then the luckiest draw among its neighbours (the winner's
curse), and a search that anchors on it, or recommends it, lands wherever the luck was.
``expected_values`` replaces each complete trial's own value by a local linear fit of the
values of the complete trials around it, in position on the parameter's range: neighbours a few
percent apart share most of their expected value and none of their seed noise. The kernel's
width is chosen by leave-one-out cross-validation over the trials themselves (``BANDWIDTHS``),
so a study with a sharp optimum keeps it sharp and one whose values move slowly averages
widely; nothing in it knows any task's scale.

Plain NumPy over Optuna's trials, no torch; the edge sampler (its anchor) and the choice of
candidates (``search.engine.choose``) read it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.engine.edge import unit_scale
from search.study.record import is_feasible, recipe_of

# Kernel widths tried, as shares of the parameter's range (of five decades of weight decay:
# 0.0125 to 0.8 decades, 3% to a factor of 6); cross-validation picks one per study.
BANDWIDTHS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
# Fewer complete trials than this in a recipe and each keeps its own value: a fit needs
# neighbours to compare with.
MIN_TRIALS = 4


def expected_values(
    trials: Sequence[FrozenTrial],
    param: str = "weight_decay",
    extra: Sequence[tuple[FrozenTrial, float]] = (),
) -> dict[int, float]:
    """Each complete trial's expected value (by trial number), fitted per recipe.

    ``extra``: further (trial, value) observations at a trial's own parameters (its
    confirmation runs, with seeds of their own), which count as neighbours at distance 0.
    """
    complete = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and param in t.params
    ]
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in complete:
        groups.setdefault(repr(recipe_of(trial, param)), []).append(trial)
    expected: dict[int, float] = {}
    for group in groups.values():
        distribution = group[0].distributions[param]
        assert isinstance(distribution, FloatDistribution)
        to_unit, _ = unit_scale(distribution)
        numbers = {t.number for t in group}
        points = [(to_unit(t.params[param]), float(t.value)) for t in group]  # type: ignore[arg-type]
        points += [(to_unit(t.params[param]), v) for t, v in extra if t.number in numbers]
        x = np.array([p[0] for p in points])
        y = np.array([p[1] for p in points])
        at = np.array([to_unit(t.params[param]) for t in group])
        fitted = smooth(x, y, at) if len(group) >= MIN_TRIALS else None
        for i, trial in enumerate(group):
            expected[trial.number] = float(trial.value) if fitted is None else float(fitted[i])  # type: ignore[arg-type]
    return expected


def best_expected_trial(
    trials: Sequence[FrozenTrial], maximize: bool = True, param: str = "weight_decay"
) -> FrozenTrial | None:
    """The feasible complete trial with the best expected value, if any."""
    expected = expected_values(trials, param)
    feasible = [t for t in trials if t.number in expected and is_feasible(t)]
    sign = 1.0 if maximize else -1.0
    return max(feasible, key=lambda t: sign * expected[t.number], default=None)


def smooth(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A local linear fit of ``y`` on ``x``, evaluated ``at``, with the Gaussian kernel width
    of ``BANDWIDTHS`` that predicts each point best from the others."""
    scores = [(loo_error(x, y, h), h) for h in BANDWIDTHS]
    _, width = min(scores)
    return local_linear(x, y, at, width)


def loo_error(x: np.ndarray, y: np.ndarray, width: float) -> float:
    """Mean squared error of predicting each point from the others (leave-one-out)."""
    weights = kernel(x, x, width)
    np.fill_diagonal(weights, 0.0)
    # Points at the very same position are one observation repeated: leave them all out.
    weights[np.abs(x[:, None] - x[None, :]) < 1e-12] = 0.0
    predicted = fit_rows(x, y, x, weights)
    keep = np.isfinite(predicted)
    if not keep.any():
        return float("inf")
    return float(np.mean((predicted[keep] - y[keep]) ** 2)) + (~keep).sum() * float(np.var(y))


def local_linear(x: np.ndarray, y: np.ndarray, at: np.ndarray, width: float) -> np.ndarray:
    fitted = fit_rows(x, y, at, kernel(at, x, width))
    return np.where(np.isfinite(fitted), fitted, np.interp(at, np.sort(x), y[np.argsort(x)]))


def kernel(at: np.ndarray, x: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((at[:, None] - x[None, :]) / width) ** 2)


def fit_rows(x: np.ndarray, y: np.ndarray, at: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row i: the weighted least-squares line through (x, y) with ``weights[i]``, at ``at[i]``;
    the weighted mean where the weights see a single position, NaN where they see none."""
    d = x[None, :] - at[:, None]
    s0 = weights.sum(axis=1)
    s1 = (weights * d).sum(axis=1)
    s2 = (weights * d * d).sum(axis=1)
    t0 = (weights * y).sum(axis=1)
    t1 = (weights * d * y).sum(axis=1)
    det = s0 * s2 - s1 * s1
    with np.errstate(divide="ignore", invalid="ignore"):
        line = (s2 * t0 - s1 * t1) / det
        mean = t0 / s0
    flat = ~(det > 1e-12 * np.maximum(s0 * s2, 1e-300))
    return np.where(flat, mean, line)
