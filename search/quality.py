"""``python -m search.bench quality``: what the recommendation gives on seeds it never saw.

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
(``search.engine.simulate``: the real driver, sampler and confirmation, no training; a fraction
of a second each), each recommendation scored by its noise-free value, and ``--seeds`` real
studies per ``--trials``, each run as a user runs it (``python -m search.run`` in a process of
its own, timed as a whole), with the flags after ``--`` passed on; every recommended weight
decay is then retrained on the grid's held-out seeds and scored against the optimum on the
same seeds (paired). Prints a table and writes it all as JSON, with the commit, machine and
command (``python -m search.evidence`` renders the docs' tables from it).
A benchmark, not a test: how long it takes depends on the machine and its load, from minutes
for the grid alone on an idle 2-core CPU to hours for many real studies on a loaded one.
Progress goes to stderr: each grid's runs, the simulated studies and each real study's trials
with the best so far (a bar on a terminal, a line every few seconds elsewhere; ``--quiet``:
none). Stopped, it does not resume: the JSON keeps what was measured, and ``--grid-from``
reuses its grid.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.cli import Parser, add_flags
from search.config import DEFAULTS, STUDIES_DIR, StudyConfig
from search.flag_values import non_negative_int, positive_int, positive_ints
from search.reporting.benchmarks import STUDY_ROW_HEADER, format_row


def build_parser() -> argparse.ArgumentParser:
    # Over 60 lines: one flag after another, in --help's order.
    parser = Parser(
        prog="python -m search.bench quality",
        description="Run default studies with several seeds and measure what each "
        "recommendation gives when retrained on held-out seeds, against the robust optimum "
        "on the same seeds. How long it takes "
        "depends on the machine and its load; progress goes to stderr.",
    )
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
    add_flags(parser, "--data-dir", "--quiet")
    parser.add_argument(
        "run_args",
        nargs=argparse.REMAINDER,
        metavar="-- FLAGS",
        help="flags passed on to every `python -m search.run`, e.g. -- --sampler tpe",
    )
    return parser


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


def objective_config(run_args: list[str], data_dir: Path) -> StudyConfig:
    """The defaults, with the flags of ``python -m search.run`` in ``run_args`` applied."""
    from search.run import build_parser as run_parser

    args = run_parser().parse_args(run_args)
    given = {key: value for key, value in vars(args).items() if value is not None}
    return DEFAULTS.replace(**given).replace(data_dir=data_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    written: list[Path] = []  # what save() wrote: an interrupted run says what it keeps
    try:
        return measure(args, written)
    except KeyboardInterrupt as stop:
        from search.signals import interrupted

        kept = (
            f"{args.out} keeps what was measured so far (--grid-from {args.out} reuses its grid)"
            if written
            else f"{args.out} was not written"
        )
        return interrupted(stop, f"a benchmark does not resume, run it again; {kept}")


def measure(args: argparse.Namespace, written: list[Path]) -> int:
    # After parsing: --help and flag errors don't wait for PyTorch.
    from search.engine.quality import (
        ROBUST_FRACTION,
        QualityError,
        check_one_recipe,
        grid_optimum,
        held_out_scores,
        simulated,
        summarize,
    )
    from search.engine.simulate import Spread

    run_args = [a for a in args.run_args if a != "--"]
    config = objective_config(run_args, args.data_dir)
    check_one_recipe(config)
    say = lambda line: print(line, flush=True)  # noqa: E731
    grid = args.grid_from or grid_optimum(
        config, args.grid_points, args.grid_seeds, say, args.quiet
    )
    optimum = grid["optimum"]
    if optimum is None:
        raise QualityError(
            f"no weight decay of the dense grid was feasible in {ROBUST_FRACTION:.0%} of its "
            "held-out seeds: raise --grid-points or --grid-seeds"
        )
    print(
        f"robust optimum on {grid['seeds']} held-out seeds ({grid['measure']} training "
        f"accuracy <= {grid['limit']} in {ROBUST_FRACTION:.0%} of them): weight_decay="
        f"{optimum['weight_decay']:.4g} val_accuracy={optimum['val_accuracy_mean']:.4f}",
        flush=True,
    )
    if args.grid_from is None:
        grid["measured"] = provenance()
    report: dict[str, Any] = {
        "measured": provenance(),
        "grid": grid,
        "run_args": run_args,
        "simulated": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each step: a long run stopped halfway keeps what it measured
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        written[:] = [args.out]

    save()  # the grid alone is worth keeping: --grid-from reuses it
    for trials in args.trials if args.simulate else ():
        row = simulated(config, grid, trials, args.simulate, args.quiet)
        spread = Spread(row["median"], row["p90"], row["worst"], row["n"])
        print(
            f"simulated, {trials} trials: regret of the recommendation (noise-free) {spread}; "
            f"held-out feasible in {row['robust']} of {row['n']}",
            flush=True,
        )
        report["simulated"].append(row)
        save()
    report["studies"] = []
    run_studies(args, run_args, report["studies"], save)
    recommended = [r["recommended_weight_decay"] for r in report["studies"]]
    if any(w is not None for w in recommended):
        scores = held_out_scores(
            config, [w for w in recommended if w is not None], grid["seeds"], optimum, args.quiet
        )
        rows = iter(scores)
        for study in report["studies"]:
            study["held_out"] = next(rows) if study["recommended_weight_decay"] else None
            print(format_row(study, grid["measure"]), flush=True)
    report["summary"] = summarize(report["studies"], args.trials, grid["measure"])
    for trials, line in report["summary"].items():
        print(
            f"{trials} trials: regret on held-out seeds median {100 * line['median']:.2f} "
            f"points, p90 {100 * line['p90']:.2f}, worst {100 * line['worst']:.2f}; "
            f"held-out feasible in {line['robust']} of {line['n']}; "
            f"median wall {line['median_wall_s']:.0f} s"
        )
    save()
    print(f"wrote {args.out}")
    return 0


def provenance() -> dict[str, Any]:
    """Where and when the numbers were measured: the commit, the machine, the command."""
    import os
    import platform
    import subprocess
    import sys
    from datetime import datetime, timezone

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "commit": (commit + (" with uncommitted changes" if dirty else "")) or "unknown",
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "cpus": os.cpu_count(),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
        "command": "python -m search.bench " + " ".join(sys.argv[1:]),
    }


def run_studies(
    args: argparse.Namespace,
    run_args: list[str],
    studies: list[dict[str, Any]],
    save: Callable[[], None],
) -> None:
    """``args.seeds`` real studies per budget, each row added to ``studies`` and saved as its
    study ends; they are scored on held-out seeds once all have run."""
    from search.engine.quality import real_study

    database = args.out.with_suffix(".db")
    database.unlink(missing_ok=True)
    storage = f"sqlite:///{database}"
    plan = [(trials, seed) for trials in args.trials for seed in range(args.seeds)]
    for index, (trials, seed) in enumerate(plan, start=1):
        what = f"study {index} of {len(plan)} ({trials} trials, seed {seed})"
        studies.append(real_study(trials, seed, storage, run_args, what, args.quiet))
        save()
    if plan:
        print(STUDY_ROW_HEADER)
