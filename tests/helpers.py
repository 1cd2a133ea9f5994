"""Helpers the tests import: run a command's main in-process as its ``__main__`` would."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from search.cli import run_command

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    main: Callable[[list[str] | None], int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run a command's ``main`` as its ``__main__`` would; returns (exit status, out, err)."""
    old = sys.argv
    sys.argv = ["prog", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_command(main)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err
