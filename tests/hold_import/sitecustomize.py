"""Holds a command at the start of one import until a signal ends it.

The Ctrl-C-while-starting tests put this folder on the command's ``PYTHONPATH``: Python runs
``sitecustomize`` before ``-m`` starts the command, and from then on the first import of the
module named by ``SEARCH_TEST_HOLD_IMPORT`` touches the file ``SEARCH_TEST_HOLD_READY`` and
waits there for good. The test sends its signal once that file exists: the signal always
lands while the command imports that module, however busy the machine, and only a signal
ends the wait. Nothing else of the command changes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

_MODULE = os.environ.get("SEARCH_TEST_HOLD_IMPORT")
_READY = os.environ.get("SEARCH_TEST_HOLD_READY")


def _hold(event: str, args: tuple[object, ...]) -> None:
    if event != "import" or not args or args[0] != _MODULE:
        return
    ready = Path(str(_READY))
    if ready.exists():
        return
    ready.touch()
    while True:
        time.sleep(0.01)


if _MODULE and _READY:
    sys.addaudithook(_hold)
