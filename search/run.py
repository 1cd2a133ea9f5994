"""``python -m search.run``: run (or resume) the weight-decay study.

    python -m search.run --trials 50

Every trial lands in the study's database (SQLite under ``studies/`` unless ``--storage``
says otherwise); running the same command again resumes the study up to its budget. This
command parses the flags, settles them against the study (``search.engine.settle``), makes one
library call (``search.engine.run_study``) and prints the outcome it returns.
"""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING

from search.cli import build_run_parser, run_command
from search.config import MEASURE_NAMES, StudyConfig
from search.errors import UsageError

if TYPE_CHECKING:
    from search.engine.run_study import Outcome
    from search.study.record import RangeEnd


def build_parser() -> argparse.ArgumentParser:
    return build_run_parser()


def parse_config(argv: list[str] | None) -> StudyConfig:
    """The flags, settled against the study they name; a broken rule is argparse's one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from search.engine.settle import settle_config  # after parsing: --help answers at once

    try:
        return settle_config(vars(args))
    except UsageError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    from search.engine.run_study import run_study

    outcome = run_study(config)
    if outcome.summary_known:
        print_summary(outcome, config)
    return outcome.status


def print_summary(outcome: Outcome, config: StudyConfig) -> None:
    from search.study.notes import describe_recommendation
    from search.study.storage import has_password

    did = (
        f"{outcome.trials_now} by this run"
        if outcome.trials_now
        else "none by this run (the budget was met already)"
    )
    print(
        f"\nstudy {outcome.study_name!r}: {outcome.finished} of {outcome.budget} trials "
        f"finished, {did}\ntrials: {outcome.counts.text()}"
    )
    if outcome.leftovers:
        numbers = ", ".join(f"#{n}" for n in outcome.leftovers)
        print(
            f"failed {numbers}: left running or queued by a worker that died (no heartbeat "
            "within the grace period); the budget was met without them"
        )
    for end in outcome.range_ends:
        print(describe_range_end(end, config))
    best = outcome.best
    if best is None:
        explained = any(end.side == "above" for end in outcome.range_ends)
        fix = (
            ""  # the line above says which bound to raise
            if explained
            else ": raise --wd-low/--wd-high toward stronger decay, or raise --max-train-acc"
        )
        print(
            f"no trial was feasible ({MEASURE_NAMES[config.train_accuracy]} at or under "
            f"{config.max_train_acc}){fix}"
        )
        return
    print(
        f"best feasible trial #{best.number}: weight_decay={best.weight_decay:.4g}"
        + "".join(f"  {k}={v}" for k, v in outcome.best_params.items() if k != "weight_decay")
        + f"  "
        f"val_accuracy={best.val_accuracy:.4f}  train_accuracy={best.train_accuracy:.4f}"
    )
    if outcome.recommendation is not None:
        print(describe_recommendation(outcome.recommendation, trained_now=outcome.confirmed_now))
    print(f"inspect: python -m search.dashboard {study_flags(config)}")
    from search.data.tasks import has_test_set

    if has_test_set(config.task):
        print(f"test:    python -m search.evaluate {study_flags(config)}")
    else:  # search.evaluate would refuse: the trial's own retraining is the check there is
        print(
            f"replay:  python -m search.evaluate {study_flags(config)} --replay --trial "
            f"{best.number}  (the {config.task} task has no test set)"
        )
    print(f"export:  python -m search.export {study_flags(config, artifacts=False)}")
    if config.storage is not None and has_password(config.storage):
        print(
            "(the password is left out of these lines: put it in ~/.pgpass, or in the "
            "PGPASSWORD environment variable, and they connect as they are)"
        )


def describe_range_end(end: RangeEnd, config: StudyConfig) -> str:
    """One line: which bound of the range to widen, so no answer at its end goes unremarked.

    A study keeps the range it was created with, so the fix is a new study.
    """
    recipe = ", ".join(f"{k}={v}" for k, v in end.recipe.items())
    who = f"{recipe}: " if recipe else ""
    limit = config.max_train_acc
    if end.side == "above":
        return (
            f"{who}every trial went over the training-accuracy limit {limit} up to --wd-high "
            f"{config.wd_high:g}: the edge lies above the range; raise --wd-high (in a new "
            "study: a study keeps its range)"
        )
    if end.at_end:
        return (
            f"{who}no trial went over the limit {limit} and the best, #{end.best}, is the "
            f"lowest weight decay tried: the edge lies below --wd-low {config.wd_low:g}, where "
            "the range ends; lower --wd-low (in a new study: a study keeps its range)"
        )
    return (
        f"{who}no trial went over the limit {limit} down to --wd-low {config.wd_low:g}: the "
        f"constraint never bound, so #{end.best} is the range's optimum, not its edge; lower "
        "--wd-low to find the edge (in a new study)"
    )


def study_flags(config: StudyConfig, artifacts: bool = True) -> str:
    """The flags that point another command at this study, for the lines printed after a run.

    Pasted, they must work: the URL goes without its password (which would otherwise end up in
    the shell's history), quoted for the shell; ``print_summary`` says where the password goes.
    """
    from search.study.storage import masked

    flags = f"--study-name {shlex.quote(config.study_name)}"
    if config.storage is not None:
        flags += f" --storage {shlex.quote(masked(config.storage, hidden=None))}"
    if artifacts and config.artifacts is not None:
        flags += f" --artifacts {shlex.quote(str(config.artifacts))}"
    return flags


if __name__ == "__main__":
    run_command(main)
