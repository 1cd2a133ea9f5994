"""The outage bookkeeping of ``search.study.outage``: said once, given up after --db-retry, and
which errors count as the database being away. The ride itself, with a real server restarted
and stopped, is tests/engine/test_outage.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import RDBStorage

from search.study.optuna_private import STALE_TRIAL_IDS
from search.study.outage import RIDDEN_CALLS, Outage, RidingStorage, unreachable
from tests.study.storage_calls import recorded_study_calls


def refused() -> sqlalchemy.exc.OperationalError:
    """A real driver error: a PostgreSQL port nobody listens on."""
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://u@127.0.0.1:9/db", connect_args={"connect_timeout": 2}
    )
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
            engine.connect()
    finally:
        engine.dispose()
    return raised.value


def test_a_refused_connection_is_unreachable_and_a_bad_query_is_not(tmp_path) -> None:
    assert unreachable(refused())
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT * FROM no_such_table")
    assert not unreachable(raised.value)
    assert not unreachable(ValueError("connection refused"))  # not the database's words


def test_an_outage_is_said_once_and_given_up_after_its_retry_time() -> None:
    said: list[str] = []
    outage = Outage(retry_s=0.0, say=said.append)
    error = refused()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        outage.wait(error, tries=0)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        outage.wait(error, tries=1)
    assert len(said) == 1 and said[0].startswith("database unreachable (")
    assert said[0].endswith("retrying for up to 0 s") and outage.recent(within=60)
    outage.over()
    assert said[1].startswith("database reachable again after ") and len(said) == 2
    outage.over()  # nothing under way: nothing to say
    assert len(said) == 2 and outage.recent(within=60) and not outage.recent(within=0)


def test_every_storage_call_a_study_makes_rides_through_an_outage(tmp_path: Path) -> None:
    # A call Optuna starts making (an upgrade, a new feature we use) that is neither ridden
    # nor handled on its own would fail a worker at the first restart of its server.
    calls = recorded_study_calls(tmp_path)
    handled = {"record_heartbeat", "set_trial_state_values", STALE_TRIAL_IDS}
    attributes_only = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    assert calls - set(RIDDEN_CALLS) == handled | attributes_only
    for name in (*RIDDEN_CALLS, *handled):
        assert getattr(RidingStorage, name) is not getattr(RDBStorage, name), name
