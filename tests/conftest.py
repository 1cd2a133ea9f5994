"""Fixtures shared by the tests: real MNIST (fetched once into the repo's data/), tiny studies."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search.config import StudyConfig
from search.data.fetch import MNIST_MD5, ensure_mnist, raw_dir
from search.data.mnist import load_splits
from search.data.splits import DataError, Splits
from tests.helpers import GRACE_S, REPO
from tests.postgres import PostgresServer, unavailable

DATA_DIR = REPO / "data"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Real MNIST in the repo's git-ignored data/, fetched and verified once per machine.

    Asked for by every test that reads MNIST, itself or through a command it starts (those
    pass ``--data-dir`` from here), so no command of a test fetches on its own; the tests of
    pure logic ask for nothing and run offline.

    Offline, with the files not there yet, the tests that need them are skipped, saying why,
    and the others run; with ``SEARCH_TESTS_REQUIRE_MNIST`` set (CI sets it) that is an
    error instead, so a broken fetch can never pass as a green run. A file that is there
    but corrupt is always an error.
    """
    missing = [name for name in MNIST_MD5 if not (raw_dir(DATA_DIR) / name).is_file()]
    try:
        ensure_mnist(DATA_DIR)
    except DataError:
        if not missing or os.environ.get("SEARCH_TESTS_REQUIRE_MNIST"):
            raise
        pytest.skip(
            "needs MNIST, which is not in data/ and could not be fetched (offline?): "
            "`python -m search.data` fetches it"
        )
    return DATA_DIR


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_the_commands() -> None:
    """The commands the tests start get SIGINT as a terminal's foreground job has it.

    A suite started in the background (``bash .ci/run &``) runs with SIGINT ignored, as a
    shell starts background jobs, and its commands inherit that and rightly keep it ignored
    (``search.signals``): the Ctrl-C tests would see it do nothing. Python handling SIGINT
    here leaves them the default.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def still_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The budget's sat-still clock, moved a grace period (``GRACE_S``) at every look.

    A test of a trial that holds its place until it has sat still for twice the grace period
    then waits on looks, not on seconds: the list it gets holds the clock's reading at each
    look, so it can say how many looks the trial held out for.
    """
    looks: list[float] = []

    def tick() -> float:
        looks.append(len(looks) * float(GRACE_S))
        return looks[-1]

    monkeypatch.setattr("search.engine.budget.sat_still_clock", tick)
    return looks


@pytest.fixture(scope="session")
def tiny_splits(mnist_dir: Path) -> Splits:
    """2,000 training and 2,000 validation images of the holdout split: trains in a blink."""
    return load_splits(mnist_dir, "holdout", subset=2000)


@pytest.fixture
def tiny_config(tmp_path: Path, mnist_dir: Path) -> StudyConfig:
    """A study config on a tmp SQLite file and the tiny subset: 2 epochs, 3 trials."""
    return StudyConfig(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        trials=3,
        epochs=2,
        subset=2000,
        data_dir=mnist_dir,
        device="cpu",
    )


@pytest.fixture(autouse=True)
def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def serve() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server, removed at the end; a skip, saying why, where none can
    start."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (each test takes its own database)."""
    yield from serve()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, which the test may stop and start."""
    yield from serve()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    return postgres.create_database()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Commands a test started; any still running at its end are killed with their workers."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
