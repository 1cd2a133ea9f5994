"""The values a flag takes: each parser checks one rule and says it, with what came in.

argparse turns their ``ArgumentTypeError`` into the command's one-line usage error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from search.config import MAX_GRACE_PERIOD_S, MAX_SEED, MIN_SUBSET, study_name_problem
from search.data.task import reference_problem


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


def grace_period(text: str) -> int:
    value = positive_int(text)
    if value > MAX_GRACE_PERIOD_S:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_GRACE_PERIOD_S} seconds, got {text!r}: a dead worker's trial "
            "would hold its place in the budget for longer"
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


def task_reference(text: str) -> str:
    """A built-in task's name, or a ``FILE.py:NAME`` / ``module:NAME`` reference in form
    (whether it loads is checked once the flags are settled, before any study is opened)."""
    problem = reference_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text
