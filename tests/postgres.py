"""A throwaway PostgreSQL server for the tests, from the installed binaries.

``initdb`` and ``pg_ctl`` on a temporary directory and a free port, listening on 127.0.0.1 only,
with password authentication (so a test can check that the password never shows). PostgreSQL
refuses to run as root, and CI runs as root: there the server runs as the unprivileged
``postgres`` user that Debian's package creates, through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
from optuna.storages import RDBStorage

SERVER_USER = "postgres"  # Debian's package creates it; the server runs as it under root


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian's layout, else the PATH), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable() -> str | None:
    """Why no test server can start here, or None when one can."""
    if bin_dir() is None:
        return "PostgreSQL's server binaries (initdb, pg_ctl) are missing; .ci/run installs them"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One server in its own temporary directory; ``stop()`` removes it all."""

    def __init__(self) -> None:
        binaries = bin_dir()
        assert binaries is not None, unavailable()
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="wd-search-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "--username=postgres", f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        self.start()

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
            "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (fast: connections are cut); its data stays for ``start()``."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://postgres:{secret}@127.0.0.1:{self.port}/{database}"

    def sqlalchemy_url(self, database: str) -> str:
        """The URL as the README writes it, with the driver named (SQLAlchemy 2.0 and 2.1)."""
        return self.url(database).replace("postgresql://", "postgresql+psycopg://", 1)

    def create_database(self, schema: bool = False) -> str:
        """A new empty database; returns its URL (with the password in it).

        ``schema``: with Optuna's tables in it already, for a test that polls the study while
        its command starts: two processes creating the tables at once collide.
        """
        name = f"test_{secrets.token_hex(4)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        url = self.sqlalchemy_url(name)
        if schema:
            RDBStorage(url).engine.dispose()
        return url

    def query(self, sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url()) as connection:
            return list(connection.execute(sql).fetchall())
