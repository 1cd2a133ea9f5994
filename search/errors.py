"""The one exception type a command turns into a single line for the user."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it.

    Commands print it as one line on stderr and exit with ``exit_code``; no traceback.
    """

    exit_code = 1
