"""``python -m search.export``: the best feasible configuration, or every trial, as CSV.

optuna-dashboard's own CSV lacks the constraint value, feasibility, start time and duration;
this one has them, read from the attributes each trial stored.
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from search.cli import Parser, add_study_flags, run_command, storage_url
from search.config import STUDIES_DIR
from search.errors import UserError
from search.study.budget import FINISHED
from search.study.history import trial_history
from search.study.notes import CONSTRAINT
from search.study.recommend import recommended_trial, stored_recommendation
from search.study.results import stored_test_result
from search.study.study import load_existing_study

# The columns of the one-row best-configuration CSV, in order.
BEST_COLUMNS = [
    "study",
    "trial",
    "weight_decay",
    "lr",
    "batch_size",
    "epochs",
    "optimizer",
    "decay_biases",
    "task",
    "epochs_run",
    "val_accuracy",
    "train_accuracy",
    "val_loss",
    "train_loss",
    "feasible",
    "validation",
    "seed",
    "study_seed",
]

# The long per-epoch CSV (--history): one row per trial and epoch, for learning curves in
# pandas (``frame.pivot(index="epoch", columns="trial", values="val_accuracy")``).
HISTORY_COLUMNS = [
    "study",
    "trial",
    "state",
    "weight_decay",
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "seconds",
]

# The seed confirmation of the recommended trial (search.study.confirm); empty when the study
# was run with --confirm-seeds 0 or found a new best since it was confirmed.
CONFIRM_COLUMNS = [
    "confirmed",
    "confirm_seeds",
    "val_accuracy_mean",
    "val_accuracy_std",
    "train_accuracy_mean",
    "feasible_fraction",
]

# Appended to the best CSV once `python -m search.evaluate` has scored the best trial.
TEST_COLUMNS = ["test_accuracy", "test_loss"]

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection), also
# after leading spaces or line breaks, which it skips: ASCII and their fullwidth and small forms.
FORMULA_STARTS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\u2212")


class ExportError(UserError):
    """Nothing to export: one line for the user."""


class OutError(ExportError):
    """``--out`` can't be written: a usage error."""

    exit_code = 2


def trial_row(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    """One trial as a flat record: identity, parameters, recipe, metrics, constraint, timing."""
    config = study.user_attrs.get("config", {})
    attrs = trial.user_attrs
    constraint = trial.constraints.get(CONSTRAINT)
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "study": study.study_name,
        "trial": trial.number,
        "state": trial.state.name,
        # A study with the full search space chose these per trial; otherwise the study fixed
        # them (studies from before these options existed used Adam on every parameter).
        "optimizer": config.get("optimizer", "adam"),
        "decay_biases": config.get("decay_biases", True),
        **trial.params,
        "task": config.get("task", "mnist"),
        "lr": config.get("lr"),
        "batch_size": config.get("batch_size"),
        "epochs": config.get("epochs"),
        # A pruned trial's figures are those of its last epoch, epochs_run, not the recipe's.
        "epochs_run": attrs.get("epochs_run"),
        "val_accuracy": attrs.get("val_accuracy"),
        "train_accuracy": attrs.get("train_accuracy"),
        # A trial stopped over the limit: where it would have ended, which its constraint uses.
        "projected_train_accuracy": attrs.get("projected_train_accuracy"),
        "val_loss": attrs.get("val_loss"),
        "train_loss": attrs.get("train_loss"),
        "constraint": constraint,
        "feasible": attrs.get("feasible"),
        "pruned_reason": attrs.get("pruned_reason"),
        "validation": config.get("validation"),
        "seed": attrs.get("seed"),  # the trial's own: what a replay seeds it with
        "study_seed": config.get("seed"),
        "datetime_start": trial.datetime_start,
        "duration_s": duration,
    }


def best_frame(study: optuna.Study) -> pd.DataFrame:
    """The recommended trial: seed-confirmed where the study was, else the best feasible."""
    best = recommended_trial(study)
    if best is None:
        if not study.get_trials(deepcopy=False, states=FINISHED):
            raise ExportError(f"study {study.study_name!r} has no finished trial: run it first")
        raise ExportError(
            f"study {study.study_name!r} has no feasible complete trial: nothing to export "
            "(use --all to export every trial)"
        )
    row = trial_row(study, best)
    columns = BEST_COLUMNS + CONFIRM_COLUMNS
    confirmed = stored_recommendation(study) or {}
    row |= {column: confirmed.get(column) for column in CONFIRM_COLUMNS}
    tested = stored_test_result(study)
    if tested is not None:  # after `python -m search.evaluate`: beside the validation figure
        row |= {column: tested[column] for column in TEST_COLUMNS}
        columns += TEST_COLUMNS
    return pd.DataFrame([row])[columns]


def all_frame(study: optuna.Study) -> pd.DataFrame:
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise ExportError(f"study {study.study_name!r} has no trials yet: run it first")
    return pd.DataFrame([trial_row(study, t) for t in trials])


def history_frame(study: optuna.Study) -> pd.DataFrame:
    """Every finished or running trial's epochs, one row each (long format)."""
    rows = [
        {
            "study": study.study_name,
            "trial": trial.number,
            "state": trial.state.name,
            "weight_decay": trial.params.get("weight_decay"),
            **epoch,
        }
        for trial in study.get_trials(deepcopy=False)
        for epoch in trial_history(trial)
    ]
    if not rows:
        raise ExportError(f"study {study.study_name!r} has no trained epoch yet: run it first")
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def is_formula(value: str) -> bool:
    """Whether a spreadsheet could take the text cell ``value`` for a formula.

    OWASP's list (``= + - @``, tab, carriage return) and what a spreadsheet skips before it:
    any leading whitespace or control character, and the fullwidth forms some of them read.
    A cell that starts with whitespace is prefixed whatever follows: which characters a
    spreadsheet skips there differs from one to the next.
    """
    first = value[:1]
    return first in FORMULA_STARTS or first.isspace() or (first != "" and not first.isprintable())


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a quote (OWASP's fix)."""

    def safe(value: Any) -> Any:
        if isinstance(value, str) and is_formula(value):
            return "'" + value
        return value

    return frame.map(safe).rename(columns=safe)


# A temporary export is ``.<name>.<pid>.tmp`` beside its file: one whose writer is gone (killed
# mid-write) is removed by the next export to that file.
TEMP_SUFFIX = ".tmp"


def temp_path(out: Path, pid: int) -> Path:
    return out.parent / f".{out.name}.{pid}{TEMP_SUFFIX}"


def remove_stale_temps(out: Path) -> None:
    """Remove the temporary files earlier exports to ``out`` left when they were killed."""
    for path in out.parent.glob(f".{glob.escape(out.name)}.*{TEMP_SUFFIX}"):
        pid = path.name.removeprefix(f".{out.name}.").removesuffix(TEMP_SUFFIX)
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def write_csv(frame: pd.DataFrame, out: Path) -> None:
    """Write atomically: a reader never sees half a file, a failed write leaves none.

    The file gets the mode the umask gives (as any file the user creates), and a cell that
    holds a line break is quoted: RFC 4180's CRLF line ends make the writer quote both.
    """
    if out.is_dir():
        raise OutError(f"--out {out}: is a directory; give a file name, e.g. {out / 'best.csv'}")
    if not out.parent.is_dir():
        raise OutError(f"--out {out}: directory {out.parent} does not exist; create it first")
    remove_stale_temps(out)
    tmp = temp_path(out, os.getpid())
    try:
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # less the umask
    except OSError as error:
        raise OutError(f"--out {out}: can't write there ({error.strerror})") from None
    try:
        with os.fdopen(handle, "w", newline="") as stream:
            neutralise_formulas(frame).to_csv(stream, index=False, lineterminator="\r\n")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def default_out(study_name: str, kind: str) -> Path:
    """``studies/<study>-<kind>.csv``: kind is best, trials or history."""
    return STUDIES_DIR / f"{study_name}-{kind}.csv"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.export",
        description="Write the study's recommended configuration, every trial (--all) or every "
        "trial's epochs (--history) as CSV.",
    )
    add_study_flags(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="CSV file to write (default: studies/<study-name>-best.csv, "
        "studies/<study-name>-trials.csv with --all, studies/<study-name>-history.csv with "
        "--history)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--all",
        action="store_true",
        help="every trial with its state, parameters, metrics (a pruned trial's at its last "
        "epoch, epochs_run), constraint value, feasibility, start time and duration",
    )
    what.add_argument(
        "--history",
        action="store_true",
        help="every trial's epochs in long format, one row per trial and epoch: trial, "
        "state, weight_decay, epoch, train/val loss and accuracy, seconds",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    study = load_existing_study(args.study_name, storage_url(args))
    kind = "trials" if args.all else "history" if args.history else "best"
    out = args.out or default_out(args.study_name, kind)
    frame = {"trials": all_frame, "history": history_frame, "best": best_frame}[kind](study)
    write_csv(frame, out)
    print(f"wrote {len(frame)} row{'s' if len(frame) != 1 else ''} to {out}")
    return 0


if __name__ == "__main__":
    run_command(main)
