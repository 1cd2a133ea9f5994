"""The shared budget: the claim lock that admits one worker at a time (SQLite and
PostgreSQL), and the gate that counts the trials holding a place in the budget."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from search.config import StudyConfig
from search.engine.budget import BudgetGate
from search.engine.strategy import new_study
from search.study.backends import backend_for
from search.study.storage import make_storage
from tests.helpers import STUDY
from tests.postgres import PostgresServer, unavailable


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_claim_lock_admits_one_worker_at_a_time(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    first, second = (backend_for(url).budget_lock(STUDY) for _ in range(2))
    first.acquire()
    waiter = threading.Thread(target=second.acquire, daemon=True)
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and not second.held
    if backend == "postgresql":  # each study its own lock (SQLite: one per database file)
        other = backend_for(url).budget_lock("another study")
        other.acquire()
        other.release()
    first.release()
    waiter.join(timeout=10)
    assert second.held
    second.release()


def test_budget_gate_never_judges_its_own_running_trials_stuck(
    tiny_config: StudyConfig,
) -> None:
    """A trial of this worker that sits still (a long epoch on a busy machine) still holds its
    place; another's that sits still past ``stuck_after`` doesn't."""
    url = tiny_config.storage_url
    study = new_study(make_storage(url), tiny_config, {})
    lock = backend_for(url).budget_lock(tiny_config.study_name)
    gate = BudgetGate(study, budget=3, lock=lock, stuck_after=0.0)
    own, other = study.ask(), study.ask()
    gate.mine.add(own.number)
    assert [t.number for t in gate.claimed()] == [own.number, other.number]  # first look
    assert [t.number for t in gate.claimed()] == [own.number]  # the other sat still since


@pytest.mark.slow
def test_a_claim_whose_lock_went_with_a_restart_is_counted_again(
    tiny_config: StudyConfig,
) -> None:
    """The server restarts between a claim and its trial's creation: the lock went with the
    session, so the claim is counted again under a new lock, ours among the claimed; the
    budget's last place stays ours, one past it is refused."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        url = server.create_database()
        config = tiny_config.replace(storage=url)
        study = new_study(make_storage(url, retry_s=30), config, {})
        lock = backend_for(url).budget_lock(config.study_name)
        gate = BudgetGate(study, budget=2, lock=lock, stuck_after=60.0)
        study.ask()  # another worker's place
        assert gate.claim() and lock.held
        server.stop()
        server.start()
        study.ask()  # ours: the storage reconnects, the lock's session is gone
        assert not lock.alive()
        assert gate.still_exclusive()  # 2 claimed of 2: ours is the last place
        assert not lock.held  # released, with nothing left to release on the server
        # Again, and this time a worker took a place while the lock was lost: 3 of 2.
        gate = BudgetGate(study, budget=2, lock=lock, stuck_after=60.0)
        lock.acquire()
        server.stop()
        server.start()
        study.ask()
        assert not gate.still_exclusive() and not lock.held
    finally:
        server.remove()
