"""The report's figures say what the trials show: the feasible band only where trials proved it,
the edge close up, the history in the order trials finished, and no legend over the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from search.reporting.figures import BAND, figures
from tests.reporting.stored import BY_PRUNER, EPOCHS, LIMIT, OVER_LIMIT, add_trial, empty_study


def rising_to(train: float, val: float, epochs: int = EPOCHS) -> list[tuple[float, float]]:
    """A learning curve that ends at (train, val) after ``epochs`` epochs."""
    return [(train - 0.02 * (epochs - e), val - 0.02 * (epochs - e)) for e in range(1, epochs + 1)]


# (weight decay, curve, finished after s, pruned reason): numbered 0 to 7 in this order, but
# finishing in the order 0, 3, 4, 5, 1, 2, 6, 7, as trials trained side by side do.
TRIALS = [
    (1e-5, rising_to(0.96, 0.955, 2), 10, OVER_LIMIT),
    (4.7e-3, rising_to(0.952, 0.948, 3), 50, OVER_LIMIT),
    (5.3e-3, rising_to(0.948, 0.947), 60, None),  # the smallest feasible: the best
    (8e-3, rising_to(0.94, 0.935), 20, None),
    (6e-3, rising_to(0.951, 0.96), 30, None),  # complete over the limit, inside the feasible
    (2e-2, rising_to(0.92, 0.93), 40, None),
    (1.2e-2, rising_to(0.92, 0.91, 2), 70, BY_PRUNER),  # feasibility unknown
    (5.1e-3, rising_to(0.951, 0.95, 3), 80, OVER_LIMIT),
]
RANK = {0: 1, 3: 2, 4: 3, 5: 4, 1: 5, 2: 6, 6: 7, 7: 8}  # trial number -> order of finishing
FEASIBLE = [5.3e-3, 8e-3, 2e-2]
INFEASIBLE = [1e-5, 4.7e-3, 5.1e-3, 6e-3]  # the largest of them is above the smallest feasible


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    study = empty_study(tmp_path_factory.mktemp("figures"))
    for weight_decay, curve, finished, reason in TRIALS:
        add_trial(study, weight_decay, curve, finished, reason)
    return study


@pytest.fixture(scope="module")
def drawn(study: optuna.Study) -> dict[str, Figure]:
    return {f.name: f.figure for f in figures(study)}


def bands(ax: Axes) -> np.ndarray:
    """Each stretch of the feasible band, a row each: its lowest and highest weight decay, and
    its top."""
    out = []
    for band in (c for c in ax.collections if c.get_gid() == BAND):
        vertices = np.concatenate([path.vertices for path in band.get_paths()])
        out.append((vertices[:, 0].min(), vertices[:, 0].max(), vertices[:, 1].max()))
    return np.array(sorted(out))


def test_weight_decay_band_covers_only_what_trials_proved_feasible(
    drawn: dict[str, Figure],
) -> None:
    main, zoom = drawn["weight_decay.png"].axes
    for ax in (main, zoom):
        # Broken at the infeasible 6e-3: the smallest feasible trial stands alone.
        assert bands(ax) == pytest.approx(np.array([(5.3e-3, 5.3e-3, LIMIT), (8e-3, 2e-2, LIMIT)]))
        spans = bands(ax)
        assert all(any(low <= wd <= high for low, high, _ in spans) for wd in FEASIBLE)
        assert not any(low <= wd <= high for low, high, _ in spans for wd in INFEASIBLE)
    assert (min(FEASIBLE), max(FEASIBLE)) == pytest.approx((bands(main)[0][0], bands(main)[-1][1]))


def test_weight_decay_zooms_on_the_edge_with_its_limit_and_both_kinds_of_trials(
    drawn: dict[str, Figure],
) -> None:
    figure = drawn["weight_decay.png"]
    main, zoom = figure.axes
    left, right = zoom.get_xlim()
    # The bracket, from the smallest feasible (5.3e-3) to the largest infeasible (6e-3), with
    # room on each side, in a panel narrower than the overview.
    assert (
        left < 5.3e-3 and 6e-3 < right and right / left < main.get_xlim()[1] / main.get_xlim()[0]
    )
    marks = {line.get_label(): line.get_xdata()[0] for line in zoom.get_lines()}
    assert marks["largest proven infeasible: 0.006"] == 6e-3
    assert marks["smallest found feasible: 0.0053"] == 5.3e-3
    (limit,) = [line for line in zoom.get_lines() if line.get_label().startswith("training-acc")]
    assert set(limit.get_ydata()) == {LIMIT} and zoom.get_ylim()[0] < LIMIT < zoom.get_ylim()[1]
    shown = {
        x
        for c in zoom.collections
        if isinstance(c, PathCollection)
        for x, y in c.get_offsets()
        if left <= x <= right
    }
    assert {5.1e-3, 5.3e-3, 6e-3} <= shown  # infeasible and feasible trials in view
    labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert "smallest found feasible: 0.0053" in labels


def test_weight_decay_without_an_infeasible_trial_has_no_edge_panel(tmp_path: Path) -> None:
    study = empty_study(tmp_path)
    for number, weight_decay in enumerate([3e-2, 1e-2]):
        add_trial(study, weight_decay, rising_to(0.93, 0.92), number)
    figure = {f.name: f.figure for f in figures(study)}["weight_decay.png"]
    (ax,) = figure.axes
    assert bands(ax) == pytest.approx(
        np.array([(1e-2, 3e-2, LIMIT)])
    )  # no padding beyond the trials


def test_history_runs_in_the_order_trials_finished(
    study: optuna.Study, drawn: dict[str, Figure]
) -> None:
    ax = drawn["optimization_history.png"].axes[0]
    assert "order in which the trials finished" in ax.get_xlabel()
    plotted = {
        (x, y)
        for c in ax.collections
        if isinstance(c, PathCollection) and not c.get_label().startswith("best feasible:")
        for x, y in c.get_offsets()
    }
    assert plotted == {(RANK[t.number], t.user_attrs["val_accuracy"]) for t in study.trials}
    (line,) = [line for line in ax.get_lines() if line.get_label() == "best feasible so far"]
    # #3 finished 2nd; #4 (3rd) is better but infeasible; #2 finished 6th and beat #3. By
    # trial number, #2 would have set the best from the 2nd point on.
    assert list(line.get_xdata()) == [2, 3, 4, 5, 6, 7, 8]
    assert list(line.get_ydata()) == [0.935] * 4 + [0.947] * 3
    (star,) = [c for c in ax.collections if c.get_label().startswith("best feasible: #2 ")]
    assert star.get_offsets().tolist() == [[6, 0.947]] and "6th to finish" in star.get_label()
    (numbers,) = ax.child_axes  # the trial numbers of the steps, above the axes
    assert [t.get_text() for t in numbers.get_xticklabels()] == ["#3", "#2"]
    assert list(numbers.get_xticks()) == [2, 6]


def points(ax: Axes) -> np.ndarray:
    """Every plotted line vertex and scatter point of ``ax``, in display pixels."""
    out = [line.get_transform().transform(line.get_xydata()) for line in ax.get_lines()]
    out += [
        c.get_offset_transform().transform(c.get_offsets())
        for c in ax.collections
        if isinstance(c, PathCollection)
    ]
    return np.concatenate([p for p in out if len(p)] or [np.empty((0, 2))])


@pytest.mark.parametrize(
    "name",
    ["optimization_history.png", "weight_decay.png", "learning_curves.png", "best_trial.png"],
)
def test_no_legend_covers_data_or_leaves_the_figure(drawn: dict[str, Figure], name: str) -> None:
    figure = drawn[name]
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = [a for ax in figure.axes for a in (ax, *ax.child_axes)]
    legends = [*figure.legends, *(ax.get_legend() for ax in axes if ax.get_legend())]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert Bbox.union([box, figure.bbox]).bounds == pytest.approx(figure.bbox.bounds)
        for ax in axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), ax
            assert not any(box.contains(x, y) for x, y in points(ax))
