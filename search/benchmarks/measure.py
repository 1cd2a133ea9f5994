"""The quality benchmark's run: its grid, its simulated and real studies, their held-out
scores, and the JSON that keeps them with where they were measured.

``python -m search.bench quality`` parses its flags and calls ``measure``; the docs' tables
are rendered from the JSON it writes (``search.benchmarks.evidence``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.benchmarks.tables import STUDY_ROW_HEADER, format_row
from search.config import StudyConfig
from search.signals import interrupted


def run_quality(args: argparse.Namespace, config: StudyConfig, run_args: list[str]) -> int:
    """The benchmark of ``args`` (``search.benchmarks.flags``) on the objective ``config``
    that the flags after ``--`` (``run_args``) describe; a stop says what it keeps."""
    written: list[Path] = []  # what save() wrote: an interrupted run says what it keeps
    try:
        return measure(args, config, run_args, written)
    except KeyboardInterrupt as stop:
        kept = (
            f"{args.out} keeps what was measured so far (--grid-from {args.out} reuses its grid)"
            if written
            else f"{args.out} was not written"
        )
        return interrupted(stop, f"a benchmark does not resume, run it again; {kept}")


def measure(
    args: argparse.Namespace, config: StudyConfig, run_args: list[str], written: list[Path]
) -> int:
    # After parsing: --help and flag errors don't wait for PyTorch.
    from search.benchmarks.quality import (
        ROBUST_FRACTION,
        QualityError,
        check_one_recipe,
        grid_optimum,
        held_out_scores,
        simulated,
        summarize,
    )
    from search.benchmarks.simulate import Spread

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
    from search.benchmarks.quality import real_study

    database = args.out.with_suffix(".db")
    database.unlink(missing_ok=True)
    plan = [(trials, seed) for trials in args.trials for seed in range(args.seeds)]
    for index, (trials, seed) in enumerate(plan, start=1):
        what = f"study {index} of {len(plan)} ({trials} trials, seed {seed})"
        studies.append(real_study(trials, seed, database, run_args, what, args.quiet))
        save()
    if plan:
        print(STUDY_ROW_HEADER)
