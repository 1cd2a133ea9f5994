"""``python -m search.evaluate``: the chosen trial on the test set, and replaying any trial.

    python -m search.evaluate                      # recommended trial on the MNIST test set
    python -m search.evaluate --trial 7 --replay   # retrain trial 7: same numbers as recorded?

Searching selects on validation data and never reads the official test set (unless the study
ran with ``--validation test``, as the seed experiment did); outside studies, the speed
benchmark (``search.bench``) and the seed experiment's script (``search.experiment``) read it
too. For a study, this command touches it once, for the one configuration the search chose: it
loads that trial's stored weights, scores them on the 10,000 test images, and stores the result
on the study (the ``test_evaluation`` user attribute and the study's note), where export,
report and dashboard show it. There is no way to test another trial: choosing among trials by
their test score would make it a validation score.

``--replay`` retrains a trial and checks every recorded per-epoch metric
(``search.evaluation.verify``). PyTorch is imported after the flags are parsed: ``--help`` is fast.

Progress goes to stderr, stdout is for the result: a missing test file is fetched saying what,
from where and when it is done (``search.data.fetch``, even with ``--quiet``: a download should
never be silent), and the scoring and each replayed epoch show a bar on a terminal, or a line
every few seconds elsewhere once they take that long (``search.reporting.steps``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from search.cli import Parser, add_flags, run_command, storage_url
from search.config import examples_noun
from search.flag_values import non_negative_int

if TYPE_CHECKING:
    import optuna
    import torch
    from optuna.artifacts import FileSystemArtifactStore

# The study's libraries (Optuna, SQLAlchemy, pandas, matplotlib) are imported where they are used,
# after the flags are parsed: --help and a flag error answer at once.


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.evaluate",
        description="Evaluate the recommended trial's weights on the official MNIST test set "
        "and store the result on the study; or, with --replay, retrain a trial and check that "
        "it reproduces every recorded per-epoch metric. Progress goes to stderr: the fetch of "
        "missing test files (always), and the scoring and each replayed epoch when they take "
        "more than a few seconds.",
    )
    # --device: replay on the device the study ran on, for bit-for-bit sums.
    add_flags(parser, "--study-name", "--storage", "--artifacts", "--data-dir", "--device")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="retrain the trial from its parameters and the study seed and compare every "
        "per-epoch metric with the record, instead of testing",
    )
    parser.add_argument(
        "--trial",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="with --replay: the trial to replay (default: the recommended trial)",
    )
    add_flags(parser, "--quiet")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.trial is not None and not args.replay:
        parser.error(
            "--trial needs --replay: only the recommended trial meets the test set, since "
            "picking a trial by its test score would make the test set a validation set"
        )

    from search.training.train import device_problem, resolve_device, use_one_cpu_thread

    problem = device_problem(args.device)
    if problem is not None:
        parser.error(problem)
    from search.study.artifacts import artifact_store
    from search.study.study import load_existing_study

    url = storage_url(args)
    study = load_existing_study(args.study_name, url)
    store = artifact_store(url, args.artifacts)
    device = resolve_device(args.device)
    use_one_cpu_thread(device)  # as the study trained: thread count can change CPU sums
    if args.replay:
        return replay_command(study, args.trial, store, args.data_dir, device, args.quiet)
    return evaluate_command(study, store, args.data_dir, device, args.quiet)


def evaluate_command(
    study: optuna.Study,
    store: FileSystemArtifactStore,
    data_dir: Path,
    device: torch.device,
    quiet: bool = False,
) -> int:
    from search.evaluation.verify import score_best_trial
    from search.study.notes import save_study_note
    from search.study.record import (
        TEST_ATTR,
        record_best_feasible,
        record_test_result,
        stored_config,
    )

    result = score_best_trial(study, store, data_dir, device, quiet)
    record_test_result(study, result)
    record_best_feasible(study)  # the note must name the trial this result belongs to
    save_study_note(study)
    if result.selected_on_test:
        print(
            "note: this study validated on the official test set (--validation test), so "
            "its trials were chosen on these same images: the test figure below is no "
            "unbiased estimate",
            file=sys.stderr,
        )
    print(
        f"recommended trial #{result.trial}: weight_decay={result.weight_decay:.4g}  "
        f"val_accuracy={result.val_accuracy:.4f}"
    )
    config = stored_config(study)
    examples = examples_noun(config.task if config else None)
    print(
        f"test set ({result.test_images:,} {examples}): test_loss={result.test_loss:.4f}  "
        f"test_accuracy={result.test_accuracy:.4f}"
    )
    print(f"stored on study {study.study_name!r} as user attribute {TEST_ATTR!r}")
    return 0


def replay_command(
    study: optuna.Study,
    number: int | None,
    store: FileSystemArtifactStore,
    data_dir: Path,
    device: torch.device,
    quiet: bool = False,
) -> int:
    from search.evaluation.verify import EvaluateError, replay_trial
    from search.study.artifacts import has_model
    from search.study.record import recommended_trial

    if number is None:
        best = recommended_trial(study)
        if best is None:
            raise EvaluateError(
                f"study {study.study_name!r} has no feasible complete trial: pass --trial N"
            )
        number = best.number
    mismatch, path = replay_trial(study, number, store, data_dir, device, quiet)
    through = "" if path is None else f" (replayed through {path})"
    if mismatch is not None:
        print(f"trial {number}: NOT reproduced on {device}: {mismatch}{through}")
        return 1
    from search.study.history import trial_history

    trial = study.trials[number]
    weights = ", and so do its final weights" if has_model(trial) else ""
    print(
        f"trial {number}: reproduced on {device}: the metrics of all {len(trial_history(trial))} "
        f"epochs equal the recorded ones{weights}{through}"
    )
    return 0


if __name__ == "__main__":
    run_command(main)
