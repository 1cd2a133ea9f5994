"""A study's progress while it runs: a live bar on a terminal, one line per trial elsewhere.

On a terminal ``StudyProgress`` keeps a bar under the trial lines: trials finished of the
budget, running, pruned and infeasible so far, the best feasible trial so far with its weight
decay, elapsed time and an ETA. The bar counts trial-epochs, not trials: a pruned trial that
stopped at epoch 3 of 10 is 3 steps, and the epochs still to come are the trials left times
the mean epochs a finished trial ran, so pruning shortens the estimate as it happens.

Where stdout is not a terminal (CI, a log file, ``--workers``) it prints the plain line per
finished trial, with its count; ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Literal, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from search.config import StudyConfig
from search.study.record import FINISHED, is_feasible, recommended_trial, trial_val_accuracy

Mode = Literal["bar", "lines", "off"]

REFRESH_S = 1.0  # how often the bar redraws its clock between epochs


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
    attrs = trial.user_attrs
    line = f"trial {trial.number:3d}  weight_decay={trial.params.get('weight_decay', 0):.2e}"
    line += other_params(trial)
    if "val_accuracy" in attrs:
        line += f"  val_acc={attrs['val_accuracy']:.4f}  train_acc={attrs['train_accuracy']:.4f}"
        line += f"  epochs={attrs['epochs_run']}  {attrs['duration_s']:.1f}s"
    if trial.state == TrialState.COMPLETE:
        return line + ("  feasible" if attrs.get("feasible") else "  INFEASIBLE")
    if trial.state == TrialState.PRUNED:
        return line + f"  pruned ({attrs.get('pruned_reason', 'pruned')})"
    return line + f"  {trial.state.name.lower()}"


def epochs_of(trial: FrozenTrial) -> int:
    """Epochs a trial trained: one intermediate value is reported per epoch."""
    return len(trial.intermediate_values)


class Tally:
    """What the study's finished trials add up to, read from the storage."""

    def __init__(self, study: optuna.Study, config: StudyConfig) -> None:
        finished = study.get_trials(deepcopy=False, states=FINISHED)
        self.finished = len(finished)
        self.pruned = sum(t.state == TrialState.PRUNED for t in finished)
        self.infeasible = sum(not is_feasible(t) for t in finished)
        self.epochs = sum(epochs_of(t) for t in finished)
        # Epochs a trial still to come is expected to run: the mean of the finished ones, so
        # pruned trials shorten the estimate; the full recipe until one has finished.
        self.epochs_per_trial = self.epochs / self.finished if self.finished else config.epochs
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

    ``epoch`` is told by the loops as trials start and end epochs; ``finished``
    is a study callback. Use it as a context manager, so the bar is closed on every exit.
    """

    def __init__(
        self,
        study: optuna.Study,
        config: StudyConfig,
        mode: Mode,
        label: str = "",
        out: TextIO | None = None,
    ) -> None:
        self.study = study
        self.config = config
        self.mode = mode
        self.label = label
        self.out = out or sys.stdout
        self.running: dict[int, int] = {}  # trial number -> epochs it has run
        self.tally = Tally(study, config)
        self.bar: tqdm | None = None
        self.stop = threading.Event()
        self.clock: threading.Thread | None = None
        if mode == "bar":
            self.bar = tqdm(
                total=self.total(),
                initial=self.tally.epochs,  # the rate, and so the ETA, counts this run only
                file=self.out,
                unit="epoch",
                smoothing=0,  # the mean rate: pool epochs come in bursts
                dynamic_ncols=True,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed, ETA {remaining}",
            )
            self.redraw()
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
            self.bar.close()
            self.bar = None

    def tick(self) -> None:
        """Redraw the bar's clock while an epoch runs (epochs can take minutes)."""
        while not self.stop.wait(REFRESH_S):
            bar = self.bar
            if bar is not None:
                bar.refresh()

    def done(self) -> int:
        """Trial-epochs trained: the finished trials' and this process's running ones'."""
        return self.tally.epochs + sum(self.running.values())

    def total(self) -> int:
        """Trial-epochs the budget is expected to take, given how long trials run so far."""
        t = self.tally
        # Running trials are expected to run the mean too, or at least what they have run.
        running = sum(max(e, t.epochs_per_trial) for e in self.running.values())
        unstarted = max(0, self.config.trials - t.finished - len(self.running))
        expected = t.epochs + running + unstarted * t.epochs_per_trial
        return max(self.done(), round(expected))

    def summary(self) -> str:
        t = self.tally
        return (
            f"{self.label}{t.finished}/{self.config.trials} trials, {len(self.running)} running, "
            f"{t.pruned} pruned, {t.infeasible} infeasible, {t.best_text()}"
        )

    def redraw(self) -> None:
        if self.bar is None:
            return
        self.bar.total = self.total()
        self.bar.n = self.done()
        self.bar.set_description_str(self.summary(), refresh=False)
        self.bar.refresh()

    def epoch(self, number: int, epoch: int) -> None:
        """The loops' ``EpochHook``: trial ``number`` has run ``epoch`` epochs (0: started)."""
        self.running[number] = epoch
        self.redraw()

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A study callback: count the trial and print its line."""
        self.running.pop(trial.number, None)
        if self.mode == "off":
            return
        self.tally = Tally(study, self.config)  # other workers' trials count too
        line = f"{self.label}[{self.tally.finished}/{self.config.trials}] {describe(trial)}"
        if self.bar is not None:
            self.bar.write(line, file=self.out)
            self.redraw()
        else:
            print(f"{line}  ({self.tally.best_text()})", file=self.out, flush=True)


class Steps:
    """A bar over the steps of a long command (replay epochs, seed runs); lines off a terminal.

    ``step`` advances it by one with a short text; off a terminal every tenth of the steps is
    one line on ``out`` (stderr unless told), and ``quiet`` prints nothing.
    """

    def __init__(self, total: int, what: str, quiet: bool = False, out: TextIO | None = None):
        self.out = out or sys.stderr
        self.what = what
        self.total = total
        self.count = 0
        self.started = time.perf_counter()
        self.quiet = quiet
        self.every = max(1, total // 10)  # off a terminal, about ten lines in all
        self.bar: tqdm | None = None
        if not quiet and self.out.isatty():
            self.bar = tqdm(total=total, desc=what, file=self.out, unit="epoch", leave=False)

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def step(self, text: str = "") -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update()
        elif not self.quiet and (self.count % self.every == 0 or self.count == self.total):
            elapsed = time.perf_counter() - self.started
            print(
                f"{self.what}: {self.count}/{self.total} {text} ({elapsed:.0f}s)",
                file=self.out,
                flush=True,
            )
