"""The progress display: counts, best so far, and an ETA that knows pruned trials are short."""

from __future__ import annotations

import io

from search.config import StudyConfig
from search.data.splits import Splits
from search.reporting.progress import StudyProgress, Tally, choose_mode
from tests.helpers import enqueued_study


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_choose_mode_bar_only_on_a_terminal_of_one_process() -> None:
    assert choose_mode(False, Terminal()) == "bar"
    assert choose_mode(False, io.StringIO()) == "lines"
    assert choose_mode(False, Terminal(), workers=2) == "lines"
    assert choose_mode(True, Terminal()) == "off"


def test_progress_expects_pruned_trials_to_stay_short(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    # Over the limit after epoch 1: each trial is stopped there, 1 epoch of the recipe's 2.
    config = tiny_config.replace(max_train_acc=0.3)
    study = enqueued_study(config, tiny_splits, [1e-6, 1e-5])
    tally = Tally(study, config)
    assert (tally.finished, tally.pruned, tally.infeasible, tally.epochs) == (2, 2, 2, 2)
    assert tally.best is None and tally.best_text() == "no feasible trial yet"
    progress = StudyProgress(study, config.replace(trials=6), "lines", out=io.StringIO())
    assert progress.done() == 2 and progress.total() == 6  # 4 more trials of 1 epoch, not 2
    progress.epoch(2, 0)
    progress.epoch(3, 1)
    assert progress.done() == 3 and progress.total() == 6


def test_progress_bar_shows_counts_best_and_eta(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    study = enqueued_study(tiny_config, tiny_splits, [1e-4, 1e-3])
    out = Terminal()
    with StudyProgress(study, tiny_config.replace(trials=4), "bar", out=out) as progress:
        progress.epoch(2, 1)
        progress.finished(study, study.trials[1])
    screen = out.getvalue()
    best = study.best_trial
    assert "2/4 trials, 1 running, 0 pruned, 0 infeasible" in screen
    assert f"best #{best.number} {best.value:.2%} (wd {best.params['weight_decay']:.2e})" in screen
    assert "elapsed, ETA" in screen and "[2/4] trial   1" in screen
