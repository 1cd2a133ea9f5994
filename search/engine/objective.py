"""What one trial is: suggest a weight decay, train, report each epoch, constrain, return.

Everything a person wants to know about a trial later is stored on it as an attribute, so the
dashboard, the export and the report read it back without re-running anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import optuna
from optuna.artifacts import FileSystemArtifactStore

from search.config import OPTIMIZERS, StudyConfig
from search.data.splits import Splits
from search.engine.monotone import over_for_good
from search.recipe import OptimizerName, Recipe
from search.study.artifacts import save_model
from search.study.history import store_history
from search.study.notes import save_history_note
from search.study.record import (
    DIVERGED,
    STOPPED_OVER_LIMIT,
    Stop,
    TrialOutcome,
    record_constraint,
    record_finish,
    record_seed,
)
from search.training.seeds import trial_seed
from search.training.train import DivergedError, EpochMetrics, init_model, train

logger = logging.getLogger(__name__)

INFEASIBLE = STOPPED_OVER_LIMIT


def suggest_weight_decay(trial: optuna.Trial, config: StudyConfig) -> float:
    return trial.suggest_float("weight_decay", config.wd_low, config.wd_high, log=True)


def suggest_recipe(trial: optuna.Trial, config: StudyConfig) -> Recipe:
    """The trial's recipe: its weight decay, and its optimizer and whether its biases decay.

    The last two are suggested as categorical parameters when ``config.search_space`` is
    "full", so the sampler learns which combination goes with which weight decay; otherwise
    they are the config's.
    """
    weight_decay = suggest_weight_decay(trial, config)
    if config.search_space != "full":
        return config.recipe(weight_decay)
    optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)
    decay_biases = trial.suggest_categorical("decay_biases", (True, False))
    return config.recipe(weight_decay, cast(OptimizerName, optimizer), bool(decay_biases))


def constraint_value(train_accuracy: float, config: StudyConfig) -> float:
    """Optuna's convention: a trial is feasible when the value is <= 0."""
    return train_accuracy - config.max_train_acc


def projected_train_accuracy(
    history: list[EpochMetrics], epochs: int, measure: str = "running"
) -> float:
    """Where a trial stopped for infeasibility would have ended, for its constraint value.

    Measured at the epoch it stopped, a trial of a tiny weight decay that crossed the limit at
    epoch 2 can read as barely over it, "almost feasible", though training at that decay ends
    far above the limit (the figures: docs/trials.md). Training *error* shrinks by a roughly
    steady factor per epoch, so the last epoch's factor is carried over the epochs the trial
    did not train (before a second epoch, from an error of 1). Unlike a gain carried
    linearly and capped at 100%, where most trials stopped early tied at the cap, this ranks
    every stopped trial: further over the limit, or over it sooner, projects higher. It is
    never below the measured value, and as the factor creeps towards 1 it lands above where
    the trial would have ended, never below.
    """
    last = history[-1]
    error = 1.0 - last.accuracy(measure)
    previous = 1.0 - history[-2].accuracy(measure) if len(history) > 1 else 1.0
    if error <= 0.0 or previous <= 0.0:
        return last.accuracy(measure)
    factor = min(1.0, error / previous)
    return 1.0 - error * factor ** (epochs - last.epoch)


def record_last_epoch(
    trial: optuna.Trial, last: EpochMetrics, constraint: float, measure: str
) -> TrialOutcome:
    """The constraint and the last epoch's metrics, where every reader looks; returns them.

    Search trials and confirmation runs (``search.engine.confirm``) record alike;
    ``train_accuracy`` is by ``measure``, the one the constraint reads.
    """
    record_constraint(trial, constraint)
    outcome = TrialOutcome(
        train_loss=last.train_loss,
        train_accuracy=last.accuracy(measure),
        val_loss=last.val_loss,
        val_accuracy=last.val_accuracy,
        feasible=constraint <= 0,
        epochs_run=last.epoch,
        train_accuracy_running=last.train_accuracy,
        train_accuracy_final=last.train_accuracy_final,
        train_accuracy_measure=measure,
    )
    outcome.write(trial)
    return outcome


def record_outcome(
    trial: optuna.Trial,
    history: list[EpochMetrics],
    config: StudyConfig,
    started: float,
    stop: Stop | None = None,
) -> None:
    """The record of a finished (complete or stopped early) trial, from its last epoch.

    A trial stopped for infeasibility records its constraint at its projected final training
    accuracy (``projected_train_accuracy``, also stored as a user attribute); its measured
    ``train_accuracy`` stays what it was at the epoch it stopped.
    """
    last = history[-1]
    measure = config.train_accuracy
    value = constraint_value(last.accuracy(measure), config)
    projected = None
    if stop is not None and stop.kind == "over_limit":
        projected = projected_train_accuracy(history, config.epochs, measure)
        value = constraint_value(projected, config)
    # For a pruned trial ``feasible`` is as of the epoch it stopped: "infeasible" there is
    # final (``stop_reason``'s margin) and "feasible" provisional.
    record_last_epoch(trial, last, value, measure)
    record_finish(trial, round(time.perf_counter() - started, 3), stop, projected)
    rows = [m.as_dict() for m in history]
    reason = None if stop is None else stop.reason
    save_history_note(trial, rows, value, config, reason, projected is not None)


@dataclass(frozen=True)
class TrialPlan:
    """What a trial trains: its seed and its recipe, as suggested for it."""

    seed: int
    recipe: Recipe


def begin_trial(trial: optuna.Trial, config: StudyConfig) -> TrialPlan:
    """Suggest the trial's parameters and fix its seed.

    Both trial loops call this under the budget's lock, so the next worker's sampler sees every
    parameter of this trial. Suggesting again returns the same values (Optuna's rule).
    """
    recipe = suggest_recipe(trial, config)
    seed = trial_seed(config.seed, trial.number)
    record_seed(trial, seed)
    return TrialPlan(seed, recipe)


def end_epoch(
    trial: optuna.Trial, history: list[EpochMetrics], config: StudyConfig, started: float
) -> Stop | None:
    """Report the epoch that just ended; returns why the trial stops here, or None to go on.

    A trial that stops has its outcome recorded already; the caller only prunes it. The single
    trial path and the trial pool both call this, so pruning works alike in both.
    """
    metrics = history[-1]
    trial.report(metrics.val_accuracy, metrics.epoch)
    store_history(trial, [m.as_dict() for m in history])
    stop = stop_reason(trial, metrics, config)
    if stop is not None:
        record_outcome(trial, history, config, started, stop)
    return stop


def stop_reason(trial: optuna.Trial, metrics: EpochMetrics, config: StudyConfig) -> Stop | None:
    """Why the trial should stop after this epoch, or None to go on."""
    if metrics.epoch == config.epochs:
        return None
    # A trial this far over the limit has never been seen back within it by its last epoch
    # (``over_for_good``, measured on full-length histories): its remaining epochs would be
    # spent on a trial that can't be feasible.
    accuracy = metrics.accuracy(config.train_accuracy)
    if config.constraint_pruning and over_for_good(
        accuracy, config.max_train_acc, config.train_accuracy
    ):
        return Stop(
            "over_limit",
            f"{INFEASIBLE}: {config.train_accuracy} train accuracy {accuracy:.4f} over the "
            f"limit {config.max_train_acc} at epoch {metrics.epoch}",
        )
    if trial.should_prune():
        return Stop("pruned", f"pruned by the {config.pruner} pruner at epoch {metrics.epoch}")
    return None


def record_divergence(trial: optuna.Trial, error: DivergedError) -> str:
    stop = Stop("diverged", f"{DIVERGED}: {error}")
    stop.write(trial)
    return stop.reason


class Objective:
    """The study's objective for ``study.optimize``; holds the data, loaded once for all trials.

    With an ``artifact_store``, each complete trial uploads its trained weights there.
    """

    def __init__(
        self,
        config: StudyConfig,
        data: Splits,
        artifact_store: FileSystemArtifactStore | None = None,
        on_epoch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.artifact_store = artifact_store
        self.on_epoch = on_epoch  # told (trial number, epochs done): a progress display

    def __call__(self, trial: optuna.Trial) -> float:
        config = self.config
        started = time.perf_counter()
        plan = begin_trial(trial, config)
        if self.on_epoch is not None:
            self.on_epoch(trial.number, 0)
        model = init_model(plan.seed, self.data.train_x.device, config.task)
        history: list[EpochMetrics] = []
        epochs = train(model, self.data, plan.recipe, config, plan.seed)
        try:
            for metrics in epochs:
                history.append(metrics)
                if self.on_epoch is not None:
                    self.on_epoch(trial.number, metrics.epoch)
                stop = end_epoch(trial, history, config, started)
                if stop is not None:
                    raise optuna.TrialPruned(stop.reason)
        except DivergedError as error:
            raise optuna.TrialPruned(record_divergence(trial, error)) from None
        record_outcome(trial, history, config, started)
        if self.artifact_store is not None:
            save_model(trial, model.state_dict(), self.artifact_store)
        return history[-1].val_accuracy
