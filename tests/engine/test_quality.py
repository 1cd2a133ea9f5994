"""Search quality's summary of studies by budget (``search.engine.quality``); the command
itself is tested in tests/test_quality.py."""

from __future__ import annotations

import math

from search.engine.quality import QualityError, summarize
from search.errors import UserError


def test_summarize_gives_each_budgets_median_and_worst_distance_and_median_wall() -> None:
    studies = [
        {"trials": 10, "distance": 0.02, "wall_s": 30.0},
        {"trials": 10, "distance": 0.0, "wall_s": 10.0},
        {"trials": 10, "distance": 0.01, "wall_s": 20.0},
        {"trials": 20, "distance": 0.0, "wall_s": 50.0},
        {"trials": 20, "distance": None, "wall_s": 70.0},  # found no feasible trial
    ]
    summary = summarize(studies, (10, 20, 40))
    assert summary["10"] == {
        "median_distance": 0.01,
        "worst_distance": 0.02,
        "median_wall_s": 20.0,
    }
    assert summary["20"]["median_distance"] == math.inf  # the median of 0 and inf
    assert summary["20"]["worst_distance"] == math.inf and summary["20"]["median_wall_s"] == 60.0
    assert set(summary) == {"10", "20"}  # a budget without studies is left out


def test_quality_error_is_a_user_error() -> None:
    assert issubclass(QualityError, UserError)
