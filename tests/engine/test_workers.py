"""Many workers on one study: shared budget, SQLite and PostgreSQL, faults, signals, inputs.

The PostgreSQL tests start a throwaway server (tests/postgres.py) and skip, saying why, only
where its binaries are missing. Commands run as real processes where signals, exit statuses
or several processes are the point; everything else runs in-process.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from search import export, run
from search.config import StudyConfig
from search.data.splits import Splits
from search.study.budget import FINISHED, BudgetGate, ClaimLock
from search.study.drive import run_trials
from search.study.objective import Objective
from search.study.storage import (
    POOL_OVERFLOW,
    POOL_SIZE,
    SQLITE_BUSY_TIMEOUT_S,
    engine_options,
    make_storage,
    open_storage,
)
from search.study.study import create_study
from search.study.workers import MAX_GRACE_PERIOD_S, SQLITE_MAX_WORKERS
from tests.helpers import REPO, run_cli
from tests.postgres import PostgresServer, free_port, unavailable

STUDY = "mnist-weight-decay"
# Trials that run every epoch: nothing prunes them, so a signal finds them mid-trial.
UNPRUNED = ["--pruner", "none", "--max-train-acc", "1"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (each test takes its own database)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()
    yield server
    server.remove()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    return postgres.create_database()


def tiny(mnist_dir: Path, tmp_path: Path, epochs: int, parallel: int = 1) -> list[str]:
    """Flags of a study on 500 images: a few hundredths of a second per epoch.

    One trial at a time per worker unless told (``parallel``): trial counts then follow from
    the number of workers alone.
    """
    return [
        "--epochs", str(epochs), "--subset", "500", "--data-dir", str(mnist_dir),
        "--device", "cpu", "--artifacts", str(tmp_path / "artifacts"),
        "--parallel-trials", str(parallel),
    ]  # fmt: skip


def start(*argv: str) -> subprocess.Popen[str]:
    """``python -m search.run`` in its own process group, as a terminal would run it."""
    return subprocess.Popen(
        [sys.executable, "-m", "search.run", *argv],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def start_held(hold: Path, *argv: str) -> subprocess.Popen[str]:
    """``start``, with every trial holding after its first epoch until ``hold`` is removed
    (tests/held_run.py): a kill or a signal then finds them mid-training however fast the
    machine, and the test lets them go on by removing ``hold``."""
    hold.touch()
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "held_run.py"), *argv],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SEARCH_TEST_HOLD": str(hold)}, start_new_session=True,
    )  # fmt: skip


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Commands a test started; any still running at its end are killed with their workers."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def trials(url: str) -> list[FrozenTrial]:
    """The study's trials as another process sees them now (none before it exists)."""
    try:
        return optuna.load_study(study_name=STUDY, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def wait_until(
    condition: Callable[[], bool], process: subprocess.Popen[str], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the command ended ({process.returncode}) first: {err}")
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.1)


def training(url: str, count: int) -> Callable[[], bool]:
    """True once ``count`` trials are running and have each reported an epoch."""
    return lambda: (
        sum(t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in trials(url))
        >= count
    )


def worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def states(study_trials: list[FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study_trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


# --- Storage configuration ---------------------------------------------------------------


def test_make_storage_gives_sqlite_write_ahead_logging_and_a_busy_timeout(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}")
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        busy_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert busy_ms == SQLITE_BUSY_TIMEOUT_S * 1000


def test_open_storage_enables_heartbeats_that_retry_stale_trials(tmp_path: Path) -> None:
    config = StudyConfig(storage=f"sqlite:///{tmp_path / 'study.db'}")
    storage = open_storage(config)
    assert storage.get_heartbeat_interval() == config.heartbeat_interval == 10
    assert storage.grace_period == config.grace_period == 30 <= MAX_GRACE_PERIOD_S
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, RetryHeartbeatStaleTrialCallback)


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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_claim_lock_admits_one_worker_at_a_time(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    first, second = (ClaimLock(url, STUDY, engine_options(url)) for _ in range(2))
    first.acquire()
    waiter = threading.Thread(target=second.acquire, daemon=True)
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and not second.held
    if backend == "postgresql":  # each study its own lock (SQLite: one per database file)
        other = ClaimLock(url, "another study", engine_options(url))
        other.acquire()
        other.release()
    first.release()
    waiter.join(timeout=10)
    assert second.held
    second.release()


# --- Storages that can't hold a study: one line each, nothing written ---------------------


def test_budget_gate_never_judges_its_own_running_trials_stuck(
    tiny_config: StudyConfig,
) -> None:
    """A trial of this worker that sits still (a long epoch on a busy machine) still holds its
    place; another's that sits still past ``stuck_after`` doesn't."""
    url = tiny_config.storage_url
    study = create_study(make_storage(url), tiny_config, {})
    lock = ClaimLock(url, tiny_config.study_name, engine_options(url))
    gate = BudgetGate(study, budget=3, lock=lock, stuck_after=0.0)
    own, other = study.ask(), study.ask()
    gate.mine.add(own.number)
    assert [t.number for t in gate.claimed()] == [own.number, other.number]  # first look
    assert [t.number for t in gate.claimed()] == [own.number]  # the other sat still since


def test_run_refuses_a_database_that_is_not_an_optuna_study(tmp_path: Path, capsys) -> None:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    status, _, err = run_cli(run.main, ["--storage", f"sqlite:///{path}"], capsys)
    assert status == 2
    assert "holds other tables (customers) and no Optuna study" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with sqlite3.connect(path) as connection:  # untouched: no Optuna tables added
        tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("customers",)]


def test_run_refuses_a_file_that_is_not_sqlite(tmp_path: Path, capsys) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, only words; " * 100)
    status, _, err = run_cli(run.main, ["--storage", f"sqlite:///{path}"], capsys)
    assert status == 2
    assert f"{path} is not a SQLite database" in err and len(err.strip().splitlines()) == 1


def test_run_refuses_a_location_it_cannot_create_a_database_in(capsys) -> None:
    # /proc refuses new files even to root, unlike a chmod-ed folder.
    status, _, err = run_cli(run.main, ["--storage", "sqlite:////proc/study.db"], capsys)
    assert status == 2
    assert "can't open or create /proc/study.db: check that its directory is writable" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_on_a_read_only_database_fails_with_one_line(
    tmp_path: Path, mnist_dir: Path, capsys
) -> None:
    path = tmp_path / "study.db"
    make_storage(f"sqlite:///{path}")  # an empty Optuna database
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    status, _, err = run_cli(run.main, ["--storage", url, *tiny(mnist_dir, tmp_path, 1)], capsys)
    assert status == 1
    assert "attempt to write a readonly database: the database is read-only here" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_run_gives_up_on_an_unanswering_host_within_15_s(capsys) -> None:
    """A host that takes the TCP connection and never answers: the worst case of unreachable."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://alice:s3cret@127.0.0.1:{silent.getsockname()[1]}/db"
        started = time.monotonic()
        status, out, err = run_cli(run.main, ["--storage", url], capsys)
        elapsed = time.monotonic() - started
    assert status == 2 and elapsed < 15
    assert "timeout expired: the database can't be reached" in err
    assert "alice:***@127.0.0.1" in err and "s3cret" not in out + err
    assert len(err.strip().splitlines()) == 1


# --- The budget -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_run_trials_takes_the_place_of_a_trial_that_never_beat(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    """A RUNNING trial without heartbeats (its process died before the first) holds its place
    in the budget only until it has sat still for twice the grace period."""
    config = tiny_config.replace(trials=2, epochs=1, heartbeat_interval=1, grace_period=2)
    study = create_study(open_storage(config), config, {})
    orphan = study.ask()
    started = time.monotonic()
    assert run_trials(study, Objective(config, tiny_splits), config) == 2
    assert time.monotonic() - started > 2 * config.grace_period
    assert states(study.trials) == {"RUNNING": 1, "COMPLETE": 2}
    assert study.trials[orphan.number].state == TrialState.RUNNING


def test_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(
    tiny_config: StudyConfig, tiny_splits: Splits
) -> None:
    # Adam at a learning rate of 1e20 sends the logits to infinity in the first epoch.
    config = tiny_config.replace(trials=2, lr=1e20)
    study = create_study(open_storage(config), config, {})
    assert run_trials(study, Objective(config, tiny_splits), config) == 2
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    reason = study.trials[0].user_attrs["pruned_reason"]
    assert reason == "diverged: training loss is nan in epoch 1"


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
    assert out.count("[worker ") == 7  # each trial reported once, by the worker that ran it
    # Reseeded per worker: no two workers propose the same first trials.
    assert len({t.params["weight_decay"] for t in study_trials}) == 7
    print(f"most connections seen for 3 workers: {max(connections)}")
    assert 0 < max(connections) <= 3 * (POOL_SIZE + POOL_OVERFLOW + 1)


# --- Faults -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_worker_trial_is_retried_after_the_grace_period(
    pg_url: str, tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL one of two workers mid-trial: once its heartbeat is 2 s old, the other worker
    fails the trial, runs its parameters again and still fills the budget."""
    hold = tmp_path / "hold"
    command = start_held(
        hold, "--workers", "2", "--trials", "4", "--storage", pg_url, *UNPRUNED,
        "--heartbeat-interval", "1", "--grace-period", "2", *tiny(mnist_dir, tmp_path, 5),
    )  # fmt: skip
    processes.append(command)
    wait_until(training(pg_url, 2), command)
    os.kill(worker_pids(command.pid)[0], signal.SIGKILL)
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
        "--grace-period", "2", *tiny(mnist_dir, tmp_path, 5),
    ]  # fmt: skip
    first = start_held(tmp_path / "hold", *argv)
    processes.append(first)
    wait_until(training(url, 1), first)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    assert states(trials(url)) == {"RUNNING": 1}
    again = start(*argv)
    processes.append(again)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study_trials = trials(url)
    assert states(study_trials) == {"FAIL": 1, "COMPLETE": 2}
    assert study_trials[0].state == TrialState.FAIL  # the killed trial
    # Started at once, the re-run ran a new trial while trial 0 was still within its grace
    # period; then failed it, and ran its parameters again in the last place of the budget.
    (retry,) = (t for t in study_trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == study_trials[0].params and retry.state == TrialState.COMPLETE


# A worker that has recorded its trial's outcome, constraint included, and hangs before telling
# it: the moment a SIGKILL leaves the most behind on a stale trial. The accuracy of 1.25 is
# impossible, so no real trial can share the values it records.
RECORDED_THEN_HANGS = """
import sys, threading
from search import run
from search.study.objective import begin_trial, record_outcome
from search.study.storage import open_storage
from search.study.study import create_study
from search.training.train import EpochMetrics

config = run.parse_config(sys.argv[1:])
study = create_study(open_storage(config), config, {})

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
        "--grace-period", "2", *tiny(mnist_dir, tmp_path, 2),
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
def test_killed_trial_pool_is_retried_by_a_run_after_the_grace_period(
    tmp_path: Path, mnist_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """On a CPU a worker trains several trials side by side by default (search.pool): they
    all die with it, and a run after the grace period tries each one's parameters again."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [
        "--trials", "3", "--storage", url, *UNPRUNED, "--heartbeat-interval", "1",
        "--grace-period", "2", *tiny(mnist_dir, tmp_path, 5, parallel=3),
    ]  # fmt: skip
    first = start_held(tmp_path / "hold", *argv)
    processes.append(first)
    wait_until(training(url, 3), first)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    assert states(trials(url)) == {"RUNNING": 3}
    time.sleep(3)  # past the grace period
    again = start(*argv)
    processes.append(again)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study_trials = trials(url)
    assert states(study_trials) == {"FAIL": 3, "COMPLETE": 3}
    for killed in study_trials[:3]:
        (retry,) = (t for t in study_trials if t.system_attrs.get("failed_trial") == killed.number)
        assert retry.params == killed.params and retry.state == TrialState.COMPLETE


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
        url = server.create_database()
        # 1,000 trials: the budget can't be met before the server stops, however fast.
        command = start("--trials", "1000", "--storage", url, *UNPRUNED, "--workers",
                        str(workers), "--heartbeat-interval", "1", "--grace-period", "2",
                        *tiny(mnist_dir, tmp_path, 5, parallel))  # fmt: skip
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


# --- Inputs and secrets -------------------------------------------------------------------------


def test_wrong_password_is_not_printed_either(pg_url: str, capsys) -> None:
    wrong = pg_url.replace(str(sqlalchemy.engine.make_url(pg_url).password), "wr0ng-s3cret")
    status, out, err = run_cli(run.main, ["--storage", wrong], capsys)
    assert status == 2
    assert 'password authentication failed for user "postgres": check the user' in err
    assert "wr0ng-s3cret" not in out + err and "postgres:***@127.0.0.1" in err


@pytest.mark.slow
def test_query_password_never_shows_and_the_hints_work_when_pasted(
    postgres: PostgresServer, pg_url: str, tmp_path: Path, mnist_dir: Path, capsys
) -> None:
    """The password in ``?password=``: not in any line; the hints carry --storage without it
    and connect as they are with PGPASSWORD set, as PostgreSQL's own clients do."""
    bare = pg_url.replace(f":{postgres.password}@", "@")
    in_query = f"{bare}?password={postgres.password}"
    argv = ["--storage", in_query, "--trials", "1", *UNPRUNED, *tiny(mnist_dir, tmp_path, 1)]
    status, out, err = run_cli(run.main, argv, capsys)
    assert status == 0, err
    assert postgres.password not in out + err
    assert f"in {bare}?password=***: 0 of 1 trials" in out  # the opening line
    hints = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in out.splitlines()[-4:-1]}
    assert set(hints) == {"inspect", "test", "export"}
    assert all(f"--storage {bare} " in hint + " " for hint in hints.values())
    assert "~/.pgpass" in out.splitlines()[-1] and "PGPASSWORD" in out.splitlines()[-1]
    export_hint = hints["export"].split()
    assert "--storage" in export_hint
    pasted = subprocess.run(
        [sys.executable, *export_hint[1:], "--out", str(tmp_path / "best.csv")],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PGPASSWORD": postgres.password},
    )  # fmt: skip
    assert pasted.returncode == 0, pasted.stderr
    assert (tmp_path / "best.csv").is_file()

    wrong = in_query.replace(postgres.password, "wr0ng-s3cret")
    status, out, err = run_cli(run.main, ["--storage", wrong], capsys)
    assert status == 2 and len(err.splitlines()) == 1
    assert "wr0ng-s3cret" not in out + err and "?password=***" in err


@pytest.mark.parametrize("payload", ['=HYPERLINK("http://x")', "+1+2", "\r-2+3", " @SUM(A1)"])
def test_export_from_postgres_neutralises_formulas(
    payload: str,
    pg_url: str,
    tiny_config: StudyConfig,
    tmp_path: Path,
    capsys,
) -> None:
    config = tiny_config.replace(storage=pg_url)
    study = create_study(open_storage(config), config, {})
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
