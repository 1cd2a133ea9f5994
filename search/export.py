"""``python -m search.export``: the recommended configuration, or every trial, as CSV.

optuna-dashboard's own CSV lacks the constraint value, feasibility, start time and duration;
this one has them, read from the attributes each trial stored.
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING

from search.cli import Parser, add_study_flags, run_command, storage_url
from search.config import STUDIES_DIR
from search.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

# The study's libraries (Optuna, SQLAlchemy, pandas, matplotlib) are imported in main, after the
# flags are parsed: --help and a flag error answer at once.


class OutError(UserError):
    """``--out`` can't be written: a usage error."""

    exit_code = 2


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
    from search.reporting.tables import neutralise_formulas

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
    from search.reporting.tables import all_frame, best_frame, history_frame
    from search.study.study import load_existing_study

    study = load_existing_study(args.study_name, storage_url(args))
    kind = "trials" if args.all else "history" if args.history else "best"
    out = args.out or default_out(args.study_name, kind)
    frame = {"trials": all_frame, "history": history_frame, "best": best_frame}[kind](study)
    write_csv(frame, out)
    print(f"wrote {len(frame)} row{'s' if len(frame) != 1 else ''} to {out}")
    return 0


if __name__ == "__main__":
    run_command(main)
