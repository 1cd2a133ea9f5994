"""``python -m search.run`` whose trials hold after their first epoch while a file exists.

The tests that kill or signal a run must find its trials mid-training. Long trials only make
that likely: on a fast idle machine a trial of 40 epochs finished before the test looked. Here
every trial reports its first epoch, then waits before reporting its second for as long as the
file named by ``SEARCH_TEST_HOLD`` exists; the test removes it to let the trials go on. Beside
it each process writes the number of the trial it holds (``HOLD.<pid>``). Only
the wait is added: training, reporting and the signal handling are the command's own.

Workers are spawned processes that import this file again as ``__mp_main__``, so the hold
reaches them too. In the trial pool the first trial's wait holds the whole pool after every
trial of it has reported its first epoch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna

from search import run
from search.cli import run_command
from search.config import StudyConfig
from search.engine import drive, objective
from search.training.train import EpochMetrics

HOLD = Path(os.environ["SEARCH_TEST_HOLD"])
_end_epoch = objective.end_epoch


def held_end_epoch(
    trial: optuna.Trial, history: list[EpochMetrics], config: StudyConfig, started: float
) -> objective.Stop | None:
    if len(history) > 1 and HOLD.exists():
        # Which trial this process holds, for a test that kills it (tests.helpers.held_trials):
        # written whole, then renamed into place, so a reader never sees half of it.
        mark = HOLD.with_name(f"{HOLD.name}.{os.getpid()}")
        part = HOLD.with_name(f"{HOLD.name}-part.{os.getpid()}")
        part.write_text(str(trial.number))
        part.replace(mark)
    while len(history) > 1 and HOLD.exists():
        time.sleep(0.01)
    return _end_epoch(trial, history, config, started)


objective.end_epoch = drive.end_epoch = held_end_epoch

if __name__ == "__main__":
    run_command(run.main)
