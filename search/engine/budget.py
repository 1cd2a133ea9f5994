"""The study's trial budget, shared by every worker on it and decided in the database.

A worker starts a trial only while the study's finished (COMPLETE, PRUNED) and running trials
number fewer than ``--trials``; failed trials don't count, so they are replaced. Counting and
``study.ask()`` are two steps, and two workers that finish a trial at the same moment would both
see one place left and both take it. A lock makes them one step: a PostgreSQL advisory lock,
which the server drops the moment the worker's connection ends however it ends, or, for a
SQLite file (shared by processes on one machine only), ``flock`` on a file beside it. So the
study ends with exactly its budget of finished trials, whatever the number of workers.

A worker with no place left waits for the others' running trials instead of leaving: if one
fails, or its worker dies and its heartbeat goes stale, the waiting worker takes its place.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from search.study.locks import BudgetLock
from search.study.optuna_private import backend_of, fail_trial, stale_trial_numbers
from search.study.record import FINISHED

logger = logging.getLogger(__name__)

# States that use up the budget (FINISHED: a failed trial is retried, so it doesn't count),
# and running trials, which will.
CLAIMING = (*FINISHED, TrialState.RUNNING)

# A worker with no place left looks at the study this often while it waits for the others.
WAIT_POLL_S = 1.0


def sat_still_clock() -> float:
    """The clock that times how long another worker's trial has sat still: this process's own
    monotonic clock, never the database's. Tests move it instead of waiting on it."""
    return time.monotonic()


class BudgetGate:
    """Decides, under the claim lock, whether this worker may start one more trial.

    Used around ``study.optimize``: ``claim()`` before it and as its last callback (the lock
    stays held until Optuna's next ``ask`` has created the trial), ``admit(objective)`` as the
    objective (it lets go of the lock once the trial exists). ``with gate:`` lets go of it
    whatever happens in between.
    """

    def __init__(self, study: optuna.Study, budget: int, lock: BudgetLock, stuck_after: float):
        self.study = study
        self.budget = budget
        self.lock = lock
        self.stuck_after = stuck_after
        # number -> (what it looked like, since when): how long a running trial has sat still.
        self.seen: dict[int, tuple[tuple[Any, ...], float]] = {}
        # This worker's own running trials: alive by definition, never judged stuck, however
        # long an epoch takes on a busy machine.
        self.mine: set[int] = set()

    def __enter__(self) -> BudgetGate:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.lock.release()

    def claim(self) -> bool:
        """True, with the lock held, when the budget has a place for one more trial.

        Through an outage of the database (``search.study.outage``) the whole claim is tried
        again, from a new lock: the old one went with the server's session.
        """
        riding = getattr(backend_of(self.study), "riding", None)
        if riding is None:
            return self.claim_once()
        return bool(riding(self.claim_once))

    def claim_once(self) -> bool:
        self.lock.acquire()
        try:
            fail_stale_trials(self.study)
            room = len(self.claimed()) < self.budget
        except BaseException:
            self.lock.release()
            raise
        if not room:
            self.lock.release()
        return room

    def still_exclusive(self) -> bool:
        """After a claim's trial was created: whether the claim held. If the lock was lost on
        the way (the server restarted), another worker may have taken the same place; then the
        claimed trials are counted again, ours among them, under a new lock."""
        if self.lock.alive():
            return True
        self.lock.release()

        def recount() -> bool:
            self.lock.acquire()
            try:
                return len(self.claimed()) <= self.budget
            finally:
                self.lock.release()

        riding = getattr(backend_of(self.study), "riding", None)
        return bool(recount() if riding is None else riding(recount))

    def claim_next(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """``study.optimize`` callback: stop unless the budget has a place for another trial."""
        if not self.claim():
            study.stop()

    def admit(
        self,
        objective: Callable[[optuna.Trial], float],
        prepare: Callable[[optuna.Trial], object] | None = None,
    ) -> Callable[[optuna.Trial], float]:
        """``objective``, run once the claim's trial exists; ``prepare`` runs before the lock
        is let go. Pass it what suggests the trial's parameters: a worker that asks next then
        sees them, where with the lock let go first two workers would sample from the same
        trials at once, and a deterministic rule (the edge sampler's bisection) would give
        both the same weight decay."""

        def admitted(trial: optuna.Trial) -> float:
            if prepare is not None:
                try:
                    prepare(trial)
                except BaseException:
                    self.lock.release()
                    raise
            self.lock.release()  # the trial exists now and counts as claimed
            self.mine.add(trial.number)
            try:
                return objective(trial)
            finally:
                self.mine.discard(trial.number)

        return admitted

    def met(self) -> bool:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED)) >= self.budget

    def claimed(self) -> list[FrozenTrial]:
        """Finished and running trials, less running ones that have sat still too long.

        A trial left RUNNING by a process that never recorded a heartbeat (an older version,
        or a worker killed in the moment between creating its trial and its first beat)
        is never failed by Optuna; without this it would hold a place forever and every
        worker would wait on it. This worker's own trials (``mine``) are never stuck.
        """
        now = sat_still_clock()
        outage = getattr(backend_of(self.study), "outage", None)
        if outage is not None and outage.recent(within=self.stuck_after):
            self.seen.clear()  # nothing moved while the server was away: start looking afresh
        claimed = []
        for trial in self.study.get_trials(deepcopy=False, states=CLAIMING):
            if trial.state == TrialState.RUNNING and trial.number not in self.mine:
                look = (trial.datetime_start, len(trial.intermediate_values))
                if self.seen.get(trial.number, (None,))[0] != look:
                    self.seen[trial.number] = (look, now)
                if now - self.seen[trial.number][1] > self.stuck_after:
                    continue
            claimed.append(trial)
        return claimed


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own check: running trials whose heartbeat is older than the grace period fail,
    and the storage's ``RetryHeartbeatStaleTrialCallback`` queues their parameters again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_leftovers(study: optuna.Study, config: Any, wait: bool = True) -> list[int]:
    """Once the budget is met, fail the trials dead workers left RUNNING (or WAITING, a dead
    trial's queued retry); returns their numbers.

    The budget counts running trials, so with it met by finished ones, a trial still RUNNING
    is one whose worker died and whose place was taken. Left alone it would show as running
    in the dashboard for ever. One whose heartbeat is still inside the grace period is waited
    for, that long at most (a worker alive after all ends its trial itself); then it is failed,
    and not tried again: the budget is met.
    """
    limit = config.grace_period + config.heartbeat_interval if wait else 0
    deadline = time.monotonic() + limit
    while True:
        left = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        running = {t.number for t in left if t.state == TrialState.RUNNING}
        if not left or time.monotonic() >= deadline or running <= stale_trial_numbers(study):
            break
        time.sleep(WAIT_POLL_S)
    return [t.number for t in left if fail_trial(study, t.number)]
