"""Storage URL -> Optuna storage: SQLite by default, PostgreSQL for many machines.

Every failure of the database a user can meet is one line here: which (masked) URL, the
database's own words, what they mean and what to do.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import urllib.parse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from search.config import StudyConfig
from search.errors import UserError
from search.study.outage import UNREACHABLE, RidingStorage, first_line, storage_cause

logger = logging.getLogger(__name__)

# SQLite waits this long for a lock instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 60
# A PostgreSQL host that doesn't answer fails the command after this long, not the OS's minutes.
CONNECT_TIMEOUT_S = 10
# Connections one process's storage may hold: the trial loop and the heartbeat thread use one
# each, the overflow is headroom for a moment of overlap (docs/workers.md).
POOL_SIZE = 2
POOL_OVERFLOW = 2
# A trial whose heartbeat went stale is tried again with its parameters at most this often:
# parameters that kill their worker every time (out of memory, say) must not loop forever.
STALE_TRIAL_MAX_RETRY = 3


# What a retry takes over from the stale trial it replaces: the retry's own bookkeeping, and
# the parameters Optuna pins through ``fixed_params``. Nothing it measured: its constraint
# (``constraints:train_accuracy`` and the legacy ``constraints``), notes and metrics.
RETRY_KEEPS = frozenset({"failed_trial", "retry_history", "fixed_params"})


class RetryStaleTrialWithOwnResults(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a stale trial, less what the stale trial measured.

    Optuna's callback copies every attribute of the dead trial onto its retry. A copied
    ``constraints:train_accuracy`` makes the retry's own ``set_constraint`` a no-op (Optuna
    keeps the first value of a key), so the retry would be judged feasible or not on the dead
    trial's training accuracy; copied user attributes would show its metrics until overwritten.
    The retry starts from the parameters only and records everything else itself.
    """

    def __call__(self, study: Any, trial: FrozenTrial) -> None:
        fresh = copy.deepcopy(trial)
        fresh.user_attrs = {}
        fresh.system_attrs = {k: v for k, v in trial.system_attrs.items() if k in RETRY_KEEPS}
        super().__call__(study, fresh)


class StudyError(UserError):
    """The storage or the study can't be used as asked: one line saying why and what to do."""

    exit_code = 2  # a bad --storage or --study-name is a usage error


class StorageError(UserError):
    """The study's database failed while a command used it (stopped, unreachable, read-only)."""


# The user-info password of a URL as SQLAlchemy parses it: ``scheme://user:PASSWORD@``.
USERINFO_PASSWORD = re.compile(r"^(?P<head>[\w+.-]+://[^:/@]*):(?P<password>[^@]*)@")
# A password-like ``key=value`` in a URL's query or a libpq connection string, in any case or
# driver's spelling: password, sslpassword (libpq), passwd (MySQL), PWD (ODBC), pass.
PASSWORD_KEY = r"[\w.-]*(?:pass(?:word|wd)?|pwd)"
QUERY_PASSWORD = re.compile(
    rf"(?P<sep>[?&;\s]|^)(?P<key>{PASSWORD_KEY})=(?P<value>[^&;#\s]*)", re.I
)
HIDDEN = "***"


def masked(url: str, hidden: str | None = HIDDEN) -> str:
    """``url`` with every password in it replaced by ``hidden``, or dropped when it is None.

    The one masking of the commands: opening lines, hints, errors and logs all show URLs
    through it. Works on text SQLAlchemy can't parse (a bad port, an unclosed ``[``), since
    those are the URLs error lines show. Dropped, the password leaves a URL that works as
    typed with the password in ``~/.pgpass`` or ``PGPASSWORD`` (PostgreSQL's own clients do
    the same: they never echo one).
    """
    if hidden is None:
        base, _, query = USERINFO_PASSWORD.sub(r"\g<head>@", url, count=1).partition("?")
        kept = [
            pair
            for pair in query.split("&")
            if pair and not re.fullmatch(PASSWORD_KEY, pair.partition("=")[0], re.I)
        ]
        return base + ("?" + "&".join(kept) if kept else "")
    shown = USERINFO_PASSWORD.sub(rf"\g<head>:{hidden}@", url, count=1)
    return QUERY_PASSWORD.sub(lambda m: f"{m['sep']}{m['key']}={hidden}", shown)


def url_passwords(url: str) -> list[str]:
    """The passwords written in ``url``, as typed and percent-decoded, longest first."""
    found = [m["password"] for m in USERINFO_PASSWORD.finditer(url)]
    found += [m["value"] for m in QUERY_PASSWORD.finditer(url)]
    every = {p for value in found if value for p in (value, urllib.parse.unquote(value))}
    return sorted(every, key=len, reverse=True)


def scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's error message, say) with ``url``'s passwords replaced by ***."""
    for password in url_passwords(url):
        text = text.replace(password, HIDDEN)
    return masked(text)


def has_password(url: str) -> bool:
    return bool(url_passwords(url))


# Files SQLite and the budget's lock keep beside a study's database file.
SIDECARS = ("-wal", "-shm", "-journal", ".lock")


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another backend, in memory, a ``file:`` URI)."""
    if not url.startswith("sqlite"):
        return None
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.query.get("uri") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def make_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    retry_s: float | None = None,
) -> RDBStorage:
    """An RDB storage for ``url``, or a StudyError naming the (masked) URL and the problem.

    SQLite gets a busy timeout on every connection and write-ahead logging, so a few local
    workers, and optuna-dashboard reading the file, never fail with "database is locked";
    PostgreSQL gets a connect timeout and a small pool per process. With
    ``heartbeat_interval``, a running trial records a heartbeat that often, and one whose
    heartbeat is older than ``grace_period`` seconds (its worker died) is failed by the next
    worker or run and its parameters are tried again. With ``retry_s``, a database server
    that goes away is waited for that long (``search.study.outage``); SQLite has no server.
    """
    if url.startswith("sqlite"):
        parsed = sqlalchemy.engine.make_url(url)
        database = None if parsed.query.get("uri") else parsed.database  # file:...?mode=ro
        if database and database != ":memory:" and not Path(database).parent.is_dir():
            raise StudyError(
                f"--storage {masked(url)}: directory {Path(database).parent} does not exist; "
                "create it or point --storage elsewhere"
            )
    try:
        engine_kwargs = engine_options(url)
        refuse_foreign_database(url, engine_kwargs)
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", ExperimentalWarning)
            heartbeat: dict[str, Any] = {}
            if heartbeat_interval is not None:
                heartbeat = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period,
                    "heartbeat_stale_trial_callback": RetryStaleTrialWithOwnResults(
                        max_retry=STALE_TRIAL_MAX_RETRY
                    ),
                }
            storage: RDBStorage
            if retry_s and not url.startswith("sqlite"):
                storage = RidingStorage(
                    url, retry_s=retry_s, engine_kwargs=engine_kwargs, **heartbeat
                )
            else:
                storage = RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as error:
        raise StudyError(
            f"--storage {masked(url)}: {describe_storage_error(error, url)}"
        ) from None
    if url.startswith("sqlite"):
        use_write_ahead_log(storage.engine)
    return storage


def open_storage(config: StudyConfig) -> RDBStorage:
    """The storage a worker runs trials on: ``make_storage`` with the config's heartbeat."""
    return make_storage(
        config.storage_url,
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
        retry_s=config.db_retry,
    )


def connect_only(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The engine options that still apply to an engine without a pool: ``connect_args``."""
    return {k: v for k, v in engine_kwargs.items() if k == "connect_args"}


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for ``url``'s database (see ``make_storage``)."""
    parsed = sqlalchemy.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    options: dict[str, Any] = {
        "pool_size": POOL_SIZE,
        "max_overflow": POOL_OVERFLOW,
        # A connection the server dropped (a restart) is replaced, not used and failed.
        "pool_pre_ping": True,
    }
    if backend == "postgresql":
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "wd-search"}
        options["connect_args"] = {k: v for k, v in connect_args.items() if k not in parsed.query}
    return options


def refuse_foreign_database(url: str, engine_kwargs: dict[str, Any]) -> None:
    """Refuse a database that holds tables but no Optuna study, before writing anything to it.

    Optuna adds its tables to whatever database it is pointed at; a mistyped --storage would
    fill someone else's database with them.
    """
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and (
        parsed.database in (None, "", ":memory:") or not Path(parsed.database).exists()
    ):
        return
    options = connect_only(engine_kwargs)
    engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.NullPool, **options)
    try:
        tables = sorted(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if tables and "version_info" not in tables:
        shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise StudyError(
            f"--storage {masked(url)}: this database holds other tables ({shown}) and no "
            "Optuna study; point --storage at a new database or a study's own"
        )


def use_write_ahead_log(engine: sqlalchemy.Engine) -> None:
    """Switch a SQLite file to write-ahead logging, where readers and the writer don't block.

    In SQLite's default mode a reader (optuna-dashboard polling the study) holds the file
    against the workers' writes. The mode is stored in the file, so once is enough; a file
    only read (a read-only copy) stays as it is.
    """
    try:
        with engine.connect() as connection:
            # The pragma answers with the mode now in force: read, or it may not take effect.
            mode = connection.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
    except sqlalchemy.exc.OperationalError as error:
        mode = first_line(error)
    if mode != "wal":
        logger.debug("SQLite's journal mode stays as it was: %s", mode)
    engine.dispose()  # connections opened before the switch report the old mode; start afresh


def describe_storage_error(error: BaseException, url: str) -> str:
    """One line for a storage failure: the database's own words, what it means, what to do."""
    cause = storage_cause(error) or error
    origin = getattr(cause, "orig", None)
    text = first_line(origin if isinstance(origin, BaseException) else cause)
    text = text.removeprefix("(sqlite3.OperationalError) ").removeprefix(
        "(sqlite3.DatabaseError) "
    )
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        parsed = None
    text = scrubbed(BACKGROUND_LINK.sub("", text), url)
    database = parsed.database if parsed is not None else None
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return f"{text}: the database is read-only here; point --storage at a writable location"
    if "database or disk is full" in lowered:
        return (
            f"{text}: the disk holding {database} is full; free space on it, then run the same "
            "command again (finished trials are kept)"
        )
    if "database is locked" in lowered:
        return (
            f"{text}: another program held {database} locked for over "
            f"{SQLITE_BUSY_TIMEOUT_S} s (an open write transaction in a SQLite browser, say); "
            "end it, then run the same command again (finished trials are kept)"
        )
    if "file is not a database" in lowered:
        return f"{database} is not a SQLite database; point --storage at a study's .db file"
    if "unable to open database file" in lowered:
        return f"can't open or create {database}: check that its directory is writable"
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"{text}: check the user and password (kept out of the URL, in ~/.pgpass or "
            "PGPASSWORD, they stay out of shell histories and process lists)"
        )
    if f'database "{database}" does not exist' in text:
        return f"{text}: create it first (docs/workers.md)"
    if any(words in lowered for words in UNREACHABLE):
        return (
            f"{text}: the database can't be reached; check that it is running and reachable, "
            "then run the same command again (finished trials are kept)"
        )
    return text


# SQLAlchemy's "(Background on this error at: https://sqlalche.me/...)": no help in one line.
BACKGROUND_LINK = re.compile(r"\s*\(Background on this error at: [^)]*\)")


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn a database failure inside the block into one line naming the (masked) storage.

    Every trial is committed as it finishes, so what such a failure loses is the trial in
    flight only; the message says how to carry on. Optuna's heartbeat thread may meet a
    failure first and would print a traceback; it stays quiet instead (a debug log), and the
    main thread reports a database that is gone when it next uses it: one line.
    """
    thread_hook = threading.excepthook

    def quiet_storage_failures(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and storage_cause(args.exc_value) is not None:
            logger.debug(
                "a running trial's heartbeats stopped (%s); past the grace period another "
                "worker may judge the trial dead",
                describe_storage_error(args.exc_value, url),
            )
        else:
            thread_hook(args)

    threading.excepthook = quiet_storage_failures
    try:
        yield
    except Exception as error:
        if isinstance(error, UserError) or storage_cause(error) is None:
            raise
        raise StorageError(
            f"--storage {masked(url)}: {describe_storage_error(error, url)}"
        ) from None
    finally:
        threading.excepthook = thread_hook
