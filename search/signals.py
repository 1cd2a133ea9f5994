"""Ctrl-C and SIGTERM stop a command cleanly: never half-way through a database call.

Python turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread happens to be. Raised
inside an Optuna storage call (``study.ask``, ``trial.report``, ``study.tell``), it can leave a
trial RUNNING with nobody left to tell it, or created without a heartbeat, which no stale-trial
check ever fails. So the stop is raised only where our own code or PyTorch runs, e.g. between
two training steps; a signal that lands inside the storage is retried every
``RETRY_S`` seconds until the call has returned. Raised inside the objective, Optuna itself
marks the trial FAIL and re-raises; the trial pool tells its trials FAIL the same way.

SIGTERM (what ``kill``, a scheduler or a container runtime sends) takes the same path, so a
worker stopped either way leaves no RUNNING trial and exits with 128 + the signal's number.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from search.errors import UserError
from search.study.backends import DRIVER_PACKAGES

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# How soon a stop that landed inside a database call is tried again.
RETRY_S = 0.05

# Top-level packages whose frames are "inside the storage": a stop raised there could interrupt a
# transaction half-way. ``optuna`` as a whole, since its sampler, ask and tell all write trials;
# every database's drivers (``search.study.backends``).
STORAGE_PACKAGES = frozenset({"optuna", "optuna_dashboard"}) | DRIVER_PACKAGES
# Our own code: once a frame of it is reached walking outward, nothing deeper is the storage.
OUR_PACKAGES = frozenset({"search", "models", "__main__", "__mp_main__"})


class Interrupted(KeyboardInterrupt):
    """The command was told to stop by a signal; it exits with ``128 + signum`` (130, 143).

    A ``KeyboardInterrupt``, so whatever already handles Ctrl-C (Optuna failing the running
    trial, the trial pool telling its trials FAIL) handles SIGTERM alike.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def in_storage_code(frame: FrameType | None) -> bool:
    """Whether ``frame``, walking outward to our own code, passes through a storage package."""
    while frame is not None:
        package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if package in OUR_PACKAGES:
            return False
        if package in STORAGE_PACKAGES:
            return True
        frame = frame.f_back
    return False


class GracefulStop:
    """Signal handlers that raise ``Interrupted`` once, outside database calls.

    Repeats are ignored: a Ctrl-C reaches a local worker twice, from the terminal and forwarded
    by its parent, and the second must not cut short the clean-up the first started.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.raised = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        self._deliver(frame)

    def _on_retry(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and not self.raised:
            self._deliver(frame)

    def _deliver(self, frame: FrameType | None) -> None:
        assert self.signum is not None
        if in_storage_code(frame):
            signal.setitimer(signal.ITIMER_REAL, RETRY_S)
            return
        self.raised = True
        raise Interrupted(self.signum)

    def check(self, pending: int) -> None:
        """Stop now for a signal that arrived before the handlers were installed (``pending``)."""
        if pending and self.signum is None:
            self.signum = pending
            self.raised = True
            raise Interrupted(pending)


@contextmanager
def graceful_stop() -> Iterator[GracefulStop]:
    """Install the handlers for SIGINT and SIGTERM (main thread only), restore them after."""
    stop = GracefulStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    handled = (*STOP_SIGNALS, signal.SIGALRM)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    for signum in STOP_SIGNALS:
        # Ignored from the start stays ignored: a shell starts background jobs that way, so
        # that a Ctrl-C meant for the foreground doesn't reach them.
        if previous[signum] is not signal.SIG_IGN:
            signal.signal(signum, stop._on_signal)
    signal.signal(signal.SIGALRM, stop._on_retry)
    try:
        yield stop
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            if handler is not None:  # None: set outside Python, can't be put back from here
                signal.signal(signum, handler)


def exit_at_once_on_stop() -> None:
    """Until a command installs ``graceful_stop``: a stop signal ends it at once, in one line.

    Installed when ``python -m search.<command>`` imports this package, before the command's
    own imports (Optuna, SQLAlchemy, PyTorch: slow ones), which Python's default handler would
    end with a traceback. Nothing is open yet, so exiting on the spot loses nothing.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        os.write(2, f"interrupted by {name} while starting: nothing was changed\n".encode())
        os._exit(128 + signum)

    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, stop)


def interrupted(stop: KeyboardInterrupt, what_now: str) -> int:
    """Say that the command was stopped and what that leaves; returns the stop's exit status.

    A study resumes where it stopped; a benchmark starts over, and says so instead.
    """
    name = f" by {stop}" if str(stop) else ""
    print(f"interrupted{name}: {what_now}", file=sys.stderr, flush=True)
    return int(getattr(stop, "exit_code", 130))


def run_command(
    main: Callable[[list[str] | None], int],
    report: Callable[[UserError], None] | None = None,
) -> NoReturn:
    """Run a command's ``main`` and exit with its status.

    Known user-facing errors become their one line on stderr, or go to ``report`` (a worker
    hands them to its parent, which prints each once). Ctrl-C and SIGTERM stop the command
    outside any database call (``search.signals``) and end it with 130 and 143.
    """
    try:
        with graceful_stop():
            status = main(None)
    except UserError as error:
        if report is None:
            print(f"error: {error}", file=sys.stderr)
        else:
            report(error)
        status = error.exit_code
    except KeyboardInterrupt as error:
        status = interrupted(error, "run the same command again to resume")
    sys.exit(status)
