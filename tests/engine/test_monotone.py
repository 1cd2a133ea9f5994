"""The margin constraint pruning and the frontier allow for, pinned on recorded histories.

The histories are every full-length (10-epoch) run of the committed quality grids
(docs/quality/: both measures' grids, from the whole weight-decay range to the dense
grid across the edge, 8 held-out seeds there), each run's training accuracy per epoch by both
measures. ``python -m search.evidence`` prints the same counts.
"""

from __future__ import annotations

import pytest

from search.benchmarks import evidence
from search.engine.monotone import OVER_LIMIT_MARGIN, over_counts, over_for_good, recoveries
from tests.helpers import REPO

LIMITS = (0.90, 0.95, 0.97)


def histories(measure: str) -> list[list[float]]:
    """Every recorded full-length run's training accuracy per epoch by ``measure``: the runs
    of both measures' grids (each once, however many of the bench's files share it)."""
    return evidence.histories(evidence.load(REPO / evidence.EVIDENCE_DIR), measure)


def test_the_histories_are_many_full_length_runs_across_the_edge() -> None:
    runs = histories("running")
    assert len(runs) >= 300 and {len(r) for r in runs} == {10}
    over, _ = over_counts(runs, 0.95)
    assert over >= 100  # enough runs pass the default limit for the rule to be measured


@pytest.mark.parametrize("limit", LIMITS)
def test_the_running_accuracy_never_came_back_under_a_limit_it_passed(limit: float) -> None:
    over, recovered = over_counts(histories("running"), limit)
    assert over > 0 and recovered == 0
    assert OVER_LIMIT_MARGIN["running"] == 0.0


def test_the_final_weights_accuracy_came_back_by_less_than_its_margin() -> None:
    falls = [r.fall for limit in LIMITS for r in recoveries(histories("final"), limit)]
    assert falls, "the final weights' accuracy did come back: the margin is read off that"
    margin = OVER_LIMIT_MARGIN["final"]
    # The margin covers every fall seen, and is that fall rounded up, not a guess far above.
    assert max(falls) < margin <= max(falls) + 0.001


def test_a_trial_within_the_margin_is_not_stopped_for_good() -> None:
    run = next(r for r in recoveries(histories("final"), 0.95))
    assert not over_for_good(run.accuracy, 0.95, "final")
    assert over_for_good(run.accuracy, 0.95, "running")  # the running rule has no margin
    assert over_for_good(0.95 + OVER_LIMIT_MARGIN["final"] + 1e-4, 0.95, "final")


def test_recoveries_reads_each_epoch_over_the_limit_of_a_run_that_ends_within_it() -> None:
    found = recoveries([[0.94, 0.952, 0.951, 0.949], [0.96, 0.97, 0.98, 0.99]], 0.95)
    assert [(r.run, r.epoch, round(r.fall, 4)) for r in found] == [(0, 2, 0.003), (0, 3, 0.002)]
    assert over_counts([[0.94, 0.952, 0.951, 0.949], [0.96, 0.97, 0.98, 0.99]], 0.95) == (5, 2)
