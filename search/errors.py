"""The one exception type a command turns into a single line for the user, and the argparse
pieces every command shares without importing the study (``search.data`` among them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

USAGE_ERROR = 2


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it.

    Commands print it as one line on stderr and exit with ``exit_code``; no traceback.
    """

    exit_code = 1


class UsageError(UserError):
    """Flags that break a rule between them, or contradict the study they name: the command
    reports it as argparse reports a bad flag, one line and exit status 2."""

    exit_code = USAGE_ERROR


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line: the usage text is one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def directory(text: str) -> Path:
    """A folder flag: an existing directory, or a path where one can be made."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
    return path
