"""Driving trials to the budget: trials that never beat or diverge, and the trial pool's
trials killed together with their process and tried again once their grace period is over."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from search.config import StudyConfig
from search.data.splits import Splits
from search.engine.drive import run_trials
from search.engine.objective import Objective
from search.engine.strategy import new_study
from search.study.storage import open_storage
from tests.helpers import (
    GRACE_S,
    UNPRUNED,
    age_heartbeats_at,
    start,
    start_held,
    states,
    tiny,
    training,
    trials,
    wait_until,
)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_run_trials_takes_the_place_of_a_trial_that_never_beat(
    tiny_config: StudyConfig, tiny_splits: Splits, still_clock: list[float]
) -> None:
    """A RUNNING trial without heartbeats (its process died before the first) holds its place
    in the budget only until it has sat still for twice the grace period."""
    config = tiny_config.replace(trials=2, epochs=1, heartbeat_interval=1, grace_period=GRACE_S)
    study = new_study(open_storage(config), config, {})
    orphan = study.ask()
    assert run_trials(study, Objective(config, tiny_splits), config) == 2
    assert states(study.trials) == {"RUNNING": 1, "COMPLETE": 2}
    assert study.trials[orphan.number].state == TrialState.RUNNING
    # It held its place while the clock said it had sat still for at most twice the grace
    # period (looks at 0, 1 and 2 grace periods), and lost it at the look after.
    assert len(still_clock) >= 4 and still_clock[-1] > 2 * GRACE_S


def test_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    # Adam at a learning rate of 1e20 sends the logits to infinity in the first epoch.
    config = tiny_config.replace(trials=2, lr=1e20)
    study = new_study(open_storage(config), config, {})
    assert run_trials(study, Objective(config, tiny_splits), config) == 2
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    reason = study.trials[0].user_attrs["pruned_reason"]
    assert reason == "diverged: training loss is nan in epoch 1"


# --- The trial pool --------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_trial_pool_is_retried_by_a_run_after_the_grace_period(
    tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """On a CPU a worker trains several trials side by side by default (search.pool): they
    all die with it, and once their heartbeats are older than the grace period (aged in the
    database, not waited for) a run fails each and tries its parameters again."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [
        "--trials", "3", "--storage", url, *UNPRUNED, "--heartbeat-interval", "1",
        "--grace-period", str(GRACE_S), *tiny(mnist_dir, tmp_path, 5, parallel=3),
    ]  # fmt: skip
    first = start_held(tmp_path / "hold", *argv)
    processes.append(first)
    wait_until(training(url, 3), first)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    assert states(trials(url)) == {"RUNNING": 3}
    age_heartbeats_at(url)
    again = start(*argv)
    processes.append(again)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study_trials = trials(url)
    assert states(study_trials) == {"FAIL": 3, "COMPLETE": 3}
    for killed in study_trials[:3]:
        (retry,) = (t for t in study_trials if t.system_attrs.get("failed_trial") == killed.number)
        assert retry.params == killed.params and retry.state == TrialState.COMPLETE
