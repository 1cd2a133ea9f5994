"""What every command shares: one-line argument errors, typed flag values, the study flags.

A user's mistake is one line naming the flag and the fix, and exit status 2; never a
traceback, and never a study changed on the way.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from search.config import (
    DEFAULTS,
    MAX_SEED,
    MIN_SUBSET,
    OPTIMIZERS,
    SEARCH_SPACES,
    StudyConfig,
    study_name_problem,
)

# Parser: argparse with one-line errors, defined beside UserError for the data wing too.
from search.errors import USAGE_ERROR as USAGE_ERROR
from search.errors import Parser as Parser
from search.errors import UserError
from search.errors import directory as directory
from search.signals import graceful_stop


def integer(text: str, least: int, rule: str) -> int:
    """An int flag value of at least ``least``, or argparse's error stating ``rule``."""
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return integer(text, 1, "a positive integer")


def positive_ints(text: str) -> tuple[int, ...]:
    """A list flag: positive integers separated by commas, e.g. 25,50."""
    try:
        values = tuple(int(n) for n in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"must be positive integers separated by commas, e.g. 25,50, got {text!r}"
        )
    return values


def non_negative_int(text: str) -> int:
    return integer(text, 0, "an integer of 0 or more")


def number(text: str, accept: Callable[[float], bool], rule: str) -> float:
    """A float flag value that ``accept`` allows, or argparse's error stating ``rule``."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not accept(value):  # NaN fails every rule
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    return number(text, lambda v: 0 < v < math.inf, "a positive number")


def non_negative_float(text: str) -> float:
    return number(text, lambda v: 0 <= v < math.inf, "a number of 0 or more")


def fraction(text: str) -> float:
    return number(text, lambda v: 0 < v <= 1, "a fraction in (0, 1]")


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text!r}")
    return value


def subset(text: str) -> int:
    value = positive_int(text)
    if value < MIN_SUBSET:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_SUBSET} images, got {text!r}: validation takes at most as "
            "many, and on fewer one image moves the accuracy by more than a percent"
        )
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port from 0 to 65535 (0: any free one), got {text!r}"
        )
    return value


def storage(text: str) -> str:
    """A SQLAlchemy URL that parses; the error shows it with its password masked."""
    # Imported here: commands that take no --storage (bench, experiment) never load them.
    import sqlalchemy.exc

    from search.study.storage import masked, scrubbed

    try:
        url = sqlalchemy.engine.make_url(text)
        url.port  # noqa: B018 - parsed lazily: a port like "abc" fails only here
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise argparse.ArgumentTypeError(
            f"{masked(text)} is not a database URL ({scrubbed(str(error), text)}); write it as "
            "postgresql+psycopg://user@host:port/database or sqlite:///path/to/study.db"
        ) from None
    return text


def study_name(text: str) -> str:
    problem = study_name_problem(text)
    if problem is not None:
        shown = repr(text) if len(text) <= 80 else f"{len(text)} characters"
        raise argparse.ArgumentTypeError(f"{problem}, got {shown}")
    return text


def add_study_flags(parser: argparse.ArgumentParser) -> None:
    """``--study-name`` and ``--storage``, the pair every command that reads a study takes."""
    parser.add_argument(
        "--study-name",
        type=study_name,
        default=DEFAULTS.study_name,
        metavar="NAME",
        help="name of the study in the storage (default: %(default)s)",
    )
    parser.add_argument(
        "--storage",
        type=storage,
        default=None,
        metavar="URL",
        help="SQLAlchemy URL of the study's database, e.g. postgresql://user@host/db "
        "(default: sqlite:///studies/<study-name>.db)",
    )


def storage_url(args: argparse.Namespace) -> str:
    """The URL ``--storage`` and ``--study-name`` point at: ``--storage``, or the study's file."""
    return StudyConfig(study_name=args.study_name, storage=args.storage).storage_url


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """A trial's training recipe: ``--epochs``, ``--batch-size``, ``--lr``, ``--optimizer``,
    ``--decay-biases`` and ``--search-space``.

    Their defaults are None, so a command can tell a flag given from one left out (a resumed
    study takes what it stored); the help shows a new study's defaults, from ``DEFAULTS``.
    """
    d = DEFAULTS
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"epochs per trial (default: {d.epochs})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"training batch size (default: {d.batch_size})",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        metavar="X",
        help=f"learning rate of the optimizer (default: {d.lr})",
    )
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=None,
        help="adam: weight decay is an L2 term added to the gradient (the seed's); adamw: "
        "decoupled decay, param -= lr * wd * param; sgd: SGD with momentum 0.9 at the same "
        f"--lr, which at 1e-3 learns far slower than Adam (default: {d.optimizer})",
    )
    parser.add_argument(
        "--decay-biases",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="apply weight decay to biases and normalisation parameters too, as PyTorch does "
        f"by default; --no-decay-biases decays only weight matrices (default: {d.decay_biases})",
    )
    parser.add_argument(
        "--search-space",
        choices=SEARCH_SPACES,
        default=None,
        help="weight_decay: search the weight decay alone; full: the study also chooses "
        f"--optimizer and --decay-biases, and those flags are ignored (default: {d.search_space})",
    )


def add_data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=directory,
        default=DEFAULTS.data_dir,
        metavar="DIR",
        help="where MNIST lives in torchvision's layout, DIR/MNIST/raw (default: %(default)s)",
    )


def run_command(
    main: Callable[[list[str] | None], int],
    report: Callable[[UserError], None] | None = None,
) -> NoReturn:
    """Run a command's ``main`` and exit with its status.

    Known user-facing errors become their one line on stderr, or go to ``report`` (a worker
    hands them to its parent, which prints each once). Ctrl-C and SIGTERM stop the command
    outside any database call (``search.signals``) and end it with 130 and 143.
    """
    try:
        with graceful_stop():
            status = main(None)
    except UserError as error:
        if report is None:
            print(f"error: {error}", file=sys.stderr)
        else:
            report(error)
        status = error.exit_code
    except KeyboardInterrupt as error:
        name = f" by {error}" if str(error) else ""
        print(f"interrupted{name}: run the same command again to resume", file=sys.stderr)
        status = getattr(error, "exit_code", 130)
    sys.exit(status)
