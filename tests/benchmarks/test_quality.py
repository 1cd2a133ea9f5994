"""Search quality's summary of studies by budget (``search.benchmarks.quality``), and how it shows
a real study's progress from the study's own database; the command itself is tested in
tests/test_quality.py."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import optuna
import pytest

from search.benchmarks.quality import QualityError, StudyWatch, advance, follow, summarize
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


def study_script(database: Path, *lines: str, trials: int = 0, status: int = 0) -> list[str]:
    """A command that plays ``python -m search.run`` in miniature: prints ``lines``, stores
    ``trials`` finished trials in a real SQLite study ``s`` at ``database`` (the last the
    best, wd 5.72e-03 at 94.80%, one pruned), then exits with ``status``."""
    body = f"""
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
optuna.logging.set_verbosity(optuna.logging.WARNING)
for line in {list(lines)!r}:
    print(line, flush=True)
if {trials}:
    study = optuna.create_study(
        study_name="s", storage="sqlite:///{database}", direction="maximize"
    )
    space = {{"weight_decay": FloatDistribution(1e-6, 1e-1, log=True)}}
    for i in range({trials}):
        best = i == {trials} - 1
        study.add_trial(create_trial(
            params={{"weight_decay": 5.72e-3 if best else 1e-4}},
            distributions=space,
            value=0.948 if best else (None if i == 0 else 0.9),
            state=TrialState.PRUNED if i == 0 else TrialState.COMPLETE,
        ))
raise SystemExit({status})
"""
    return [sys.executable, "-c", body]


def test_follow_counts_the_studys_finished_trials_and_relays_its_lines(tmp_path: Path) -> None:
    database = tmp_path / "quality.db"
    out = io.StringIO()
    steps = Steps(3, "study 1 of 2", unit="trial", out=out, every_s=0, tick_s=None)
    command = study_script(database, "fetching MNIST into data/MNIST/raw ...", trials=3)
    with steps:
        follow(command, steps, StudyWatch(database, "s"))
    assert steps.done == 3  # read from the database, once more after the study's end
    lines = out.getvalue().splitlines()
    assert "  fetching MNIST into data/MNIST/raw ..." in lines
    done = [line for line in lines if line.startswith("study 1 of 2: 3/3 trials")]
    assert len(done) == 1 and done[0].endswith("done  best #2 94.80% (wd 5.72e-03)")


def test_follow_shows_nothing_when_quiet(tmp_path: Path) -> None:
    database = tmp_path / "quality.db"
    out = io.StringIO()
    steps = Steps(1, "study", unit="trial", quiet=True, out=out, every_s=0, tick_s=None)
    follow(study_script(database, "a line", trials=1), steps, StudyWatch(database, "s"))
    assert steps.done == 1 and out.getvalue() == ""


def test_follow_turns_a_failed_study_into_one_line(tmp_path: Path) -> None:
    database = tmp_path / "quality.db"
    steps = Steps(5, "study", out=io.StringIO(), tick_s=None)
    command = study_script(database, "error: --wd-low must be below --wd-high", status=2)
    with pytest.raises(QualityError, match=r"failed with exit status 2: error: --wd-low must"):
        follow(command, steps, StudyWatch(database, "s"))
    assert steps.done == 0 and not database.exists()


def test_study_watch_reads_nothing_before_the_study_and_creates_nothing(tmp_path: Path) -> None:
    database = tmp_path / "quality.db"
    watch = StudyWatch(database, "s")
    assert watch.progress() is None and not database.exists()  # no file yet, and none made
    storage = f"sqlite:///{database}"
    other = optuna.create_study(study_name="other", storage=storage)
    assert watch.progress() is None  # the file, but not this study yet
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    empty = watch.progress()
    assert empty is not None and empty.finished == [] and empty.best is None
    other.enqueue_trial({"x": 1.0})  # a write elsewhere in the file is no progress of "s"
    tally = watch.progress()
    assert tally is not None and tally.finished == []


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
