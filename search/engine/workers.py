"""``--workers N``: N processes on this machine running one study, coordinated by its database.

Each worker is what the same command is on another machine: its own storage and connections,
one PyTorch thread, trials taken from the study's one budget (``search.engine.budget``),
heartbeats for its running trial (``search.study.storage.make_storage``). Nothing else
coordinates them, so local workers and workers on other machines (one PostgreSQL
``--storage``) mix freely.

This process creates the study, starts the workers, forwards Ctrl-C and SIGTERM to them, waits
for them all. The rules between the worker flags live here (``check_worker_flags``); the flags
themselves are in the catalogue, ``search.cli.FLAGS``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from search.config import StudyConfig
from search.signals import STOP_SIGNALS, Interrupted
from search.study.backends import backend_for


def check_worker_flags(args: StudyConfig) -> str | None:
    """The one-line error for worker flags that don't go together, or None."""
    if args.grace_period <= args.heartbeat_interval:
        return (
            f"--grace-period must exceed --heartbeat-interval, got {args.grace_period} and "
            f"{args.heartbeat_interval}: a live trial would look dead between two heartbeats"
        )
    return backend_for(args.storage_url).workers_problem(args.workers)


Target = Callable[[StudyConfig, int, Any, frozenset[int], Any], None]


@dataclass(frozen=True)
class WorkerEnd:
    """How a worker ended: its exit status, and the one-line error it reported, if any."""

    status: int
    order: int | None = None  # among the workers' reports: 0 reported first
    error: str | None = None


def run_workers(config: StudyConfig, target: Target) -> list[WorkerEnd]:
    # Over 60 lines: forwarding a signal closes over the processes it forwards to; split,
    # starting, forwarding and joining would pass them all around.
    """Run ``target(config, index, pending, ignored, errors)`` in ``config.workers`` processes.

    The workers start with SIGINT and SIGTERM ignored; ``target`` listens to those not in
    ``ignored`` (ignored here too) and then checks ``pending.value``, a stop signal that came
    before it listened (``search.engine.run_study.worker`` does both). A worker puts its
    one-line error into ``errors`` as ``(index, message)`` instead of printing it: several
    workers that meet the same failure (a database gone) make one line, which this process
    prints.

    Returns:
        how each worker ended: its exit status (0, a command's status 1, 2, 130 or 143, or
        ``-N`` for a worker killed by signal N) and its error.

    Raises:
        Interrupted: this process got SIGINT or SIGTERM; the workers have stopped.
    """
    # spawn, not fork: a forked copy of a process that has loaded PyTorch and opened database
    # connections shares both with its parent.
    context = multiprocessing.get_context("spawn")
    pending = context.Value("i", 0, lock=False)
    errors = context.SimpleQueue()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    ignored = frozenset(s for s, handler in previous.items() if handler is signal.SIG_IGN)
    processes = [
        context.Process(
            target=target,
            args=(config, index, pending, ignored, errors),
            name=f"worker {index}",
        )
        for index in range(1, config.workers + 1)
    ]
    received: list[int] = []
    done: set[int] = set()

    def forward(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            pending.value = signum
            print(f"stopping the workers ({signal.Signals(signum).name})...", file=sys.stderr)
        for index, process in enumerate(processes):
            if index not in done and process.pid is not None:
                try:
                    os.kill(process.pid, signum)
                except ProcessLookupError:
                    pass

    try:
        # Started with the stop signals ignored, a setting they inherit: a Ctrl-C while one is
        # still importing PyTorch would end it with a traceback. Each worker listens once it
        # is ready, and reads ``pending`` for a stop that came before.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        for process in processes:
            process.start()
        for signum in STOP_SIGNALS:
            if signum not in ignored:
                signal.signal(signum, forward)
        for index, process in enumerate(processes):
            process.join()
            done.add(index)
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        for process in processes:  # only if this process itself failed: leave no orphans
            if process.pid is not None and process.exitcode is None:
                process.terminate()
                process.join()
    if received:
        raise Interrupted(received[0])
    reported: dict[int, tuple[int, str]] = {}  # index -> (order of report, message)
    while not errors.empty():  # every worker has exited: what they put is all there
        index, message = errors.get()
        reported[index] = (len(reported), message)
    return [
        WorkerEnd(
            process.exitcode if process.exitcode is not None else 1,
            *reported.get(index, (None, None)),
        )
        for index, process in enumerate(processes, start=1)
    ]


def exit_status(ends: list[WorkerEnd], budget_met: bool, config: StudyConfig) -> int:
    """The command's status after its workers ended; says on stderr which of them failed.

    The errors the workers reported make one line, however many met one: the first reported,
    the cause the others met too (a database that went away reads differently to a worker
    cut off mid-query and to one refused a new connection). A worker that died leaves its
    trial to the others: once the budget is met the study is whole, and the command succeeds.
    """
    reported = sorted((end.order, end.error) for end in ends if end.order is not None)
    if reported:
        print(f"error: {reported[0][1]}", file=sys.stderr)
    statuses = [end.status for end in ends]
    for index, end in enumerate(ends, start=1):
        status = end.status
        if end.error is not None:
            continue
        if status < 0:
            print(
                f"worker {index} was killed by {signal.Signals(-status).name}: its running trial "
                f"is marked failed and tried again once its heartbeat is {config.grace_period} s "
                "old, by a worker still running or by the same command run again",
                file=sys.stderr,
            )
        elif status != 0:
            print(
                f"worker {index} stopped with status {status} (see its error above)",
                file=sys.stderr,
            )
    if budget_met:
        return 0
    failed = [128 - status if status < 0 else status for status in statuses if status != 0]
    return failed[0] if failed else 0
