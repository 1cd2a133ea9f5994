"""Both trial loops under one budget gate: one trial at a time (``run_trials``, through
``study.optimize``) and the trial pool (``run_pool``, by ask-and-tell), with its heartbeats.

Both share the study's budget through ``search.engine.budget`` and stop starting trials after
``config.timeout`` seconds; ``gate_and_deadline`` sets up both for either loop.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from search.config import StudyConfig
from search.data.splits import Splits
from search.engine.budget import CLAIMING, WAIT_POLL_S, BudgetGate
from search.engine.objective import (
    Objective,
    begin_trial,
    end_epoch,
    record_divergence,
    record_outcome,
)
from search.study.artifacts import save_model
from search.study.backends import backend_for
from search.study.notes import record_best_feasible_and_note
from search.study.optuna_private import REPEATING_LOGGERS, heartbeat_storage, record_heartbeat
from search.study.record import record_parallel_trials
from search.study.storage import first_line, storage_cause
from search.training.pool import parallel_trials
from search.training.pools import make_pool
from search.training.runs import EpochPool, train_pass
from search.training.train import DivergedError, EpochMetrics, use_one_cpu_thread

logger = logging.getLogger(__name__)

Callback = Callable[[optuna.Study, FrozenTrial], None]
# Told (trial number, epochs done) when a trial starts (0) and after each of its epochs: what a
# progress display needs between trials (``search.reporting.progress``).
EpochHook = Callable[[int, int], None]


@dataclass(frozen=True)
class Deadline:
    """When a loop stops starting trials: ``config.timeout`` seconds from its start, or never."""

    at: float | None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds)

    def left(self) -> float | None:
        """Seconds left (0 or less once passed), or None without a timeout."""
        return None if self.at is None else self.at - time.monotonic()

    def passed(self) -> bool:
        left = self.left()
        return left is not None and left <= 0


def gate_and_deadline(study: optuna.Study, config: StudyConfig) -> tuple[BudgetGate, Deadline]:
    """The budget gate of ``study`` (its claim lock included) and the loop's deadline.

    Also quiets Optuna's logs that repeat an error the loop reports anyway (both loops).
    """
    for name in REPEATING_LOGGERS:
        logging.getLogger(name).addFilter(REPEATED_ERROR_LOGS)
    lock = backend_for(config.storage_url).budget_lock(config.study_name)
    gate = BudgetGate(study, config.trials, lock, stuck_after=2 * config.grace_period)
    return gate, Deadline.after(config.timeout)


def run_until_budget(
    study: optuna.Study,
    config: StudyConfig,
    data: Splits,
    store: FileSystemArtifactStore | None,
    callbacks: list[Callback] | None = None,
    on_epoch: EpochHook | None = None,
    on_pass: Callable[[], None] | None = None,
) -> int:
    """This process's trials until the study's budget is met; returns how many ran.

    Trained side by side in the trial pool (``run_pool``), or one at a time (``run_trials``)
    with ``--parallel-trials 1``.
    """
    k = parallel_trials(config, data.train_x.device)
    if k > 1:
        pool = make_pool(data, config, k)
        return run_pool(
            study,
            config,
            pool,
            callbacks=callbacks,
            artifact_store=store,
            on_epoch=on_epoch,
            on_pass=on_pass,
        )
    use_one_cpu_thread(data.train_x.device)
    objective = Objective(config, data, store, on_epoch=on_epoch)
    return run_trials(
        study, objective, config, callbacks=callbacks, prepare=lambda t: begin_trial(t, config)
    )


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    config: StudyConfig,
    callbacks: list[Callback] | None = None,
    prepare: Callable[[optuna.Trial], object] | None = None,
) -> int:
    """Run trials until the study holds ``config.trials`` finished ones; returns how many ran.

    ``prepare`` suggests a trial's parameters under the budget's lock (``BudgetGate.admit``).

    The budget is the study's, not this process's: a re-run resumes and runs only what is
    missing, and workers on one study (``--workers``, or the same command on other machines)
    share it exactly (``search.engine.budget``). A worker with nothing left to start waits for the
    others' running trials and takes over from one that fails or whose worker dies.
    """
    gate, deadline = gate_and_deadline(study, config)
    ran = 0

    def count(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal ran
        ran += 1

    with gate:
        while not gate.met():
            left = deadline.left()
            if left is not None and left <= 0:
                break
            if not gate.claim():
                time.sleep(WAIT_POLL_S)  # the others' running trials hold the rest
                continue
            study.optimize(
                gate.admit(objective, prepare),
                timeout=left,
                callbacks=[
                    lambda study, trial: record_best_feasible_and_note(study),
                    count,
                    *(callbacks or []),
                    gate.claim_next,  # last: it leaves the lock held for Optuna's next ask
                ],
                catch=(),
            )
    return ran


class RepeatedErrorLogs(logging.Filter):
    """Drops Optuna's warnings about an error that ends the run and is reported anyway.

    With ``catch=()`` the error that failed a trial ends the run, reported as one line (a
    stop, a lost database) or as its traceback (anything else): ``study.optimize``'s "Trial N
    failed" warning would only repeat it, with a second traceback. The storage's "Caught an
    error from sqlalchemy ... Falling back" warning, many lines of SQL, comes first when the
    database goes away; its fallback then fails and is reported in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        failed_trial = message.startswith("Trial ") and " failed " in message
        return not (failed_trial or message.startswith("Caught an error from sqlalchemy"))


REPEATED_ERROR_LOGS = RepeatedErrorLogs()


@dataclass
class Running:
    """A trial in the pool, as the driver tracks it."""

    trial: optuna.Trial
    started: float
    history: list[EpochMetrics] = field(default_factory=list)


class Heartbeat:
    """Keeps the heartbeats of the pool's running trials, as ``study.optimize``'s thread would.

    Optuna's heartbeat thread runs only inside ``study.optimize``; with ask-and-tell the pool
    records them itself, between steps, every half ``heartbeat_interval`` or so.
    """

    def __init__(self, study: optuna.Study, running: dict[int, Running]) -> None:
        self.storage = heartbeat_storage(study)
        self.enabled = self.storage is not None
        interval = self.storage.get_heartbeat_interval() if self.storage is not None else None
        # Half the interval: a beat is never late by the time one long step takes.
        self.every = (interval or 0) / 2
        self.running = running
        self.due = 0.0

    def beat(self, trial: optuna.Trial | None = None) -> None:
        """Record one trial's heartbeat now, or every running trial's when one is due."""
        if not self.enabled:
            return
        assert self.storage is not None
        if trial is not None:
            record_heartbeat(self.storage, trial)
            return
        now = time.monotonic()
        if now < self.due:
            return
        for running in self.running.values():
            record_heartbeat(self.storage, running.trial)
        self.due = now + self.every


def awaits_first_result(study: optuna.Study, budget: int, k: int, own_running: int) -> bool:
    """Whether the pool holds its last trials back until the study's first one completes.

    Passes over a pool cost the same however many slots are full, so a slot left empty while
    others train costs no time; but a trial asked before any trial completed is proposed
    blind (its sampler knows only the trials stopped early). The last ``min(k // 2, budget //
    3)`` trials of a budget larger than the pool wait for a first complete trial, so a
    25-trial study spends 8 of them where the first results point. Only while this process
    trains trials of its own, which will finish: another's may be a dead worker's, failed
    only once a trial is claimed (``search.engine.budget``).
    """
    if budget <= k or own_running == 0:
        return False  # a budget the pool holds at once is asked at once, as before
    reserve = min(k // 2, budget // 3)
    trials = study.get_trials(deepcopy=False, states=CLAIMING)
    complete = any(t.state == TrialState.COMPLETE for t in trials)
    return not complete and len(trials) >= budget - reserve


def run_pool(
    study: optuna.Study,
    config: StudyConfig,
    pool: EpochPool,
    callbacks: list[Callback] | None = None,
    artifact_store: FileSystemArtifactStore | None = None,
    on_epoch: EpochHook | None = None,
    on_pass: Callable[[], None] | None = None,
) -> int:
    """Run trials ``pool.capacity`` at a time until the study's budget is met; returns how
    many ran.

    ``run_trials`` for the pool: trials come from ``study.ask()``, train side by
    side, report each epoch through ``end_epoch`` (pruning and the constraint as in the single
    trial path) and are told when they finish or stop. A freed slot is refilled at once with
    one newly asked trial, so the sampler sees every told trial before it proposes the next.

    The budget is the study's, shared exactly with every other worker through
    ``search.engine.budget``'s claim: finished and running trials count, failed ones are replaced
    (stale ones are failed first, and retried if the storage says so). With no place left and
    nothing of its own running, the pool waits for the others' running trials as
    ``run_trials`` does. No trial is started after ``config.timeout`` seconds.

    Args:
        callbacks: called with the study and each told trial, as ``study.optimize`` would.
        artifact_store: where each complete trial's weights go, as ``Objective`` puts them.
        on_epoch: told as each trial starts and ends an epoch (see ``EpochHook``).
        on_pass: told after each pass over the pool, before its results are told: a pass
            costs the same however many slots are full, so an ETA counts passes.

    Raises:
        KeyboardInterrupt, or whatever training raised, after every running trial is told
        FAIL (a re-run retries them).
    """
    loop = PoolLoop(study, config, pool, callbacks or [], artifact_store, on_epoch, on_pass)
    with loop.gate:
        try:
            loop.run()
        except BaseException:
            loop.fail_running()
            raise
    return loop.asked


class PoolLoop:
    """``run_pool``'s state: the pool, its running trials, the budget gate and the heartbeat,
    which refilling, telling and the epoch loop all share."""

    def __init__(
        self,
        study: optuna.Study,
        config: StudyConfig,
        pool: EpochPool,
        callbacks: list[Callback],
        artifact_store: FileSystemArtifactStore | None,
        on_epoch: EpochHook | None,
        on_pass: Callable[[], None] | None = None,
    ) -> None:
        self.study, self.config, self.pool = study, config, pool
        self.callbacks, self.artifact_store, self.on_epoch = callbacks, artifact_store, on_epoch
        self.on_pass = on_pass
        self.k = pool.capacity
        self.running: dict[int, Running] = {}
        self.heartbeat = Heartbeat(study, self.running)
        self.gate, self.deadline = gate_and_deadline(study, config)
        self.asked = 0

    def run(self) -> None:
        """Epochs until the budget is met (or the deadline passed) and nothing runs here."""
        while True:
            while self.refill():
                pass
            if not self.running:
                if self.gate.met() or self.deadline.passed():
                    return
                time.sleep(WAIT_POLL_S)  # the others' running trials hold the rest
                continue
            train_pass(self.pool, self.told, self.heartbeat.beat, self.on_pass)

    def told(self, number: int, result: EpochMetrics | DivergedError) -> None:
        try:
            self.end_epoch(number, result)
        except UpdateFinishedTrialError:
            self.drop(number)

    def end_epoch(self, number: int, result: EpochMetrics | DivergedError) -> None:
        """One trial's epoch result: go on, or tell it (pruned, stopped, complete)."""
        entry = self.running[number]
        if isinstance(result, DivergedError):
            record_divergence(entry.trial, result)
            self.tell(number, None, TrialState.PRUNED)
            self.refill()
            return
        entry.history.append(result)
        if self.on_epoch is not None:
            self.on_epoch(number, result.epoch)
        if end_epoch(entry.trial, entry.history, self.config, entry.started) is not None:
            self.tell(number, None, TrialState.PRUNED)
            self.refill()
        elif result.epoch == self.config.epochs:
            record_outcome(entry.trial, entry.history, self.config, entry.started)
            if self.artifact_store is not None:
                save_model(entry.trial, self.pool.state_dict(number), self.artifact_store)
            self.tell(number, result.val_accuracy, TrialState.COMPLETE)
            self.refill()

    def drop(self, number: int) -> None:
        """Let go of a trial another worker already ended: judged dead while this one could not
        reach the database to beat, it was failed there and its parameters handed on."""
        logger.warning(
            "trial %d was failed by another worker while the database was away (its heartbeat "
            "had gone stale); its retry trains it again, so it is dropped here",
            number,
        )
        del self.running[number]
        self.gate.mine.discard(number)
        self.pool.remove(number)
        self.refill()

    def refill(self) -> bool:
        """Start one trial in a free slot if the budget has a place for it."""
        study, config = self.study, self.config
        if (
            len(self.pool) == self.k
            or self.deadline.passed()
            or awaits_first_result(study, config.trials, self.k, len(self.running))
        ):
            return False
        # Beat first: a long pause since the last step (evaluation, callbacks) must not make
        # this worker's own trials look stale to the claim's stale-trial check.
        self.heartbeat.beat()
        if not self.gate.claim():
            return False
        try:
            with warnings.catch_warnings():
                # Optuna warns that heartbeats need study.optimize; the pool keeps them itself.
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = study.ask()
                # Under the lock: the next worker's sampler sees this trial's weight decay.
                plan = begin_trial(trial, config)
            exclusive = self.gate.still_exclusive()
        finally:
            self.gate.lock.release()  # the trial exists now and counts as claimed
        if not exclusive:  # another worker took the same place while the lock was lost
            study.tell(trial, state=TrialState.FAIL)
            return False
        self.running[trial.number] = Running(trial, started=time.perf_counter())
        self.gate.mine.add(trial.number)
        self.asked += 1
        self.heartbeat.beat(trial)
        # Its metrics equal the single-trial path's up to float rounding, not bit for bit;
        # they depend on k but not on the companions, so a replay (search.evaluate --replay)
        # retrains it alone in a pool of k for the very same numbers.
        self.pool.add(trial.number, plan.seed, plan.recipe)
        record_parallel_trials(trial, self.k, self.pool.slot(trial.number))
        if self.on_epoch is not None:
            self.on_epoch(trial.number, 0)
        return True

    def tell(self, number: int, value: float | None, state: TrialState) -> None:
        frozen = self.study.tell(self.running[number].trial, value, state=state)
        del self.running[number]
        self.gate.mine.discard(number)
        self.pool.remove(number)
        record_best_feasible_and_note(self.study)
        for callback in self.callbacks:
            callback(self.study, frozen)

    def fail_running(self) -> None:
        """Tell every running trial FAIL (a re-run retries them), whatever stopped the loop."""
        for entry in self.running.values():
            try:
                self.study.tell(entry.trial, state=TrialState.FAIL)
            except Exception as error:  # the storage may be what failed; the original
                # error is the one to report, in one line: a lost database is it again
                log = logger.debug if storage_cause(error) is not None else logger.warning
                log("could not mark trial %d failed: %s", entry.trial.number, first_line(error))
