"""``search.study.backends``: each URL gets its database's rules, and one that no class
knows gets the generic ones. The rules' effects on real databases are tested where they act
(test_storage, test_budget, test_workers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from search.config import SQLITE_MAX_WORKERS
from search.study.backends import (
    CONNECT_TIMEOUT_S,
    DRIVER_PACKAGES,
    Backend,
    PostgreSQL,
    SQLite,
    backend_for,
)
from search.study.locks import AdvisoryLock, FileLock, NoLock
from tests.helpers import REPO


def test_a_sqlite_file_has_its_file_lock_and_artifacts_beside_it(tmp_path: Path) -> None:
    database = tmp_path / "s.db"
    backend = backend_for(f"sqlite:///{database}")
    assert type(backend) is SQLite and not backend.has_server
    assert backend.file == database and backend.missing_file() == database
    database.touch()
    assert backend.missing_file() is None
    lock = backend.budget_lock("s")
    assert isinstance(lock, FileLock) and lock.path == Path(f"{database}.lock")
    assert backend.artifact_dir() == tmp_path
    assert backend.workers_problem(SQLITE_MAX_WORKERS) is None
    assert f"at most {SQLITE_MAX_WORKERS} workers" in str(
        backend.workers_problem(SQLITE_MAX_WORKERS + 1)
    )
    assert backend.location_problem() is None
    assert "does not exist" in str(backend_for(f"sqlite:///{tmp_path}/no/s.db").location_problem())


def test_sqlite_in_memory_and_uris_have_no_file_to_lock_or_clean_up(tmp_path: Path) -> None:
    memory = backend_for("sqlite:///:memory:")
    assert memory.in_memory and memory.file is None and memory.missing_file() is None
    assert isinstance(memory.budget_lock("s"), NoLock) and memory.artifact_dir() is None
    assert "in-memory SQLite database" in str(memory.workers_problem(2))
    uri = backend_for(f"sqlite:///file:{tmp_path / 'r.db'}?mode=ro&uri=true")
    assert uri.file is None  # nothing a failed run would remove
    lock = uri.budget_lock("s")
    assert isinstance(lock, FileLock) and lock.path == tmp_path / "r.db.lock"


def test_postgresql_has_a_server_an_advisory_lock_and_its_own_timeouts() -> None:
    backend = backend_for("postgresql+psycopg://user@db.example:5432/studies")
    assert type(backend) is PostgreSQL and backend.has_server and backend.file is None
    assert backend.engine_options()["connect_args"]["connect_timeout"] == CONNECT_TIMEOUT_S
    assert backend.connect_options() == {"connect_args": backend.engine_options()["connect_args"]}
    assert isinstance(backend.budget_lock("s"), AdvisoryLock)
    assert backend.workers_problem(64) is None
    own = backend_for("postgresql+psycopg://user@db.example/studies?connect_timeout=3")
    assert "connect_timeout" not in own.engine_options()["connect_args"]  # the URL's wins
    assert "create it first" in str(own.meaning('database "studies" does not exist'))


def test_any_other_database_gets_the_generic_rules() -> None:
    backend = backend_for("mysql+pymysql://user@db.example/studies")
    assert type(backend) is Backend and backend.has_server
    assert isinstance(backend.budget_lock("s"), NoLock)
    assert backend.engine_options()["pool_pre_ping"] is True
    assert backend.meaning("database is locked") is None  # SQLite's words mean nothing here
    assert backend.workers_problem(64) is None and backend.artifact_dir() is None


def test_every_backends_drivers_count_as_storage_code() -> None:
    assert {"sqlalchemy", "sqlite3", "psycopg", "psycopg2"} <= DRIVER_PACKAGES


def test_the_backends_module_imports_no_database_code() -> None:
    # search.signals reads DRIVER_PACKAGES in every command, --help included.
    code = "import sys, search.study.backends; print('sqlalchemy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
