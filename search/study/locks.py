"""The study budget's claim lock, one kind per database (``search.study.backends`` picks).

Counting a study's claimed trials and asking for one more are two steps; the lock makes them
one across every worker (``search.engine.budget``). PostgreSQL has advisory locks, which the
server drops the moment the worker's connection ends however it ends; a SQLite file, shared by
processes on one machine only, has ``flock`` on a file beside it; any other database goes
without, and workers racing for the last place may overshoot by one trial each.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy

from search.study.outage import unreachable

logger = logging.getLogger(__name__)

# The lock is held only for a count and an insert: poll it rather than block, so that
# Ctrl-C is never stuck behind a database wait.
LOCK_POLL_S = 0.02


class BudgetLock(Protocol):
    """What the budget asks of a lock: take it, let it go, and whether it is still held."""

    @property
    def held(self) -> bool: ...

    def acquire(self) -> None: ...

    def alive(self) -> bool: ...

    def release(self) -> None: ...


def lock_key(study_name: str) -> int:
    """64 bits of a hash: PostgreSQL's advisory locks take one bigint key per study."""
    digest = hashlib.sha256(f"wd-search budget {study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class NoLock:
    """A database without a lock the budget can use: counting and asking stay two steps."""

    held = False

    def acquire(self) -> None:
        pass

    def alive(self) -> bool:
        return False

    def release(self) -> None:
        pass


class AdvisoryLock:
    """A PostgreSQL advisory lock on a connection of its own, which exists only while the lock
    is held (NullPool): a worker that dies drops it with its session."""

    def __init__(self, url: sqlalchemy.URL, study_name: str, connect: dict[str, Any]) -> None:
        self.key = lock_key(study_name)
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool, **connect)
        self.connection: sqlalchemy.Connection | None = None

    @property
    def held(self) -> bool:
        return self.connection is not None

    def acquire(self) -> None:
        if self.held:
            return
        connection = self.engine.connect()
        try:
            query = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)")
            while not connection.execute(query, {"key": self.key}).scalar():
                time.sleep(LOCK_POLL_S)
        except BaseException:
            connection.close()
            raise
        self.connection = connection

    def alive(self) -> bool:
        """Whether the lock is still held: a server that restarted dropped it with its session."""
        if self.connection is None:
            return False
        try:
            self.connection.execute(sqlalchemy.text("SELECT 1"))
        except Exception as error:
            if not unreachable(error):
                raise
            return False
        return True

    def release(self) -> None:
        if self.connection is None:
            return
        connection, self.connection = self.connection, None
        try:
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
            )
        except Exception as error:
            if not unreachable(error):
                raise
            # The server is away or came back without the session: the lock went with it.
        finally:
            try:
                connection.close()  # with NullPool this ends the session, and its lock
            except Exception as error:
                if not unreachable(error):
                    raise


class FileLock:
    """``flock`` on a file beside a SQLite database; a folder where it can't be made (read
    only) goes without: its database can't take trials either."""

    def __init__(self, path: Path) -> None:
        self.path: Path | None = path
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        if self.held or self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            logger.debug("no budget lock at %s: %s", self.path, error)
            self.path = None
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(LOCK_POLL_S)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def alive(self) -> bool:
        return self.held

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the only descriptor drops the flock
