"""Storages: masking every password-like part of a URL, in every form a driver takes one;
SQLite's settings and the heartbeats; storages that can't hold a study, refused with one line
and nothing written; passwords that never show.

The PostgreSQL tests start a throwaway server (tests/postgres.py, the ``postgres`` fixture in
tests/conftest.py) and skip, saying why, only where its binaries are missing.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import RetryHeartbeatStaleTrialCallback

from search import run
from search.config import MAX_GRACE_PERIOD_S, StudyConfig
from search.study.backends import SQLITE_BUSY_TIMEOUT_S
from search.study.storage import (
    describe_storage_error,
    make_storage,
    masked,
    open_storage,
    url_passwords,
)
from tests.helpers import REPO, UNPRUNED, run_cli, tiny
from tests.postgres import PostgresServer


@pytest.mark.parametrize(
    ("url", "shown", "dropped"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db", "postgresql://u@h:5432/db"),
        (
            "postgresql+psycopg://wd@h:5/db?password=s3cret&sslmode=require",
            "postgresql+psycopg://wd@h:5/db?password=***&sslmode=require",
            "postgresql+psycopg://wd@h:5/db?sslmode=require",
        ),
        ("postgresql://u@h/db?PassWord=s3cret", "postgresql://u@h/db?PassWord=***", "postgresql://u@h/db"),
        (
            "postgresql://u:a%40b@h/db?sslpassword=s3cret",
            "postgresql://u:***@h/db?sslpassword=***",
            "postgresql://u@h/db",
        ),
        ("mysql://u@h/db?passwd=s3cret&PWD=s3cret", "mysql://u@h/db?passwd=***&PWD=***", "mysql://u@h/db"),
        # What SQLAlchemy can't parse is still masked: these are the URLs error lines show.
        ("postgresql://u:s3cret@h:abc/db", "postgresql://u:***@h:abc/db", "postgresql://u@h:abc/db"),
        ("postgresql://u:s3cret@[::1/db", "postgresql://u:***@[::1/db", "postgresql://u@[::1/db"),
        ("sqlite:///studies/a.db", "sqlite:///studies/a.db", "sqlite:///studies/a.db"),
        ("postgresql://u@h/db?passfile=/p", "postgresql://u@h/db?passfile=/p", "postgresql://u@h/db?passfile=/p"),
    ],
)  # fmt: skip
def test_masked_hides_or_drops_every_password(url: str, shown: str, dropped: str) -> None:
    assert masked(url) == shown
    assert masked(url, hidden=None) == dropped
    assert "s3cret" not in masked(url) + masked(url, hidden=None)


def test_url_passwords_finds_typed_and_decoded_forms() -> None:
    assert url_passwords("postgresql://u:a%40b@h/db?password=x1") == ["a%40b", "a@b", "x1"]


def test_describe_storage_error_scrubs_a_query_password_the_driver_echoes() -> None:
    url = "postgresql://u@h/db?password=s3cret"
    error = RuntimeError('invalid connection option "password=s3cret" in postgresql://u@h/db')
    assert "s3cret" not in describe_storage_error(error, url)


def test_describe_storage_error_reads_an_invalidated_transaction_as_unreachable() -> None:
    error = sqlalchemy.exc.PendingRollbackError(
        "Can't reconnect until invalid transaction is rolled back.  Please rollback() fully "
        "before proceeding (Background on this error at: https://sqlalche.me/e/21/8s2b)"
    )
    line = describe_storage_error(error, "postgresql://u@h/db")
    assert "the database can't be reached" in line and "sqlalche.me" not in line


# --- Storage configuration -------------------------------------------------------------------


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


# --- Storages that can't hold a study: one line each, nothing written ------------------------


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
def test_run_gives_up_on_an_unanswering_host_at_its_connect_timeout(capsys) -> None:
    """A host that takes the TCP connection and never answers: the worst case of unreachable.
    The run ends because the driver's connect timeout expired (the error says so), not after
    however long the machine took: no wall-clock bound."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://alice:s3cret@127.0.0.1:{silent.getsockname()[1]}/db"
        status, out, err = run_cli(run.main, ["--storage", url], capsys)
    assert status == 2
    assert "timeout expired: the database can't be reached" in err
    assert "alice:***@127.0.0.1" in err and "s3cret" not in out + err
    assert len(err.strip().splitlines()) == 1


# --- Secrets ---------------------------------------------------------------------------------


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


def test_a_full_disk_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    # A real SQLITE_FULL: the file may not grow past its pages (as a full disk would stop it).
    url = f"sqlite:///{tmp_path / 'full.db'}"
    engine = sqlalchemy.create_engine(url)
    with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x BLOB)")
            count = connection.exec_driver_sql("PRAGMA page_count").scalar()
            connection.exec_driver_sql(f"PRAGMA max_page_count = {count}")
            connection.exec_driver_sql("INSERT INTO t VALUES (zeroblob(100000))")
    line = describe_storage_error(raised.value, url)
    assert line.startswith("database or disk is full: the disk holding ") and "\n" not in line
    assert line.endswith(
        "free space on it, then run the same command again (finished trials are kept)"
    )


def test_a_file_locked_by_another_program_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another program's open write transaction
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": 0})
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
            with engine.begin() as connection:
                connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    finally:
        holder.close()
    line = describe_storage_error(raised.value, url)
    assert line.startswith("database is locked: another program held ") and "\n" not in line
    assert "end it, then run the same command again (finished trials are kept)" in line
