"""Search quality's summary of studies by budget (``search.benchmarks.quality``), and how it shows
a real study's progress from the study's own lines; the command itself is tested in
tests/test_quality.py."""

from __future__ import annotations

import io
import math
import sys

import pytest

from search.benchmarks.quality import QualityError, advance, follow, summarize
from search.config import StudyConfig
from search.data.splits import Splits
from search.errors import UserError
from search.reporting.steps import Steps


def held(regret: float | None, feasible: int) -> dict[str, object]:
    """A study's recommendation as retrained on 8 held-out seeds."""
    return {"regret": regret, "feasible_running": feasible, "seeds": 8}


def test_summarize_gives_each_budgets_held_out_regret_feasibility_and_median_wall() -> None:
    studies = [
        {"trials": 10, "held_out": held(0.002, 8), "wall_s": 30.0},
        {"trials": 10, "held_out": held(0.0, 7), "wall_s": 10.0},
        {"trials": 10, "held_out": held(0.001, 6), "wall_s": 20.0},  # broke the limit twice
        {"trials": 20, "held_out": held(0.0, 8), "wall_s": 50.0},
        {"trials": 20, "held_out": None, "wall_s": 70.0},  # recommended nothing
    ]
    summary = summarize(studies, (10, 20, 40), "running")
    assert summary["10"] == {
        "median": 0.001,
        "p90": 0.002,
        "worst": 0.002,
        "n": 3,
        "robust": 2,  # 7 of 8 held-out seeds or more
        "median_wall_s": 20.0,
    }
    assert summary["20"]["median"] == math.inf  # the median of 0 and inf
    assert summary["20"]["worst"] == math.inf and summary["20"]["median_wall_s"] == 60.0
    assert summary["20"]["robust"] == 1
    assert set(summary) == {"10", "20"}  # a budget without studies is left out


def test_quality_error_is_a_user_error() -> None:
    assert issubclass(QualityError, UserError)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def script(*lines: str, status: int = 0) -> list[str]:
    """A command that prints ``lines`` as ``python -m search.run`` would, then exits."""
    body = "".join(f"print({line!r}, flush=True)\n" for line in lines)
    return [sys.executable, "-c", f"{body}raise SystemExit({status})"]


def test_follow_counts_trial_lines_and_relays_the_others() -> None:
    out = io.StringIO()
    steps = Steps(3, "study 1 of 2", unit="trial", out=out, every_s=0, tick_s=None)
    command = script(
        "fetching MNIST (all four files) into data/MNIST/raw ...",
        "[1/3] trial   0  weight_decay=1.00e-06  INFEASIBLE  (no feasible trial yet)",
        "[3/3] trial   2  weight_decay=5.72e-03  feasible  (best #2 94.80% (wd 5.72e-03), "
        "ETA 0:00)",
        "inspect: python -m search.dashboard --study-name quality-t3-s0",
    )
    with steps:
        follow(command, steps)
    assert steps.done == 3
    lines = out.getvalue().splitlines()
    assert lines[0] == "  fetching MNIST (all four files) into data/MNIST/raw ..."
    assert lines[1].startswith("study 1 of 2: 1/3 trials") and "no feasible trial yet" in lines[1]
    assert lines[2].startswith("study 1 of 2: 3/3 trials") and "done  best #2 94.80%" in lines[2]
    assert "(wd 5.72e-03)" in lines[2] and "weight_decay" not in out.getvalue()
    assert lines[3] == "  inspect: python -m search.dashboard --study-name quality-t3-s0"


def test_follow_relays_nothing_when_quiet() -> None:
    out = io.StringIO()
    steps = Steps(1, "study", unit="trial", quiet=True, out=out, every_s=0, tick_s=None)
    follow(script("[1/1] trial 0  (no feasible trial yet)", "a summary line"), steps)
    assert steps.done == 1 and out.getvalue() == ""


def test_follow_turns_a_failed_study_into_one_line() -> None:
    steps = Steps(5, "study", out=io.StringIO(), tick_s=None)
    command = script("error: --wd-low must be below --wd-high", status=2)
    with pytest.raises(QualityError, match=r"failed with exit status 2: error: --wd-low must"):
        follow(command, steps)


def test_advance_turns_the_grids_run_epochs_into_steps() -> None:
    clock = FakeClock()
    out = io.StringIO()
    steps = Steps(48, "grid 2 of 2", unit="run-epoch", out=out, tick_s=None, clock=clock)
    done = advance(steps)
    for trained in (16, 32, 48, 48):  # after each pass of a pool of 16; then the pool's end
        clock.now += 60
        done(trained)
    assert steps.done == 48
    lines = out.getvalue().splitlines()
    assert lines[0] == "grid 2 of 2: 16/48 run-epochs, 1:00 elapsed, ETA 2:00"
    assert lines[-1] == "grid 2 of 2: 48/48 run-epochs, 3:00 elapsed, done"


def test_grid_tells_its_run_epochs_after_every_pass(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    from search.training.grid import train_grid_histories

    told: list[int] = []
    points = [(1e-4, 1), (1e-3, 2), (1e-2, 3)]
    histories = train_grid_histories(tiny_splits, tiny_config, points, 2, told.append)
    # Pools of 2 and 1 runs, 2 epochs each: a word after every pass, not only per pool.
    assert told == [2, 4, 4, 5, 6, 6]
    assert [len(h or []) for h in histories] == [2, 2, 2]
