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
from typing import Any

import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from search.config import StudyConfig
from search.errors import UserError
from search.study.backends import Backend, backend_for
from search.study.outage import UNREACHABLE, RidingStorage, first_line, storage_cause

logger = logging.getLogger(__name__)

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
    try:
        backend = backend_for(url)
        problem = backend.location_problem()
        if problem is not None:
            raise StudyError(f"--storage {masked(url)}: {problem}")
        engine_kwargs = backend.engine_options()
        refuse_foreign_database(backend, engine_kwargs)
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
            if retry_s and backend.has_server:
                storage = RidingStorage(
                    url, retry_s=retry_s, engine_kwargs=engine_kwargs, **heartbeat
                )
            else:
                storage = RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as error:
        raise StudyError(
            f"--storage {masked(url)}: {describe_storage_error(error, url)}"
        ) from None
    backend.opened(storage.engine)
    return storage


def open_storage(config: StudyConfig) -> RDBStorage:
    """The storage a worker runs trials on: ``make_storage`` with the config's heartbeat."""
    return make_storage(
        config.storage_url,
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
        retry_s=config.db_retry,
    )


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for ``url``'s database (``search.study.backends``)."""
    return backend_for(url).engine_options()


def refuse_foreign_database(backend: Backend, engine_kwargs: dict[str, Any]) -> None:
    """Refuse a database that holds tables but no Optuna study, before writing anything to it.

    Optuna adds its tables to whatever database it is pointed at; a mistyped --storage would
    fill someone else's database with them.
    """
    if backend.in_memory or backend.missing_file() is not None:
        return
    options = {k: v for k, v in engine_kwargs.items() if k == "connect_args"}  # no pool
    engine = sqlalchemy.create_engine(backend.parsed, poolclass=sqlalchemy.NullPool, **options)
    try:
        tables = sorted(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if tables and "version_info" not in tables:
        shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise StudyError(
            f"--storage {masked(backend.url)}: this database holds other tables ({shown}) and no "
            "Optuna study; point --storage at a new database or a study's own"
        )


def describe_storage_error(error: BaseException, url: str) -> str:
    """One line for a storage failure: the database's own words, what it means, what to do."""
    cause = storage_cause(error) or error
    origin = getattr(cause, "orig", None)
    text = first_line(origin if isinstance(origin, BaseException) else cause)
    text = text.removeprefix("(sqlite3.OperationalError) ").removeprefix(
        "(sqlite3.DatabaseError) "
    )
    try:
        backend: Backend | None = backend_for(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        backend = None
    text = scrubbed(BACKGROUND_LINK.sub("", text), url)
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return f"{text}: the database is read-only here; point --storage at a writable location"
    meaning = None if backend is None else backend.meaning(text)
    if meaning is not None:
        return meaning
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
