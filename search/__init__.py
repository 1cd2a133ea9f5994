"""Weight-decay search: commands in this package, the library in its data, training and study
wings."""

import sys

# `python -m search.<command>` imports this package first, with sys.argv[0] == "-m" while it
# does: from here on a Ctrl-C during the command's imports is one line, not a traceback.
if sys.argv[:1] == ["-m"]:
    from search.signals import exit_at_once_on_stop

    exit_at_once_on_stop()
