"""Ride through a database outage: a restart, a failover, a dropped connection.

A study shared by many workers on PostgreSQL is only as strong as its server's worst second: a
routine ``pg_ctl restart`` cuts every connection, and every storage call in flight fails. The
``RidingStorage`` retries such calls with backoff for up to ``--db-retry`` seconds, saying so
once per outage, so the workers wait for the server instead of ending, and each write that
failed is made when it is back. Every Optuna storage call is one transaction, rolled back when
its connection dies, so a retried call is made once; a call that dies while its commit is in
flight could have committed, and is retried only where making it twice does no harm (setting
a value to what it already holds; a state already set is taken as done).

What the outage does to heartbeats is the second half: none can be recorded while the server
is away, so when it is back every running trial looks stale, and the first worker to look
would fail them all, the living with the dead. For a grace period after an outage this
process fails no trial as stale (``RidingStorage.stale_trial_ids``), which gives the living
time to beat again. A heartbeat that fails is skipped, not retried: it is a sign of life, and
the next one says the same; blocking training on it would stop every trial in the pool for
the outage.

Written by hand: SQLAlchemy's ``pool_pre_ping`` replaces a connection the server dropped, but
only once it is back; Optuna's storage has no retry of its own (its ``RetryFailedTrialCallback``
retries trials, not calls).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from search.study.optuna_private import CACHE_CALLS, STALE_TRIAL_IDS, rdb_stale_trial_ids

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT_S = 0.5  # the first retry comes this soon; each next one waits twice as long...
LONGEST_WAIT_S = 2.0  # ...up to this: a quick restart is noticed soon after it is back


# What drivers say when the server is down, going down, or not answering (psycopg, psycopg2).
UNREACHABLE = (
    "connection failed", "could not connect", "connection refused", "timeout expired",
    "could not translate host name", "failed to resolve host", "server closed the connection",
    "shutting down", "starting up", "in recovery mode", "not yet accepting connections",
    "terminating connection", "connection already closed", "connection is closed",
    "consuming input failed", "no route to host",
    # SQLAlchemy's word once a dropped connection left its transaction invalid (Optuna caught the
    # first error and fell back): seen with the server stopped mid-study on a busy machine.
    "can't reconnect until invalid transaction",
)  # fmt: skip


def storage_cause(error: BaseException) -> BaseException | None:
    """The database error behind ``error``, if any: Optuna wraps it, or raises another
    exception while handling it."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.SQLAlchemyError):
            return seen
        if isinstance(seen, StorageInternalError) and seen.__cause__ is not None:
            return seen.__cause__
        context = None if seen.__suppress_context__ else seen.__context__
        seen = seen.__cause__ or context
    return None


def first_line(error: BaseException) -> str:
    """The first line of an exception's message: SQLAlchemy's run to many."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database is away (down, restarting, the connection cut),
    which waiting can mend, rather than a mistake in what was asked of it."""
    cause = storage_cause(error)
    if cause is None:
        return False
    if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
        return True
    text = str(getattr(cause, "orig", None) or cause).lower()
    return any(words in text for words in UNREACHABLE)


class Outage:
    """One process's view of the database's outages: when the current one began, whether it
    was said, and when the last one ended. Shared by the threads of the process."""

    def __init__(self, retry_s: float, say: Callable[[str], None]) -> None:
        self.retry_s = retry_s
        self.say = say
        self.lock = threading.Lock()
        self.since: float | None = None  # the current outage's start, None while reachable
        self.ended: float | None = None  # when the last outage ended

    def begin(self, error: BaseException) -> float:
        """An outage is under way (said once, when it begins); returns when it began."""
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                self.say(
                    f"database unreachable ({first_line(storage_cause(error) or error)}), "
                    f"retrying for up to {self.retry_s:g} s"
                )
            return self.since

    def wait(self, error: BaseException, tries: int) -> None:
        """Sleep before the next try, or raise ``error`` once the outage outlasts retry_s."""
        since = self.begin(error)
        now = time.monotonic()
        left = since + self.retry_s - now
        if left <= 0:
            raise error
        time.sleep(min(left, FIRST_WAIT_S * 2**tries, LONGEST_WAIT_S))

    def over(self) -> None:
        """A call went through: an outage under way has ended."""
        if self.since is None:
            return
        with self.lock:
            if self.since is None:
                return
            lasted = time.monotonic() - self.since
            self.since = None
            self.ended = time.monotonic()
        self.say(f"database reachable again after {lasted:.0f} s; carrying on")

    def recent(self, within: float) -> bool:
        """Whether an outage is under way, or ended less than ``within`` seconds ago."""
        return self.since is not None or (
            self.ended is not None and time.monotonic() - self.ended < within
        )


def say_on_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class RidingStorage(RDBStorage):
    """Optuna's RDB storage, whose calls wait out an outage of up to ``retry_s`` seconds."""

    def __init__(
        self, url: str, *, retry_s: float, say: Callable[[str], None] = say_on_stderr, **kw: Any
    ) -> None:
        super().__init__(url, **kw)
        self.outage = Outage(retry_s, say)

    def riding(self, call: Callable[[], T]) -> T:
        """``call()``, tried again while the database is unreachable, up to retry_s."""
        tries = 0
        while True:
            try:
                result = call()
            except Exception as error:
                if not unreachable(error):
                    raise
                self.outage.wait(error, tries)
                tries += 1
                self.forget_session()
                continue
            self.outage.over()
            return result

    def forget_session(self) -> None:
        """Drop this thread's session: one whose connection died mid-transaction answers
        "can't reconnect until invalid transaction is rolled back" to every call after."""
        try:
            self.remove_session()
        except Exception as error:  # closing what the server already closed
            logger.debug("session dropped with an error: %s", first_line(error))

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:
            if not unreachable(error):
                raise
            logger.debug("heartbeat of trial %d skipped: the database is away", trial_id)
            # Marked all the same: a worker whose only call in the outage was a heartbeat must
            # not judge the others' trials stale when it is back (``stale_trial_ids``).
            self.outage.begin(error)
            self.forget_session()
            return
        self.outage.over()

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """What Optuna asks by ``STALE_TRIAL_IDS``: none for a while after an outage."""
        interval = self.heartbeat_interval or 0
        grace = self.grace_period or 2 * interval
        # Every heartbeat stopped with the server, so the living look dead too, until each
        # worker has beaten again: its retry may still sleep a backoff, then beats within an
        # interval, and its beat counts from then on.
        if self.outage.recent(within=grace + interval + LONGEST_WAIT_S):
            return []
        return self.riding(lambda: rdb_stale_trial_ids(self, study_id))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        tries = 0

        def call() -> bool:
            nonlocal tries
            try:
                return super(RidingStorage, self).set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                # A try before this one may have committed as its connection died.
                if tries and self.get_trial(trial_id).state == state:
                    return True
                raise
            finally:
                tries += 1

        return self.riding(call)


def _ridden(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    def ridden(self: RidingStorage, *args: Any, **kwargs: Any) -> Any:
        return self.riding(lambda: method(self, *args, **kwargs))

    ridden.__name__ = name
    ridden.__doc__ = method.__doc__
    return ridden


# Every other call a study makes, read or write: each is one transaction, and making a write
# again sets what it set (intermediate values and attributes are keyed; a trial's creation is
# the one insert, and a connection cut between its commit and its answer is too rare a moment
# to guard: the trial would be a spare RUNNING one, which the end of a run fails).
# ``tests/study/test_outage.py`` checks that a study calls nothing else that reaches the database.
RIDDEN_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "create_new_trial",
    "set_trial_param", "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id",
    "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial",
    "get_trial_params", "get_trial_user_attrs", "get_trial_system_attrs",
    "check_trial_is_updatable",
    *CACHE_CALLS,  # what Optuna's cache in front of an RDB storage calls instead
)  # fmt: skip
for _name in RIDDEN_CALLS:
    setattr(RidingStorage, _name, _ridden(_name))
setattr(RidingStorage, STALE_TRIAL_IDS, RidingStorage.stale_trial_ids)
