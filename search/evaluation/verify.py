"""Checks of a finished study that touch the data again: the chosen trial on the test set
(``score_best_trial``) and retraining any trial to compare it with its record (``replay``).

``--replay`` is the reproducibility promise, checkable by anyone: a trial's result depends only
on its parameters and the study seed, so retraining it from those on the same device must give
every recorded per-epoch metric exactly (and, for a complete trial, the very weights it stored).
It retrains through the path that trained the trial: the trial pool's batched arithmetic rounds
differently from the single-trial loop's (the two agree to float tolerance only), so a pooled
trial is retrained alone in a pool of the capacity it ran in, which gives its numbers bit for
bit whatever its companions were (``search.training.pool.TrialPool``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from search.config import StudyConfig, examples_noun
from search.data.splits import Splits
from search.data.tasks import has_test_set, load_task, load_test_split
from search.errors import UserError
from search.reporting.steps import Steps
from search.study.artifacts import ArtifactError, has_model, load_model, load_state_dict
from search.study.history import trial_history
from search.study.record import (
    Stop,
    TestResult,
    parallel_trials_of,
    pool_slot_of,
    recommended_trial,
    stored_config,
    trial_seed_of,
    trial_val_accuracy,
)
from search.training.pools import make_pool
from search.training.runs import Result, Run, train_runs
from search.training.seeds import trial_seed
from search.training.train import DivergedError, evaluate, init_model, task_loss, train

IGNORED_METRICS = ("seconds",)  # wall time differs run to run; everything else must not


class EvaluateError(UserError):
    """Nothing to evaluate or replay: one line saying why and what to run first."""


def score_best_trial(
    study: optuna.Study,
    store: FileSystemArtifactStore,
    data_dir: Path,
    device: torch.device,
    quiet: bool = False,
) -> TestResult:
    """Score the recommended trial's stored weights on the official test set.

    The recommendation is the seed-confirmed one where the study was confirmed, else the
    best feasible trial (``search.study.record.recommended_trial``). A missing test file is
    fetched first, saying so (``search.data.fetch``); the scoring then shows its progress on
    stderr unless ``quiet``: on a loaded machine even loading the weights can take a while.

    Returns:
        The test-set record: trial number, test loss and accuracy, test images, and whether
        the trial was selected on the test set itself.
    """
    config = stored_config(study)
    if config is not None and not has_test_set(config.task):
        raise EvaluateError(
            f"study {study.study_name!r} trained on the {config.task} task, which has no test "
            f"set (it validates on its own held-out {examples_noun(config.task)}, never seen in "
            "training): its validation accuracy is its figure; `--replay` retrains a trial to "
            "check it"
        )
    best = recommended_trial(study)
    if best is None:
        raise EvaluateError(
            f"study {study.study_name!r} has no feasible complete trial to evaluate: "
            "run it (longer, or with another weight-decay range) first"
        )
    tested = (config or StudyConfig()).replace(data_dir=data_dir)
    x, y = load_test_split(tested, device)  # before the bar: a fetch prints lines of its own
    what = f"testing trial #{best.number} on the {len(y):,} test {examples_noun(tested.task)}"
    with Steps(2, what, quiet=quiet) as steps:
        model = load_model(study, best.number, store, device)
        steps.step("weights loaded")
        loss, accuracy = evaluate(model, x, y, task_loss(tested.task))
        steps.step(f"test_accuracy {accuracy:.4f}")
    return TestResult(
        trial=best.number,
        weight_decay=best.params["weight_decay"],
        val_accuracy=trial_val_accuracy(best),
        test_loss=loss,
        test_accuracy=accuracy,
        test_images=len(y),
        selected_on_test=config is not None and config.validation == "test",
    )


def replay_config(study: optuna.Study, trial: FrozenTrial, data_dir: Path) -> StudyConfig:
    """The study's recorded recipe, with the trial's own parameters where they are fields."""
    fields = {field.name for field in dataclasses.fields(StudyConfig)}
    config = stored_config(study)
    if config is None:
        raise EvaluateError(
            f"study {study.study_name!r} records no config: it was not made by search.run, "
            "so there is no recipe to replay"
        )
    config = config.replace(data_dir=data_dir)
    params = {k: v for k, v in trial.params.items() if k in fields and k != "weight_decay"}
    return config.replace(**params)


@dataclasses.dataclass
class Replay:
    """What retraining a trial gave: its per-epoch metrics, final weights and path."""

    metrics: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]
    diverged: str | None  # the message, if training stopped on a non-finite loss
    path: str  # how it was retrained, for the reader: e.g. "a pool of 16 slots"


def replay(
    trial: FrozenTrial, config: StudyConfig, device: torch.device, quiet: bool = False
) -> Replay:
    """Retrain ``trial`` for as many epochs as it recorded, through the path that trained it.

    A trial the pool trained (user attribute ``parallel_trials`` K > 1) is retrained alone in
    a pool of K slots, in the slot it had: its numbers depend on the capacity (and, on the
    generic path, the slot) but not on its companions (see ``TrialPool``, ``FuncPool``), so
    this gives them bit for bit. Any other trial goes through
    ``search.training.train.train``, as ``search.engine.objective`` trained it.
    """
    recorded = trial_history(trial)
    seed = trial_seed(config.seed, trial.number)
    data = load_task(config, device)
    capacity = parallel_trials_of(trial)
    with Steps(
        len(recorded), f"replaying trial {trial.number}", unit="epoch", quiet=quiet
    ) as steps:
        return replay_epochs(trial, config, data, recorded, seed, capacity, steps)


def replay_epochs(
    trial: FrozenTrial,
    config: StudyConfig,
    data: Splits,
    recorded: list[dict[str, Any]],
    seed: int,
    capacity: int,
    steps: Steps,
) -> Replay:
    weight_decay = trial.params["weight_decay"]
    replayed: list[dict[str, Any]] = []
    if capacity > 1:
        pool = make_pool(data, config, capacity)
        path = f"a pool of {capacity} slots, as it trained"
        weights: dict[str, torch.Tensor] = {}
        diverged: list[str] = []

        def record(key: int, result: Result) -> None:
            if isinstance(result, DivergedError):
                weights.update(pool.state_dict(key))  # before it leaves the pool
                diverged.append(str(result))
                return
            replayed.append(result.as_dict())
            steps.step(f"epoch {result.epoch}, val_accuracy {result.val_accuracy:.4f}")
            if len(replayed) == len(recorded):
                weights.update(pool.state_dict(key))

        # As many epochs as it recorded: a pruned trial stopped early.
        run = Run(trial.number, seed, config.recipe(weight_decay), pool_slot_of(trial))
        train_runs(pool, [run], len(recorded), on_result=record)
        return Replay(replayed, weights, diverged[0] if diverged else None, path)
    model = init_model(seed, data.train_x.device, config.task)
    path = "the single-trial loop, as it trained"
    try:
        for metrics in train(model, data, config.recipe(weight_decay), config, seed):
            replayed.append(metrics.as_dict())
            steps.step(f"epoch {metrics.epoch}, val_accuracy {metrics.val_accuracy:.4f}")
            if len(replayed) == len(recorded):
                break  # a pruned trial stopped here
    except DivergedError as error:
        return Replay(replayed, model.state_dict(), str(error), path)
    return Replay(replayed, model.state_dict(), None, path)


def first_mismatch(recorded: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> str | None:
    """The first per-epoch metric that differs, as a sentence; None when all are equal."""
    for want, got in zip(recorded, replayed, strict=False):  # lengths checked below
        for key, value in want.items():
            if key in IGNORED_METRICS:
                continue
            if got.get(key) != value:
                return (
                    f"epoch {want['epoch']} {key}: recorded {value!r}, replayed {got.get(key)!r}"
                )
    if len(replayed) < len(recorded):
        return f"the replay stopped after epoch {len(replayed)}, the trial ran {len(recorded)}"
    return None


def weights_mismatch(
    study: optuna.Study,
    trial: FrozenTrial,
    weights: dict[str, torch.Tensor],
    store: FileSystemArtifactStore,
) -> str | None:
    """Whether the replayed weights equal the stored ones; None if equal or nothing stored."""
    if not has_model(trial):
        return None
    stored = load_state_dict(study, trial.number, store)
    for name, tensor in weights.items():
        if not torch.equal(tensor.detach().cpu(), stored[name]):
            return f"the final weights differ from the stored model ({name} first)"
    return None


def replay_trial(
    study: optuna.Study,
    number: int,
    store: FileSystemArtifactStore,
    data_dir: Path,
    device: torch.device,
    quiet: bool = False,
) -> tuple[str | None, str | None]:
    """Replay trial ``number`` and compare it with what the study recorded.

    Returns:
        None when every per-epoch metric (and the stored weights, if any) match, otherwise the
        first difference, as a sentence; and the path it was replayed through (see ``replay``),
        None if it was not retrained.
    """
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise EvaluateError(
            f"--trial {number}: study {study.study_name!r} has trials 0 to {len(trials) - 1}"
        )
    trial = trials[number]
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
        raise EvaluateError(
            f"--trial {number} is {trial.state.name}: only finished (complete or pruned) "
            "trials have a record to replay against"
        )
    recorded = trial_history(trial)
    if not recorded:
        raise EvaluateError(f"--trial {number} recorded no epoch: there is nothing to compare")
    config = replay_config(study, trial, data_dir)
    seed = trial_seed(config.seed, number)
    recorded_seed = trial_seed_of(trial)
    if recorded_seed is not None and recorded_seed != seed:
        wrong_seed = (
            f"trial {number} recorded seed {recorded_seed}, but study seed "
            f"{config.seed} gives it {seed}"
        )
        return wrong_seed, None
    result = replay(trial, config, device, quiet)
    mismatch: str | None = first_mismatch(recorded, result.metrics)
    if mismatch is None and result.diverged is not None:
        stop = Stop.read(trial)
        if stop is None or stop.kind != "diverged":
            mismatch = f"the replay diverged ({result.diverged}), the trial did not"
    if mismatch is None and trial.state == TrialState.COMPLETE:
        try:
            mismatch = weights_mismatch(study, trial, result.weights, store)
        except ArtifactError as error:
            print(f"note: weights not compared: {error}", file=sys.stderr)
    return mismatch, result.path
