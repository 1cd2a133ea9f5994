"""Many workers on one study: --workers, the shared budget on SQLite and PostgreSQL, killed
workers, signals, the database going away.

The PostgreSQL tests start a throwaway server (tests/postgres.py, the ``postgres`` fixture in
tests/conftest.py) and skip, saying why, only where its binaries are missing. Commands run as
real processes where signals, exit statuses or several processes are the point; everything
else runs in-process.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search import export, run
from search.config import SQLITE_MAX_WORKERS, StudyConfig
from search.engine.budget import FINISHED
from search.engine.strategy import new_study
from search.study.backends import POOL_OVERFLOW, POOL_SIZE
from search.study.storage import open_storage
from tests.helpers import (
    GRACE_S,
    REPO,
    STUDY,
    UNPRUNED,
    age_heartbeats_at,
    held_trials,
    run_cli,
    start,
    start_held,
    states,
    tiny,
    training,
    trials,
    wait_dead,
    wait_until,
    worker_pids,
)
from tests.postgres import PostgresServer, free_port, unavailable

# --- Worker flags ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grace-period", "61"], "--grace-period: must be at most 60 seconds, got '61'"),
        (["--grace-period", "0"], "--grace-period: must be a positive integer"),
        (
            ["--heartbeat-interval", "20", "--grace-period", "20"],
            "--grace-period must exceed --heartbeat-interval, got 20 and 20",
        ),
        (["--workers", "0"], "--workers: must be a positive integer, got '0'"),
        (
            ["--workers", str(SQLITE_MAX_WORKERS + 1)],
            f"one SQLite file carries at most {SQLITE_MAX_WORKERS} workers; use a PostgreSQL",
        ),
        (
            ["--workers", "2", "--storage", "sqlite:///:memory:"],
            "an in-memory SQLite database can't be shared between processes",
        ),
    ],
)
def test_run_refuses_worker_flags_with_one_line(argv: list[str], message: str, capsys) -> None:
    status, out, err = run_cli(run.main, argv, capsys)
    assert status == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and out == ""


# --- Workers sharing the budget --------------------------------------------------------------


@pytest.mark.slow
def test_sqlite_workers_share_the_budget_while_the_dashboard_reads(
    tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """Three workers write one SQLite file while optuna-dashboard polls it: a known way to
    crash studies with "database is locked" in SQLite's default journal mode."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.storages.RDBStorage(url)  # Optuna's tables in SQLite's default mode; run switches it
    port = free_port()
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), url, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    processes.append(dashboard)
    api = f"http://127.0.0.1:{port}/api/studies"
    wait_until(lambda: _get(api) == 200, dashboard, timeout=60)
    study = start("--workers", "3", "--trials", "6", "--storage", url,
                  *tiny(mnist_dir, tmp_path, 4))  # fmt: skip
    processes.append(study)
    answers = []
    while study.poll() is None:
        answers.append(_get(api))
        answers.append(_get(f"{api}/1"))  # the study's trials, once it exists
    out, err = study.communicate()
    assert study.returncode == 0, err
    assert "locked" not in out + err and "Traceback" not in err
    study_trials = trials(url)
    assert len(study_trials) == 6 and all(t.state in FINISHED for t in study_trials)
    assert answers.count(200) > 3 and not set(answers) - {200, 404}
    dashboard.terminate()  # what it wrote so far is all this test reads
    _, dashboard_err = dashboard.communicate(timeout=30)
    assert "locked" not in dashboard_err
    with sqlite3.connect(tmp_path / "study.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


@pytest.mark.slow
def test_postgres_workers_share_one_budget_exactly_and_hide_the_password(
    postgres: PostgresServer,
    pg_url: str,
    tmp_path: Path,
    mnist_dir: Path,
    processes: list[subprocess.Popen[str]],
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    connections: list[int] = []
    done = threading.Event()

    def count_connections() -> None:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE application_name = 'wd-search' AND datname = '{database}'"
        )
        while not done.is_set():
            connections.append(int(str(postgres.query(query)[0][0])))
            time.sleep(0.05)

    counter = threading.Thread(target=count_connections)
    counter.start()
    try:
        command = start("--workers", "3", "--trials", "7", "--storage", pg_url,
                        *tiny(mnist_dir, tmp_path, 3))  # fmt: skip
        processes.append(command)
        out, err = command.communicate(timeout=300)
    finally:
        done.set()
        counter.join()
    assert command.returncode == 0, err
    study_trials = trials(pg_url)
    assert len(study_trials) == 7 and all(t.state in FINISHED for t in study_trials)
    # The password is in --storage, and in no line the workers or their parent print.
    assert postgres.password not in out + err
    assert f"postgres:***@127.0.0.1:{postgres.port}" in out
    # Each trial reported once, by the worker that ran it (beside the workers' status lines).
    assert len(re.findall(r"^\[worker \d\] \[\d/7\] trial ", out, re.M)) == 7
    # Reseeded per worker: no two workers propose the same first trials.
    assert len({t.params["weight_decay"] for t in study_trials}) == 7
    print(f"most connections seen for 3 workers: {max(connections)}")
    assert 0 < max(connections) <= 3 * (POOL_SIZE + POOL_OVERFLOW + 1)


# --- Faults ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_worker_trial_is_retried_after_the_grace_period(
    pg_url: str, tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL one of two workers mid-trial: once its heartbeat is older than the grace
    period, the other worker fails the trial, runs its parameters again and still fills the
    budget.

    No test here waits out a grace period: it is one no pause of a busy machine reaches (a live
    worker's trial is never failed), and the test ages the dead trial's last beat in the
    database instead (``age_heartbeats_at``), here and in the other kill tests.
    """
    hold = tmp_path / "hold"
    command = start_held(
        hold, "--workers", "2", "--trials", "4", "--storage", pg_url, *UNPRUNED,
        "--heartbeat-interval", "1", "--grace-period", str(GRACE_S),
        *tiny(mnist_dir, tmp_path, 5),
    )  # fmt: skip
    processes.append(command)
    wait_until(lambda: len(held_trials(hold)) == 2, command)
    victim = worker_pids(command.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_dead(victim)
    age_heartbeats_at(pg_url, numbers=[held_trials(hold)[victim]])
    hold.unlink()
    out, err = command.communicate(timeout=300)
    assert command.returncode == 0, err
    assert "worker 1 was killed by SIGKILL" in err and "Traceback" not in err
    study_trials = trials(pg_url)
    assert states(study_trials) == {"COMPLETE": 4, "FAIL": 1}
    (killed,) = (t for t in study_trials if t.state == TrialState.FAIL)
    (retry,) = (t for t in study_trials if t.system_attrs.get("failed_trial") is not None)
    assert retry.system_attrs["failed_trial"] == killed.number
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE


@pytest.mark.slow
def test_killed_run_is_finished_by_the_same_command_run_again(
    tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [
        "--trials", "2", "--storage", url, *UNPRUNED, "--heartbeat-interval", "1",
        "--grace-period", str(GRACE_S), *tiny(mnist_dir, tmp_path, 5),
    ]  # fmt: skip
    first = start_held(tmp_path / "hold", *argv)
    processes.append(first)
    wait_until(training(url, 1), first)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    assert states(trials(url)) == {"RUNNING": 1}
    age_heartbeats_at(url)  # as long without a beat as the grace period, and more
    again = start(*argv)
    processes.append(again)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study_trials = trials(url)
    assert states(study_trials) == {"FAIL": 1, "COMPLETE": 2}
    assert study_trials[0].state == TrialState.FAIL  # the killed trial
    # The re-run failed it and ran its parameters again within the budget.
    (retry,) = (t for t in study_trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == study_trials[0].params and retry.state == TrialState.COMPLETE


# A worker that has recorded its trial's outcome, constraint included, and hangs before telling
# it: the moment a SIGKILL leaves the most behind on a stale trial. The accuracy of 1.25 is
# impossible, so no real trial can share the values it records.
RECORDED_THEN_HANGS = """
import sys, threading
from search import run
from search.engine.objective import begin_trial, record_outcome
from search.study.storage import open_storage
from search.engine.strategy import new_study
from search.training.train import EpochMetrics

config = run.parse_config(sys.argv[1:])
study = new_study(open_storage(config), config, {})

def objective(trial):
    begin_trial(trial, config)
    record_outcome(trial, [EpochMetrics(1, 9.0, 1.25, 9.0, 0.01, 0.0)], config, 0.0)
    print("recorded", flush=True)
    threading.Event().wait()

study.optimize(objective)
"""


@pytest.mark.slow
def test_retry_of_a_killed_trial_records_its_own_constraint_and_metrics(
    tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """Optuna's retry copies the dead trial's attributes; the constraint among them would make
    the retry's own ``set_constraint`` a no-op and its feasibility the dead trial's."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [
        "--trials", "1", "--storage", url, *UNPRUNED, "--heartbeat-interval", "1",
        "--grace-period", str(GRACE_S), *tiny(mnist_dir, tmp_path, 2),
    ]  # fmt: skip
    dying = subprocess.Popen(
        [sys.executable, "-c", RECORDED_THEN_HANGS, *argv],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    processes.append(dying)
    assert dying.stdout is not None and dying.stdout.readline() == "recorded\n"
    os.killpg(dying.pid, signal.SIGKILL)
    dying.communicate()
    (dead,) = trials(url)
    assert dead.state == TrialState.RUNNING
    assert dead.constraints == {"train_accuracy": 0.25, "0": 0.25}
    age_heartbeats_at(url)

    again = start(*argv)
    processes.append(again)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    dead, retry = trials(url)
    assert dead.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == dead.number and retry.params == dead.params
    own = retry.user_attrs["train_accuracy"] - 1.0  # --max-train-acc 1: feasible
    assert own <= 0 and retry.system_attrs["constraints:train_accuracy"] == pytest.approx(own)
    assert retry.system_attrs["constraints"] == [pytest.approx(own)]
    assert retry.user_attrs["feasible"] is True and retry.user_attrs["val_accuracy"] != 0.01
    assert retry.user_attrs["seed"] != dead.user_attrs["seed"]  # its own number's seed
    study = optuna.load_study(study_name=STUDY, storage=url)
    assert study.best_trial.number == retry.number
    assert f"trial   {retry.number}" in out and "feasible" in out


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_fails_their_trials_and_a_rerun_resumes(
    pg_url: str, tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    argv = ["--workers", "2", "--trials", "2", "--storage", pg_url, *UNPRUNED,
            *tiny(mnist_dir, tmp_path, 3)]  # fmt: skip
    command = start_held(tmp_path / "hold", *argv)  # held: the Ctrl-C ends them mid-training
    processes.append(command)
    wait_until(training(pg_url, 2), command)
    os.killpg(command.pid, signal.SIGINT)  # what Ctrl-C does: the parent and its workers
    stopped = time.monotonic()
    _, err = command.communicate(timeout=60)
    print(f"stopped {time.monotonic() - stopped:.1f} s after SIGINT")
    assert command.returncode == 130
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGINT: run the same command again to resume"
    )
    assert "Traceback" not in err
    assert states(trials(pg_url)) == {"FAIL": 2}

    again = start(*argv)
    processes.append(again)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "0 of 2 trials finished" in out and "2 of 2 trials finished" in out
    assert states(trials(pg_url)) == {"FAIL": 2, "COMPLETE": 2}


@pytest.mark.slow
def test_sigterm_fails_the_running_trial_and_exits_143(
    tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    command = start_held(tmp_path / "hold", "--trials", "2", "--storage", url, *UNPRUNED,
                         *tiny(mnist_dir, tmp_path, 3))  # fmt: skip
    processes.append(command)
    wait_until(training(url, 1), command)
    command.send_signal(signal.SIGTERM)
    _, err = command.communicate(timeout=60)
    assert command.returncode == 143
    assert "interrupted by SIGTERM: run the same command again to resume" in err
    assert states(trials(url)) == {"FAIL": 1}


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "parallel"), [(1, 1), (1, 3), (3, 1)])
def test_database_going_away_is_one_line_and_keeps_finished_trials(
    workers: int,
    parallel: int,
    tmp_path: Path,
    mnist_dir: Path,
    processes: list[subprocess.Popen[str]],
) -> None:
    """However many workers, and in either trial loop: one line, from the parent. The
    heartbeat threads that meet the failure first stay quiet."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()  # its own: this test stops it
    try:
        url = server.create_database(schema=True)
        # 1,000 trials: the budget can't be met before the server stops, however fast.
        # --db-retry 0: end at once (tests/engine/test_outage.py waits an outage out).
        command = start("--trials", "1000", "--storage", url, *UNPRUNED, "--workers",
                        str(workers), "--heartbeat-interval", "1", "--grace-period", str(GRACE_S),
                        "--db-retry", "0", *tiny(mnist_dir, tmp_path, 5, parallel))  # fmt: skip
        processes.append(command)
        wait_until(lambda: sum(t.state in FINISHED for t in trials(url)) >= 2, command)
        server.stop()
        _, err = command.communicate(timeout=60)
        assert command.returncode == 1
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith(
            f"error: --storage postgresql+psycopg://postgres:***@127.0.0.1:{server.port}/"
        )
        assert "the database can't be reached" in err and server.password not in err
        server.start()
        kept = [t for t in trials(url) if t.state in FINISHED]
        assert len(kept) >= 2 and all("val_accuracy" in t.user_attrs for t in kept)
    finally:
        server.remove()


# --- Export ----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", ['=HYPERLINK("http://x")', "+1+2", "\r-2+3", " @SUM(A1)"])
def test_export_from_postgres_neutralises_formulas(
    payload: str,
    pg_url: str,
    tiny_config: StudyConfig,
    tmp_path: Path,
    capsys,
) -> None:
    config = tiny_config.replace(storage=pg_url)
    study = new_study(open_storage(config), config, {})
    # A text cell the export writes, holding what a hostile writer to the database could put.
    distribution = optuna.distributions.FloatDistribution(1e-6, 1e-1, log=True)
    study.add_trial(
        optuna.trial.create_trial(
            params={"weight_decay": 1e-3}, distributions={"weight_decay": distribution},
            value=0.5, user_attrs={"pruned_reason": payload},
        )
    )  # fmt: skip
    out = tmp_path / "all.csv"
    argv = ["--storage", pg_url, "--out", str(out), "--all"]
    status, _, err = run_cli(export.main, argv, capsys)
    assert status == 0, err
    cell = pd.read_csv(out, dtype=str, keep_default_na=False)["pruned_reason"].iloc[0]
    assert cell == "'" + payload
    assert sqlalchemy.engine.make_url(pg_url).password not in out.read_text()
