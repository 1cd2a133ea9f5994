"""A study's progress while it runs: a live bar on a terminal, lines elsewhere, an ETA that learns.

On a terminal ``StudyProgress`` keeps a bar under the trial lines: the share of the study's
expected trial-epochs done (it never goes backwards), trials finished of the budget, the best
feasible trial so far, elapsed time and an ETA. Off a terminal (CI, a log file, ``--workers``)
it prints a line per finished trial, and a status line with the study's counts whenever
``QUIET_S`` seconds pass without a line, so a log never goes silent for long; ``quiet`` prints
nothing.

The ETA is ``search.reporting.eta``'s forecast of the pool passes left, times the seconds the
last passes took in this process: measured, not assumed, so on a busy machine it grows with
the load, and it counts down between passes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Literal, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from search.config import StudyConfig
from search.reporting.eta import Forecast, Seen, clock, forecast
from search.study.record import (
    FINISHED,
    Counts,
    TrialFacts,
    is_feasible,
    recommended_trial,
    trial_val_accuracy,
)

Mode = Literal["bar", "lines", "off"]

REFRESH_S = 1.0  # how often the clock thread redraws the bar and re-estimates
QUIET_S = 8.0  # off a terminal, a status line when nothing was said for this long
PASS_WINDOW = 5  # the passes whose mean duration times the passes left: recent, for the load


def choose_mode(quiet: bool, stream: TextIO | None = None, workers: int = 1) -> Mode:
    """``off`` when quiet, ``bar`` on an interactive terminal, else ``lines``."""
    if quiet:
        return "off"
    stream = stream or sys.stdout
    return "bar" if workers == 1 and stream.isatty() else "lines"


def other_params(trial: FrozenTrial) -> str:
    """The trial's parameters beside weight decay (``--search-space full``), or ''."""
    return "".join(f"  {k}={v}" for k, v in trial.params.items() if k != "weight_decay")


def describe(trial: FrozenTrial) -> str:
    """One line for a finished trial."""
    facts = TrialFacts.read(trial)
    line = f"trial {trial.number:3d}  weight_decay={trial.params.get('weight_decay', 0):.2e}"
    line += other_params(trial)
    outcome = facts.outcome
    if outcome is not None:
        line += f"  val_acc={outcome.val_accuracy:.4f}  {outcome.train_text()}"
        line += f"  epochs={outcome.epochs_run}  {facts.duration_s or 0.0:.1f}s"
    if trial.state == TrialState.COMPLETE:
        return line + ("  feasible" if is_feasible(trial) else "  INFEASIBLE")
    if trial.state == TrialState.PRUNED:
        if facts.stop is not None and facts.stop.kind == "over_limit":
            return line + "  stopped over the limit"  # its training accuracy and epoch are on it
        return line + f"  pruned ({'pruned' if facts.stop is None else facts.stop.reason})"
    return line + f"  {trial.state.name.lower()}"


def epochs_of(trial: FrozenTrial) -> int:
    """Epochs a trial trained: one intermediate value is reported per epoch."""
    return len(trial.intermediate_values)


class Tally:
    """What the study's trials add up to, read from the storage: every worker's count."""

    def __init__(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        self.counts = Counts.of(trials)
        self.finished = [epochs_of(t) for t in trials if t.state in FINISHED]
        self.running = {t.number: epochs_of(t) for t in trials if t.state == TrialState.RUNNING}
        self.best = recommended_trial(study)

    def best_text(self) -> str:
        if self.best is None:
            return "no feasible trial yet"
        accuracy = trial_val_accuracy(self.best)
        return (
            f"best #{self.best.number} {accuracy:.2%} (wd {self.best.params['weight_decay']:.2e})"
        )


class StudyProgress:
    """The progress of one process's trials on a study; pass it to the trial loops.

    The loops tell ``epoch`` as trials start and end epochs and ``pass_done`` after each pass
    over the pool; ``finished`` is a study callback. ``slots`` is how many trials this process
    trains at once (the pool's capacity, 1 on the one-trial path, where an epoch is a pass).
    Use it as a context manager, so the bar and its clock thread end on every exit.
    """

    def __init__(
        self,
        study: optuna.Study,
        config: StudyConfig,
        mode: Mode,
        slots: int = 1,
        label: str = "",
        out: TextIO | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.study = study
        self.config = config
        self.mode = mode
        self.slots = slots
        self.label = label
        self.out = out or sys.stdout
        self.now = now
        self.lock = threading.RLock()  # the loop's events and the clock thread share the state
        self.running: dict[int, int] = {}  # this process's trials -> epochs they have run
        self.tally = Tally(study)
        self.started = now()
        self.pass_ends: list[float] = []  # when this process's passes ended
        self.shown = 0.0  # the fraction shown so far: progress never goes backwards
        self.forecast = self.estimate()
        self.stale = False  # an event came since the forecast
        self.said = self.started  # when the last line was printed
        self.bar: tqdm | None = None
        self.stop = threading.Event()
        self.clock: threading.Thread | None = None
        if mode == "bar":
            self.bar = tqdm(
                total=1000,  # per mille of the expected trial-epochs: the total moves
                file=self.out,
                dynamic_ncols=True,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed{postfix}",
            )
            self.redraw()
        if mode != "off":
            self.clock = threading.Thread(target=self.tick, daemon=True)
            self.clock.start()

    def __enter__(self) -> StudyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop.set()
        if self.clock is not None:
            self.clock.join()
        if self.bar is not None:
            self.forecast = self.estimate()  # the bar's last word: where the study ended
            self.redraw()
            self.bar.close()
            self.bar = None

    # --- the estimate -----------------------------------------------------------------------

    def estimate(self) -> Forecast:
        """The forecast from the study's finished trials and every running one."""
        with self.lock:
            running = {**self.tally.running, **self.running}  # ours are the freshest
            seen = [Seen(e, True) for e in self.tally.finished]
            seen += [Seen(e, False) for e in running.values()]
        return forecast(seen, self.config.trials, self.config.epochs, self.slots)

    def seconds_per_pass(self) -> float | None:
        """The mean of the last ``PASS_WINDOW`` passes here, or None before the first ended."""
        ends = [self.started, *self.pass_ends][-PASS_WINDOW - 1 :]
        if len(ends) < 2:
            return None
        return (ends[-1] - ends[0]) / (len(ends) - 1)

    def seconds_left(self) -> float | None:
        """Passes left times seconds per pass, less the time into the pass now running (at
        most one pass's worth: a slow pass holds the ETA rather than run it below zero)."""
        per_pass = self.seconds_per_pass()
        if per_pass is None:
            return None
        into = self.now() - self.pass_ends[-1]
        return max(0.0, self.forecast.passes * per_pass - min(into, per_pass))

    def eta_text(self) -> str:
        seconds = self.seconds_left()
        return "ETA after the first epoch" if seconds is None else f"ETA {clock(seconds)}"

    def fraction(self) -> float:
        self.shown = max(self.shown, min(1.0, self.forecast.fraction))
        return self.shown

    def counts(self) -> Counts:
        """The study's trials by how they ended; running: as of now, ours included."""
        with self.lock:
            running = len({**self.tally.running, **self.running})
        return replace(self.tally.counts, running=running)

    def status(self) -> str:
        """The study's counts (they add up to its trials), share done, elapsed and ETA."""
        counts = self.counts()
        return (
            f"{self.label}search: {counts.finished}/{self.config.trials} finished; trials "
            f"{counts.text()}; {self.fraction():.0%} of the expected epochs, "
            f"{clock(self.now() - self.started)} elapsed, {self.eta_text()}"
        )

    # --- drawing ----------------------------------------------------------------------------

    def say(self, line: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.write(line, file=self.out)
            else:
                print(line, file=self.out, flush=True)
            self.said = self.now()

    def redraw(self) -> None:
        with self.lock:
            if self.bar is None:
                return
            counts = self.counts()
            self.bar.n = round(1000 * self.fraction())
            self.bar.set_description_str(
                f"{self.label}[{counts.finished}/{self.config.trials}] {counts.running} "
                f"running, {self.tally.best_text()}",
                refresh=False,
            )
            self.bar.set_postfix_str(self.eta_text(), refresh=False)
            self.bar.refresh()

    def tick(self) -> None:
        """Between events: re-estimate once a second at most, redraw the bar's clock, and
        off a terminal say where the study stands when nothing was said for a while."""
        while not self.stop.wait(REFRESH_S):
            self.refresh()

    def refresh(self) -> None:
        """What the clock thread does each second (tests call it directly)."""
        with self.lock:
            stale, self.stale = self.stale, False
        if stale:
            estimate = self.estimate()
            with self.lock:
                self.forecast = estimate
        if self.bar is not None:
            self.redraw()
        elif self.mode == "lines" and self.now() - self.said >= QUIET_S:
            self.say(self.status())

    # --- the loops' hooks -------------------------------------------------------------------

    def epoch(self, number: int, epoch: int) -> None:
        """The loops' ``EpochHook``: trial ``number`` has run ``epoch`` epochs (0: started).

        On the one-trial path an epoch is a pass."""
        with self.lock:
            self.running[number] = epoch
            self.stale = True
        if self.slots == 1 and epoch > 0:
            self.pass_done()

    def pass_done(self) -> None:
        """A pass over the pool ended: the clock of the ETA."""
        with self.lock:
            self.pass_ends.append(self.now())
            self.stale = True

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A study callback: count the trial and print its line."""
        if self.mode == "off":
            with self.lock:
                self.running.pop(trial.number, None)
            return
        tally = Tally(study)  # other workers' trials count too
        with self.lock:
            self.running.pop(trial.number, None)
            self.tally = tally
            self.stale = True
            line = f"{self.label}[{tally.counts.finished}/{self.config.trials}] {describe(trial)}"
            if self.bar is None:
                line += f"  ({tally.best_text()}, {self.eta_text()})"
        self.say(line)
        self.redraw()
