"""The kinds of database a study lives in, one class each: all that differs between SQLite,
PostgreSQL and any other SQLAlchemy URL Optuna's RDB storage takes.

The rest of the project asks ``backend_for(url)`` and never looks at a URL's scheme, so a new
database is one class here (with its tests) and an entry in ``BACKENDS``: its engine options,
its rules (where it can be made, how many workers it carries, whether it exists yet), its
budget lock (``search.study.locks``), whether it has a server to ride out (``search.study
.outage``), the packages of its drivers (``search.signals``) and what its errors mean.

Importing this module imports no database code: ``search.signals`` reads ``DRIVER_PACKAGES``
in every command, ``--help`` included.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from search.config import SQLITE_MAX_WORKERS

if TYPE_CHECKING:
    import sqlalchemy

    from search.study.locks import BudgetLock

logger = logging.getLogger(__name__)

# SQLite waits this long for a lock instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 60
# A PostgreSQL host that doesn't answer fails the command after this long, not the OS's minutes.
CONNECT_TIMEOUT_S = 10
# Connections one process's storage may hold: the trial loop and the heartbeat thread use one
# each, the overflow is headroom for a moment of overlap (docs/workers.md).
POOL_SIZE = 2
POOL_OVERFLOW = 2
# Files SQLite and the budget's lock keep beside a study's database file.
SIDECARS = ("-wal", "-shm", "-journal", ".lock")


class Backend:
    """Any SQLAlchemy database (MySQL, say): a small pool per process, a server whose outages
    are ridden out, no budget lock (workers racing for the last place may overshoot by one
    trial each), and its errors in its own words."""

    scheme: ClassVar[str | None] = None  # SQLAlchemy's backend name; None: any other
    # Top-level packages of its drivers: a stop that lands in one waits (``search.signals``).
    driver_packages: ClassVar[frozenset[str]] = frozenset()
    # It has a server that can go away and come back: a storage on it rides out outages.
    has_server: ClassVar[bool] = True

    def __init__(self, url: str, parsed: sqlalchemy.URL) -> None:
        self.url = url
        self.parsed = parsed

    @property
    def file(self) -> Path | None:
        """The file the database lives in, where it is one."""
        return None

    @property
    def in_memory(self) -> bool:
        """It lives in this process only: no study is there before this process makes one."""
        return False

    def missing_file(self) -> Path | None:
        """The file it lives in where that is not there yet: a command that only reads a
        study says so instead of creating an empty database."""
        return None

    def location_problem(self) -> str | None:
        """Why a database can't be made at the URL, before anything is written; or None."""
        return None

    def workers_problem(self, workers: int) -> str | None:
        """Why ``workers`` processes can't share it (``--workers``); or None."""
        return None

    def engine_options(self) -> dict[str, Any]:
        """SQLAlchemy engine options for its storage (``search.study.storage``)."""
        return {
            "pool_size": POOL_SIZE,
            "max_overflow": POOL_OVERFLOW,
            # A connection the server dropped (a restart) is replaced, not used and failed.
            "pool_pre_ping": True,
        }

    def connect_options(self) -> dict[str, Any]:
        """The engine options that still apply to an engine without a pool."""
        return {k: v for k, v in self.engine_options().items() if k == "connect_args"}

    def opened(self, engine: sqlalchemy.Engine) -> None:
        """What a new storage's engine needs once, after Optuna made its tables."""

    def budget_lock(self, study_name: str) -> BudgetLock:
        from search.study.locks import NoLock

        return NoLock()

    def artifact_dir(self) -> Path | None:
        """Where its studies' artifacts go by default; None: ``studies/artifacts``."""
        return None

    def meaning(self, text: str) -> str | None:
        """What an error of its own means and what to do, for ``text`` (the error's first
        line); None where it says nothing more than the error itself."""
        return None


class SQLite(Backend):
    """A file on this machine (or in memory): no server, so nothing to ride out; a busy
    timeout and write-ahead logging, so a few local workers and optuna-dashboard share it."""

    scheme = "sqlite"
    driver_packages = frozenset({"sqlite3"})
    has_server = False

    @property
    def file(self) -> Path | None:
        if self.parsed.query.get("uri") or self.parsed.database in (None, "", ":memory:"):
            return None  # in memory, or a ``file:`` URI (sqlite:///file:PATH?mode=ro&uri=true)
        return Path(str(self.parsed.database))

    @property
    def in_memory(self) -> bool:
        return self.parsed.database in (None, "", ":memory:")

    def missing_file(self) -> Path | None:
        database = Path(str(self.parsed.database))  # a ``file:`` URI's too: read as a path
        return None if self.in_memory or database.is_file() else database

    def location_problem(self) -> str | None:
        if self.file is not None and not self.file.parent.is_dir():
            return (
                f"directory {self.file.parent} does not exist; create it or point --storage "
                "elsewhere"
            )
        return None

    def workers_problem(self, workers: int) -> str | None:
        if workers == 1:
            return None
        if self.in_memory:
            return (
                f"--workers {workers}: an in-memory SQLite database can't be shared between "
                "processes; give --storage a file or a PostgreSQL URL"
            )
        if workers > SQLITE_MAX_WORKERS:
            return (
                f"--workers {workers}: one SQLite file carries at most {SQLITE_MAX_WORKERS} "
                "workers; use a PostgreSQL --storage for more (docs/workers.md)"
            )
        return None

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}

    def opened(self, engine: sqlalchemy.Engine) -> None:
        """Switch the file to write-ahead logging, where readers and the writer don't block.

        In SQLite's default mode a reader (optuna-dashboard polling the study) holds the file
        against the workers' writes. The mode is stored in the file, so once is enough; a file
        only read (a read-only copy) stays as it is.
        """
        import sqlalchemy.exc

        from search.study.outage import first_line

        try:
            with engine.connect() as connection:
                # The pragma answers with the mode now in force: read, or it may not take effect.
                mode = connection.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
        except sqlalchemy.exc.OperationalError as error:
            mode = first_line(error)
        if mode != "wal":
            logger.debug("SQLite's journal mode stays as it was: %s", mode)
        engine.dispose()  # connections opened before the switch report the old mode; start afresh

    def budget_lock(self, study_name: str) -> BudgetLock:
        from search.study.locks import FileLock, NoLock

        if self.in_memory:
            return NoLock()
        database = str(self.parsed.database).removeprefix("file:")  # a ``file:`` URI's path
        return FileLock(Path(f"{database}.lock"))

    def artifact_dir(self) -> Path | None:
        return None if self.in_memory else Path(str(self.parsed.database)).parent

    def meaning(self, text: str) -> str | None:
        database = self.parsed.database
        lowered = text.lower()
        if "database or disk is full" in lowered:
            return (
                f"{text}: the disk holding {database} is full; free space on it, then run the "
                "same command again (finished trials are kept)"
            )
        if "database is locked" in lowered:
            return (
                f"{text}: another program held {database} locked for over "
                f"{SQLITE_BUSY_TIMEOUT_S} s (an open write transaction in a SQLite browser, "
                "say); end it, then run the same command again (finished trials are kept)"
            )
        if "file is not a database" in lowered:
            return f"{database} is not a SQLite database; point --storage at a study's .db file"
        if "unable to open database file" in lowered:
            return f"can't open or create {database}: check that its directory is writable"
        return None


class PostgreSQL(Backend):
    """A server many workers on many machines share: a connect timeout, a small pool per
    process, an advisory lock for the budget, and outages ridden out."""

    scheme = "postgresql"
    driver_packages = frozenset({"psycopg", "psycopg2"})

    def engine_options(self) -> dict[str, Any]:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "wd-search"}
        return {
            **super().engine_options(),
            "connect_args": {k: v for k, v in connect_args.items() if k not in self.parsed.query},
        }

    def budget_lock(self, study_name: str) -> BudgetLock:
        from search.study.locks import AdvisoryLock

        return AdvisoryLock(self.parsed, study_name, self.connect_options())

    def meaning(self, text: str) -> str | None:
        lowered = text.lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            return (
                f"{text}: check the user and password (kept out of the URL, in ~/.pgpass or "
                "PGPASSWORD, they stay out of shell histories and process lists)"
            )
        if f'database "{self.parsed.database}" does not exist' in text:
            return f"{text}: create it first (docs/workers.md)"
        return None


BACKENDS: tuple[type[Backend], ...] = (SQLite, PostgreSQL)
# Every backend's driver packages, SQLAlchemy's and Optuna's: a stop that lands in their code
# could interrupt a transaction half-way (``search.signals``).
DRIVER_PACKAGES = frozenset({"sqlalchemy"}).union(*(b.driver_packages for b in BACKENDS))


def backend_for(url: str) -> Backend:
    """The backend of a SQLAlchemy URL; raises SQLAlchemy's ``ArgumentError`` (or a
    ``ValueError``) for text that is no URL."""
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    name = parsed.get_backend_name()
    kind = next((b for b in BACKENDS if b.scheme == name), Backend)
    return kind(url, parsed)
