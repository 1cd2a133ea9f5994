"""The flags of ``python -m search.bench quality``: what the recommendation gives on seeds it
never saw.

    python -m search.bench quality                      # 5 studies of 50 trials
    python -m search.bench quality --trials 25,50 --seeds 3 -- --sampler tpe
    python -m search.bench quality --seeds 0 --simulate 200   # simulated studies only

First the ground truth, trained through the trial pool on the studies' own split and recipe:
a coarse grid over the whole weight-decay range and a fine one across its bracket (one seed
each) find the feasibility edge, and a dense grid across it (``--grid-points`` weight decays
by ``--grid-seeds`` held-out seeds, which no study trial and no confirmation run draws) gives
the robust optimum: the best mean validation accuracy among the weight decays feasible, by the
constraint's measure, in at least 7 of 8 of those seeds. The grid honours the flags after
``--`` that shape the objective (``--max-train-acc``, ``--train-accuracy``, ``--wd-low``/
``--wd-high``, ``--epochs``, ...).

Then ``--simulate`` studies per ``--trials`` replayed on the grid's own learning curves
(``search.benchmarks.simulate``: the real driver, sampler and confirmation, no training, so
far cheaper than a real study), each recommendation scored by its noise-free value, and
``--seeds`` real studies per ``--trials``, each run as a user runs it (``python -m
search.run`` in a process of its own, timed as a whole), with the flags after ``--`` passed
on; every recommended weight decay is then retrained on the grid's held-out seeds and scored
against the optimum on the same seeds (paired). Prints a table and writes it all as JSON, with
the commit, machine and command (``python -m search.evidence`` renders the docs' tables from
it). A benchmark, not a test: how long it takes depends on the machine, its load and what it
runs (a grid, or one reused with ``--grid-from``, and how many real studies); the times
measured are in docs/search-quality.md.
Progress goes to stderr: each grid's runs, the simulated studies and each real study's trials
with the best so far (a bar on a terminal, a line every few seconds elsewhere; ``--quiet``:
none). Stopped, it does not resume: the JSON keeps what was measured, and ``--grid-from``
reuses its grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from search.config import DEFAULTS, STUDIES_DIR
from search.flag_values import non_negative_int, positive_int, positive_ints

# What `python -m search.bench quality --help` says first.
DESCRIPTION = (
    "Run default studies with several seeds and measure what each recommendation gives when "
    "retrained on held-out seeds, against the robust optimum on the same seeds. How long it "
    "takes depends on the machine and its load; progress goes to stderr."
)


def add_quality_options(parser: argparse.ArgumentParser) -> None:
    """The quality benchmark's own options, in --help's order (the command adds the shared
    ``--data-dir`` and ``--quiet``, then ``add_run_args``)."""
    # Over 60 lines: one flag after another.
    parser.add_argument(
        "--trials",
        type=positive_ints,
        default=str(DEFAULTS.trials),
        metavar="N[,N...]",
        help="study budgets to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=non_negative_int,
        default=5,
        metavar="N",
        help="real studies per budget, with study seeds 0..N-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--simulate",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="studies per budget simulated on the grid's curves, with study seeds 0..N-1 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--grid-points",
        type=positive_int,
        default=16,
        metavar="N",
        help="weight decays of the dense grid across the edge (default: %(default)s)",
    )
    parser.add_argument(
        "--grid-seeds",
        type=positive_int,
        default=8,
        metavar="N",
        help="held-out seeds per weight decay of the dense grid, which every recommendation "
        "is retrained on too (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=STUDIES_DIR / "quality.json",
        metavar="FILE",
        help="where the JSON goes; the studies go beside it (default: %(default)s)",
    )
    parser.add_argument(
        "--grid-from",
        type=earlier_grid,
        default=None,
        metavar="FILE",
        help="reuse the grid of an earlier run's JSON instead of training one (the same "
        "flags after -- must apply)",
    )


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The flags after ``--``, last: what every study's ``python -m search.run`` is given."""
    parser.add_argument(
        "run_args",
        nargs=argparse.REMAINDER,
        metavar="-- FLAGS",
        help="flags passed on to every `python -m search.run`, e.g. -- --sampler tpe",
    )


def earlier_grid(text: str) -> dict[str, Any]:
    """``--grid-from``: the grid of an earlier run's JSON."""
    try:
        grid = json.loads(Path(text).read_text())["grid"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise argparse.ArgumentTypeError(
            f"{text}: no grid in it ({type(error).__name__}: {error}); give a JSON written by "
            "python -m search.bench quality"
        ) from None
    if not isinstance(grid, dict) or "curves" not in grid or "optimum" not in grid:
        raise argparse.ArgumentTypeError(
            f"{text}: its grid has no curves (written before they were kept); run without "
            "--grid-from once"
        )
    if "measure" not in grid or "seeds" not in grid:
        raise argparse.ArgumentTypeError(
            f"{text}: its grid was written before the robust optimum on held-out seeds; run "
            "without --grid-from once"
        )
    return grid
