"""The progress display: counts that partition the trials, the best so far, an ETA from the
measured seconds per pass, a share done that never goes backwards, and no long silence."""

from __future__ import annotations

import io

import pytest

from search.config import StudyConfig
from search.data.splits import Splits
from search.reporting.progress import QUIET_S, StudyProgress, Tally, choose_mode
from search.study.record import Counts
from tests.helpers import enqueued_study


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test moves: no test here waits on real time."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_choose_mode_bar_only_on_a_terminal_of_one_process() -> None:
    assert choose_mode(False, Terminal()) == "bar"
    assert choose_mode(False, io.StringIO()) == "lines"
    assert choose_mode(False, Terminal(), workers=2) == "lines"
    assert choose_mode(True, Terminal()) == "off"


def test_tally_counts_each_trial_once(tiny_config: StudyConfig, tiny_splits: Splits) -> None:
    # Over the limit after epoch 1: both trials stop there, over the limit, not "pruned and
    # infeasible" twice over.
    config = tiny_config.replace(max_train_acc=0.3)
    study = enqueued_study(config, tiny_splits, [1e-6, 1e-5])
    tally = Tally(study)
    assert tally.counts == Counts(over_limit=2)
    assert tally.counts.total == len(study.trials) == 2
    assert tally.finished == [1, 1] and tally.running == {}
    assert tally.best is None and tally.best_text() == "no feasible trial yet"


def test_progress_expects_stopped_trials_to_stay_short(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    config = tiny_config.replace(max_train_acc=0.3)  # every trial stops after 1 of 2 epochs
    study = enqueued_study(config, tiny_splits, [1e-6, 1e-5])
    progress = StudyProgress(study, config.replace(trials=6), "off")
    # 4 more trials of 1 epoch each (every trial seen stopped at 1), not of the recipe's 2.
    assert progress.forecast.epochs_expected == 6 and progress.forecast.passes == 4


def test_eta_is_passes_left_times_measured_seconds_per_pass(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    study = enqueued_study(tiny_config, tiny_splits, [1e-4, 1e-3])  # both complete, 2 epochs
    now = Clock()
    out = Terminal()
    with StudyProgress(
        study, tiny_config.replace(trials=4), "bar", slots=1, out=out, now=now
    ) as progress:
        assert progress.eta_text() == "ETA after the first epoch"
        progress.epoch(2, 0)
        now.t += 12.0
        progress.epoch(2, 1)  # one slot: an epoch is a pass, 12 s
        progress.refresh()
        # Trial 2 has 1 epoch left, trial 3 has 2: 3 passes of 12 s.
        assert progress.forecast.passes == 3
        assert progress.seconds_left() == 36
        now.t += 5.0  # into the next pass: the ETA counts down
        assert progress.seconds_left() == 31 and progress.eta_text() == "ETA 0:31"
        now.t += 60.0  # a slow pass holds the ETA at the passes after it
        assert progress.seconds_left() == 24
        progress.redraw()
    screen = out.getvalue()
    best = study.best_trial
    assert f"[2/4] 1 running, best #{best.number} {best.value:.2%}" in screen
    assert "elapsed, ETA 0:24" in screen


def test_share_done_never_goes_backwards(tiny_config: StudyConfig, tiny_splits: Splits) -> None:
    config = tiny_config.replace(max_train_acc=0.3, epochs=4)
    study = enqueued_study(config, tiny_splits, [1e-6, 1e-5])  # both stopped at epoch 1
    progress = StudyProgress(study, config.replace(trials=4), "off", slots=2)
    progress.epoch(2, 0)
    progress.epoch(3, 0)
    progress.forecast = progress.estimate()
    before = progress.fraction()
    assert before == pytest.approx(2 / 4)  # 2 epochs done of 2 + 2 expected
    # Trial 2 goes on past epoch 1, where every earlier trial stopped: the expected total
    # grows by more than the epoch done (3 of 8 now)...
    progress.epoch(2, 1)
    progress.forecast = progress.estimate()
    assert progress.forecast.fraction == pytest.approx(3 / 8)
    # ...but what is shown holds.
    assert progress.fraction() == before


def test_lines_say_where_the_study_stands_when_nothing_was_said(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    study = enqueued_study(tiny_config, tiny_splits, [1e-4, 1e-3])
    now = Clock()
    out = io.StringIO()
    progress = StudyProgress(study, tiny_config.replace(trials=4), "lines", out=out, now=now)
    progress.close()  # the test drives the clock thread's work itself
    progress.refresh()
    assert out.getvalue() == ""
    now.t += QUIET_S
    progress.refresh()
    line = out.getvalue()
    assert line.startswith("search: 2/4 finished; trials 2 feasible, 0 infeasible, 0 over the ")
    assert "limit, 0 pruned, 0 running, 0 failed; 50% of the expected epochs" in line
    assert line.rstrip().endswith("ETA after the first epoch")
    progress.refresh()  # just said: quiet again for QUIET_S
    assert out.getvalue() == line


def test_finished_trial_line_carries_best_and_eta(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    study = enqueued_study(tiny_config, tiny_splits, [1e-4, 1e-3])
    out = io.StringIO()
    progress = StudyProgress(study, tiny_config.replace(trials=4), "lines", out=out)
    progress.close()
    progress.finished(study, study.trials[1])
    line = out.getvalue()
    assert line.startswith("[2/4] trial   1  weight_decay=1.00e-03")
    assert "feasible  (best #" in line and line.rstrip().endswith("ETA after the first epoch)")
