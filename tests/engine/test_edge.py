"""The edge model: which way the constraint runs, what is proven infeasible, where between two
trials the constraint crosses the limit, and positions in [0, 1] of a parameter's range."""

from __future__ import annotations

import pytest
from optuna.distributions import FloatDistribution

from search.engine.edge import (
    BELIEF_SPREAD,
    Verdict,
    constraint_direction,
    edge_belief,
    frontier_of,
    unit_scale,
)


@pytest.mark.parametrize(
    ("points", "direction"),
    [
        ([(0.1, 0.05), (0.3, 0.03), (0.5, 0.01), (0.7, -0.01), (0.9, -0.04)], 1),
        ([(0.1, -0.05), (0.3, -0.03), (0.5, 0.01), (0.7, 0.02), (0.9, 0.04)], -1),
        ([(0.1, 0.02), (0.3, -0.01), (0.5, 0.03), (0.7, -0.02), (0.9, 0.01)], 0),
        ([(0.1, 0.05), (0.9, -0.04)], 0),  # too few trials to tell
    ],
)
def test_constraint_direction_is_read_off_the_trials(
    points: list[tuple[float, float]], direction: int
) -> None:
    assert constraint_direction(points) == direction


def test_frontier_is_the_last_infeasible_trial_before_every_feasible_one() -> None:
    known = [Verdict(0.1, False, 0.05), Verdict(0.4, False, 0.01), Verdict(0.5, True, -0.01)]
    assert frontier_of(known, 1) == 0.4
    # Seed noise: an infeasible trial above a feasible one proves nothing below it.
    noisy = [*known, Verdict(0.55, False, 0.001)]
    assert frontier_of(noisy, 1) == 0.4
    assert frontier_of(known, 0) is None


def test_edge_belief_centres_where_the_constraint_crosses_between_opposite_signs() -> None:
    # Over the limit by 0.03 at 0.2, under it by 0.01 at 0.6: linear, it crosses at 0.5.
    belief = edge_belief(0.2, 0.03, 0.6, -0.01)
    assert belief.centre == pytest.approx(0.5)
    assert belief.spread == pytest.approx(BELIEF_SPREAD * 0.4)
    # The same bracket given the other way round.
    assert edge_belief(0.6, -0.01, 0.2, 0.03).centre == pytest.approx(0.5)


@pytest.mark.parametrize(("v0", "v1", "centre"), [(1.0, -0.001, 0.9), (0.001, -1.0, 0.1)])
def test_edge_belief_holds_a_far_off_value_inside_the_middle_80_percent(
    v0: float, v1: float, centre: float
) -> None:
    assert edge_belief(0.0, v0, 1.0, v1).centre == pytest.approx(centre)


@pytest.mark.parametrize(
    ("v0", "v1"), [(0.03, 0.01), (-0.03, -0.01), (None, -0.01), (0.03, None), (0.0, 0.0)]
)
def test_edge_belief_is_uniform_where_the_values_do_not_bracket_the_limit(
    v0: float | None, v1: float | None
) -> None:
    belief = edge_belief(0.2, v0, 0.6, v1)
    assert belief.spread is None and belief.centre == pytest.approx(0.4)


def test_unit_scale_maps_a_log_range_to_the_unit_interval_and_back() -> None:
    to_unit, from_unit = unit_scale(FloatDistribution(1e-6, 1e-1, log=True))
    assert to_unit(1e-6) == pytest.approx(0.0) and to_unit(1e-1) == pytest.approx(1.0)
    assert to_unit(10**-3.5) == pytest.approx(0.5)  # decades count alike
    assert from_unit(0.0) == pytest.approx(1e-6) and from_unit(1.0) == pytest.approx(1e-1)
    for value in (1e-6, 3e-5, 2e-3, 1e-1):
        assert from_unit(to_unit(value)) == pytest.approx(value)
    assert from_unit(1.5) == 1e-1 and from_unit(-0.5) == 1e-6  # held inside the range


def test_unit_scale_of_a_linear_range_is_linear() -> None:
    to_unit, from_unit = unit_scale(FloatDistribution(0.0, 10.0))
    assert to_unit(2.5) == pytest.approx(0.25) and from_unit(0.25) == pytest.approx(2.5)
