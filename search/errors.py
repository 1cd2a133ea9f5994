"""The one exception type a command turns into a single line for the user."""

from __future__ import annotations

import argparse
from typing import NoReturn

USAGE_ERROR = 2


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it.

    Commands print it as one line on stderr and exit with ``exit_code``; no traceback.
    """

    exit_code = 1


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line: the usage text is one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")
