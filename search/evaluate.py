"""``python -m search.evaluate``: the chosen trial on the test set, and replaying any trial.

    python -m search.evaluate                      # best feasible trial on the MNIST test set
    python -m search.evaluate --trial 7 --replay   # retrain trial 7: same numbers as recorded?

Searching selects on validation data and never reads the official test set (unless the study
ran with ``--validation test``, as the seed experiment did). This command touches it once, for
the one configuration the search chose: it loads that trial's stored weights, scores them on
the 10,000 test images, and stores the result on the study (the ``test_evaluation`` user
attribute and the study's note), where export, report and dashboard show it. There is no way
to test another trial: choosing among trials by their test score would make it a validation
score.

``--replay`` is the reproducibility promise, checkable by anyone: a trial's result depends only
on its parameters and the study seed, so retraining it from those on the same device must give
every recorded per-epoch metric exactly (and, for a complete trial, the very weights it stored).
It retrains through the path that trained the trial: the trial pool's batched arithmetic rounds
differently from the single-trial loop's (the two agree to float tolerance only), so a pooled
trial is retrained alone in a pool of the capacity it ran in, which gives its numbers bit for
bit whatever its companions were (``search.pool.TrialPool``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import save_note

from search.artifacts import (
    MODEL_ATTR,
    ArtifactError,
    add_artifacts_flag,
    artifact_store,
    load_model,
    load_state_dict,
)
from search.cli import Parser, add_data_dir_flag, add_study_flags, run_command
from search.config import DEVICES, StudyConfig
from search.data import load_splits, load_test
from search.errors import UserError
from search.pool import TrialPool
from search.study import (
    best_feasible_note,
    best_feasible_trial,
    load_existing_study,
    record_best_feasible,
)
from search.train import (
    DivergedError,
    evaluate,
    init_model,
    resolve_device,
    train,
    trial_seed,
    use_one_cpu_thread,
)

TEST_ATTR = "test_evaluation"  # the study user attribute that holds the test-set result
IGNORED_METRICS = ("seconds",)  # wall time differs run to run; everything else must not


class EvaluateError(UserError):
    """Nothing to evaluate or replay: one line saying why and what to run first."""


def score_best_trial(
    study: optuna.Study, store: FileSystemArtifactStore, data_dir: Path, device: torch.device
) -> dict[str, Any]:
    """Score the best feasible trial's stored weights on the official test set.

    Returns:
        The ``test_evaluation`` record: trial number, test loss and accuracy, test images,
        and whether the trial was selected on the test set itself.
    """
    best = best_feasible_trial(study)
    if best is None:
        raise EvaluateError(
            f"study {study.study_name!r} has no feasible complete trial to evaluate: "
            "run it (longer, or with another weight-decay range) first"
        )
    model = load_model(study, best.number, store, device)
    x, y = load_test(data_dir, device)
    loss, accuracy = evaluate(model, x, y)
    validation = study.user_attrs.get("config", {}).get("validation", "holdout")
    return {
        "trial": best.number,
        "weight_decay": best.params["weight_decay"],
        "val_accuracy": best.user_attrs.get("val_accuracy"),
        "test_loss": loss,
        "test_accuracy": accuracy,
        "test_images": len(y),
        "selected_on_test": validation == "test",
    }


def record_test_result(study: optuna.Study, result: dict[str, Any]) -> None:
    """Store the result on the study, and add it to the note the dashboard shows on top."""
    study.set_user_attr(TEST_ATTR, result)
    record_best_feasible(study)  # the note must name the trial this result belongs to
    summary = study.user_attrs["best_feasible_trial"]
    caveat = (
        " The trial was selected on this same test set (`--validation test`), so this is "
        "no unbiased estimate."
        if result["selected_on_test"]
        else " The test set was used for nothing else."
    )
    save_note(
        study,
        best_feasible_note(study, summary)
        + f"\n\n**Test set** ({result['test_images']:,} official MNIST test images, "
        f"`python -m search.evaluate`): accuracy = {result['test_accuracy']:.4f}, "
        f"loss = {result['test_loss']:.4f}.{caveat}",
    )


def stored_test_result(study: optuna.Study) -> dict[str, Any] | None:
    """The study's test-set result if it belongs to the current best feasible trial.

    A resumed study may have found a better trial since; its old test figure is then stale.
    """
    result = study.user_attrs.get(TEST_ATTR)
    best = best_feasible_trial(study)
    if result is None or best is None or result.get("trial") != best.number:
        return None
    return result


def replay_config(study: optuna.Study, trial: FrozenTrial, data_dir: Path) -> StudyConfig:
    """The study's recorded recipe, with the trial's own parameters where they are fields."""
    fields = {field.name for field in dataclasses.fields(StudyConfig)}
    recorded = study.user_attrs.get("config")
    if recorded is None:
        raise EvaluateError(
            f"study {study.study_name!r} records no config: it was not made by search.run, "
            "so there is no recipe to replay"
        )
    if recorded.get("task", "mnist") != "mnist":
        raise EvaluateError(f"--replay knows MNIST studies only, this one is {recorded['task']}")
    config = StudyConfig(**{k: v for k, v in recorded.items() if k in fields}, data_dir=data_dir)
    params = {k: v for k, v in trial.params.items() if k in fields and k != "weight_decay"}
    return config.replace(**params)


@dataclasses.dataclass
class Replay:
    """What retraining a trial gave: its per-epoch metrics, final weights and path."""

    metrics: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]
    diverged: str | None  # the message, if training stopped on a non-finite loss
    path: str  # how it was retrained, for the reader: e.g. "a pool of 16 slots"


def replay(trial: FrozenTrial, config: StudyConfig, device: torch.device) -> Replay:
    """Retrain ``trial`` for as many epochs as it recorded, through the path that trained it.

    A trial the pool trained (user attribute ``parallel_trials`` K > 1) is retrained alone in
    a pool of K slots: its numbers depend on the capacity but not on its companions or slot
    (see ``TrialPool``), so this gives them bit for bit. Any other trial goes through
    ``search.train.train``, as ``search.objective`` trained it.
    """
    recorded = trial.user_attrs.get("history") or []
    seed = trial_seed(config.seed, trial.number)
    weight_decay = trial.params["weight_decay"]
    data = load_splits(config.data_dir, config.validation, config.subset, device)
    capacity = int(trial.user_attrs.get("parallel_trials", 1))
    replayed: list[dict[str, Any]] = []
    if capacity > 1:
        pool = TrialPool(data, config, capacity)
        pool.add(trial.number, seed, weight_decay)
        path = f"a pool of {capacity} slots, as it trained"
        while len(replayed) < len(recorded):  # a pruned trial stopped early
            result = pool.train_epoch()[trial.number]
            if isinstance(result, DivergedError):
                return Replay(replayed, pool.state_dict(trial.number), str(result), path)
            replayed.append(result.as_dict())
        return Replay(replayed, pool.state_dict(trial.number), None, path)
    model = init_model(seed, device)
    path = "the single-trial loop, as it trained"
    try:
        for metrics in train(model, data, weight_decay, config, seed):
            replayed.append(metrics.as_dict())
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
    if MODEL_ATTR not in trial.user_attrs:
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
    recorded = trial.user_attrs.get("history") or []
    if not recorded:
        raise EvaluateError(f"--trial {number} recorded no epoch: there is nothing to compare")
    config = replay_config(study, trial, data_dir)
    seed = trial_seed(config.seed, number)
    if trial.user_attrs.get("seed", seed) != seed:
        mismatch = (
            f"trial {number} recorded seed {trial.user_attrs['seed']}, but study seed "
            f"{config.seed} gives it {seed}"
        )
        return mismatch, None
    result = replay(trial, config, device)
    mismatch = first_mismatch(recorded, result.metrics)
    if mismatch is None and result.diverged is not None:
        if not trial.user_attrs.get("pruned_reason", "").startswith("diverged"):
            mismatch = f"the replay diverged ({result.diverged}), the trial did not"
    if mismatch is None and trial.state == TrialState.COMPLETE:
        try:
            mismatch = weights_mismatch(study, trial, result.weights, store)
        except ArtifactError as error:
            print(f"note: weights not compared: {error}", file=sys.stderr)
    return mismatch, result.path


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.evaluate",
        description="Evaluate the best feasible trial's weights on the official MNIST test set "
        "and store the result on the study; or, with --replay, retrain a trial and check that "
        "it reproduces every recorded per-epoch metric.",
    )
    add_study_flags(parser)
    add_artifacts_flag(parser)
    add_data_dir_flag(parser)
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: CUDA when present, else CPU; replay on the device the study ran on "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--replay",
        action="store_true",
        help="retrain the trial from its parameters and the study seed and compare every "
        "per-epoch metric with the record, instead of testing",
    )
    parser.add_argument(
        "--trial",
        type=int,
        default=None,
        metavar="N",
        help="with --replay: the trial to replay (default: the best feasible trial)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.trial is not None and not args.replay:
        parser.error(
            "--trial needs --replay: only the best feasible trial meets the test set, since "
            "picking a trial by its test score would make the test set a validation set"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    study = load_existing_study(args.study_name, args.storage)
    url = args.storage or StudyConfig(study_name=args.study_name).storage_url
    store = artifact_store(url, args.artifacts)
    device = resolve_device(args.device)
    use_one_cpu_thread(device)  # as the study trained: thread count can change CPU sums
    if args.replay:
        return replay_command(study, args.trial, store, args.data_dir, device)
    return evaluate_command(study, store, args.data_dir, device)


def evaluate_command(
    study: optuna.Study, store: FileSystemArtifactStore, data_dir: Path, device: torch.device
) -> int:
    result = score_best_trial(study, store, data_dir, device)
    record_test_result(study, result)
    if result["selected_on_test"]:
        print(
            "note: this study validated on the official test set (--validation test), so "
            "its trials were chosen on these same images: the test figure below is no "
            "unbiased estimate",
            file=sys.stderr,
        )
    print(
        f"best feasible trial #{result['trial']}: weight_decay={result['weight_decay']:.4g}  "
        f"val_accuracy={result['val_accuracy']:.4f}"
    )
    print(
        f"test set ({result['test_images']:,} images): test_loss={result['test_loss']:.4f}  "
        f"test_accuracy={result['test_accuracy']:.4f}"
    )
    print(f"stored on study {study.study_name!r} as user attribute {TEST_ATTR!r}")
    return 0


def replay_command(
    study: optuna.Study,
    number: int | None,
    store: FileSystemArtifactStore,
    data_dir: Path,
    device: torch.device,
) -> int:
    if number is None:
        best = best_feasible_trial(study)
        if best is None:
            raise EvaluateError(
                f"study {study.study_name!r} has no feasible complete trial: pass --trial N"
            )
        number = best.number
    mismatch, path = replay_trial(study, number, store, data_dir, device)
    through = "" if path is None else f" (replayed through {path})"
    if mismatch is not None:
        print(f"trial {number}: NOT reproduced on {device}: {mismatch}{through}")
        return 1
    attrs = study.trials[number].user_attrs
    weights = ", and so do its final weights" if MODEL_ATTR in attrs else ""
    print(
        f"trial {number}: reproduced on {device}: the metrics of all {len(attrs['history'])} "
        f"epochs equal the recorded ones{weights}{through}"
    )
    return 0


if __name__ == "__main__":
    run_command(main)
