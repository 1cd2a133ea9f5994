"""``python -m search.bench quality``: how close default studies get to their own optimum.

    python -m search.bench quality                      # 5 studies of 50 trials, ~15 min
    python -m search.bench quality --trials 25,50 --seeds 3 -- --sampler tpe
    python -m search.bench quality --seeds 0 --simulate 200   # simulated studies only

First the ground truth, trained through the trial pool on the studies' own split and recipe:
a coarse grid over the whole weight-decay range (one seed) finds the feasibility edge, and a
dense grid across it (``--grid-points`` weight decays by ``--grid-seeds`` seeds) gives the
grid optimum: the best mean validation accuracy among weight decays feasible in at least 80%
of their seeds. The grid honours the flags after ``--`` that shape the objective
(``--max-train-acc``, ``--wd-low``/``--wd-high``, ``--epochs``, ...).

Then ``--simulate`` studies per ``--trials`` replayed on the grid's own learning curves
(``search.study.simulate``: the real driver and sampler, no training; a second each), which
gives the distribution of the distance over many seeds, and ``--seeds`` real studies per
``--trials``, each run as a user runs it (``python -m search.run`` in a process of its own,
timed as a whole), with the flags after ``--`` passed on. Prints a table and writes it as JSON.
A benchmark, not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from search.cli import Parser, add_data_dir_flag, non_negative_int, positive_int, positive_ints
from search.config import DEFAULTS, STUDIES_DIR, StudyConfig
from search.errors import UserError

GRID_SEED_KEY = 0x6121  # grid runs' seeds, apart from every study trial's and confirmation's


class QualityError(UserError):
    """The grid holds no edge to measure a study against."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.bench quality",
        description="Run default studies with several seeds and measure how far their best "
        "feasible trial lands from the grid optimum of the same objective.",
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
        default=12,
        metavar="N",
        help="weight decays of the dense grid across the edge (default: %(default)s)",
    )
    parser.add_argument(
        "--grid-seeds",
        type=positive_int,
        default=4,
        metavar="N",
        help="seeds per weight decay of the dense grid (default: %(default)s)",
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
    add_data_dir_flag(parser)
    parser.add_argument(
        "run_args",
        nargs=argparse.REMAINDER,
        metavar="-- FLAGS",
        help="flags passed on to every `python -m search.run`, e.g. -- --sampler tpe",
    )
    return parser


def grid_optimum(config: StudyConfig, points: int, seeds: int) -> dict[str, Any]:
    """Find the edge on a coarse grid, then the optimum on a dense one across it.

    Returns the optimum, the dense grid's candidates and every run's curves (``curves``: the
    weight decays, and for each every seed's run as [training, validation] accuracy per
    epoch, None where it diverged), which ``search.study.simulate`` replays.
    """
    import numpy as np

    from search.data.tasks import load_task
    from search.study.recommend import Candidate, choose
    from search.training.grid import train_grid_histories
    from search.training.pool import default_parallel_trials
    from search.training.seeds import derive_seed
    from search.training.train import resolve_device, use_one_cpu_thread

    device = resolve_device(config.device)
    use_one_cpu_thread(device)
    data = load_task(config, device)
    capacity = default_parallel_trials(device)
    limit = config.max_train_acc

    def seed(index: int) -> int:
        return derive_seed(config.seed, GRID_SEED_KEY, index)

    coarse = [float(w) for w in np.geomspace(config.wd_low, config.wd_high, capacity)]
    print(f"grid: {len(coarse)} weight decays over the whole range, to find the edge", flush=True)
    coarse_runs = train_grid_histories(data, config, [(w, seed(0)) for w in coarse], capacity)
    feasible = [h is not None and h[-1].train_accuracy <= limit for h in coarse_runs]
    edge = next((i for i, ok in enumerate(feasible) if ok and i > 0 and not feasible[i - 1]), None)
    if edge is None:
        raise QualityError(
            "the coarse grid found no feasible weight decay above an infeasible one between "
            f"{config.wd_low:g} and {config.wd_high:g}: no edge to measure against"
        )
    dense = [float(w) for w in np.geomspace(coarse[edge - 1], coarse[edge], points)]
    print(
        f"grid: {points} weight decays from {dense[0]:.3g} to {dense[-1]:.3g} by {seeds} seeds",
        flush=True,
    )
    runs = [(w, seed(s)) for w in dense for s in range(seeds)]
    histories = train_grid_histories(
        data, config, runs, capacity, lambda n: print(f"  {n}/{len(runs)}", flush=True)
    )
    # Each weight decay's seeds judged as a study's candidates are: the optimum is the one the
    # study's confirmation would recommend among them.
    finished = [
        None if h is None else (h[-1].train_accuracy, h[-1].val_accuracy) for h in histories
    ]
    judged = [
        Candidate.from_runs(
            i, w, [r for r in finished[i * seeds : (i + 1) * seeds] if r], seeds, limit
        )
        for i, w in enumerate(dense)
    ]
    chosen, held = choose(judged)
    table = [asdict(c) for c in judged]
    best = asdict(chosen) if held else None

    def curve(history: list[Any] | None) -> list[list[float]] | None:
        return None if history is None else [[m.train_accuracy, m.val_accuracy] for m in history]

    by_decay = {w: [curve(h)] for w, h in zip(coarse, coarse_runs, strict=True)}
    for i, w in enumerate(dense):
        by_decay[w] = [curve(h) for h in histories[i * seeds : (i + 1) * seeds]]
    decays = sorted(by_decay)
    curves = {"weight_decays": decays, "runs": [by_decay[w] for w in decays]}
    return {"optimum": best, "dense": table, "curves": curves}


def simulated(
    config: StudyConfig, curves: dict[str, Any], trials: int, seeds: int, optimum: float
) -> dict[str, Any]:
    """``seeds`` studies of ``trials`` replayed on the grid's curves: their distances."""
    from search.study.simulate import MeasuredCurves, Spread, regret, simulate_study
    from search.training.pool import parallel_trials
    from search.training.train import resolve_device

    capacity = parallel_trials(config, resolve_device(config.device))  # as the real studies'
    replay = MeasuredCurves(curves["weight_decays"], curves["runs"])
    distances = []
    for seed in range(seeds):
        study = simulate_study(config.replace(trials=trials, seed=seed), replay, capacity)
        distances.append(regret(study, optimum))
    spread = Spread.of(distances)
    print(f"simulated, {trials} trials: distance to the optimum {spread}", flush=True)
    return {"trials": trials, "distances": distances, **asdict(spread)}


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
    return grid


def objective_config(run_args: list[str], data_dir: Path) -> StudyConfig:
    """The defaults, with the flags of ``python -m search.run`` in ``run_args`` applied."""
    from search.run import build_parser as run_parser

    args = run_parser().parse_args(run_args)
    given = {key: value for key, value in vars(args).items() if value is not None}
    return DEFAULTS.replace(**given).replace(data_dir=data_dir)


def run_study(trials: int, seed: int, storage: str, run_args: list[str]) -> dict[str, Any]:
    """One study as a user runs it, timed as a whole; what it found."""
    import optuna

    from search.study.edge import is_feasible
    from search.study.recommend import stored_recommendation
    from search.study.study import best_feasible_trial

    name = f"quality-t{trials}-s{seed}"
    command = [
        sys.executable,
        "-m",
        "search.run",
        "--trials",
        str(trials),
        "--seed",
        str(seed),
        "--study-name",
        name,
        "--storage",
        storage,
        *run_args,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    trials_ = study.get_trials(deepcopy=False)
    best = best_feasible_trial(study)
    recommendation = stored_recommendation(study)
    return {
        "trials": trials,
        "seed": seed,
        "wall_s": round(wall, 1),
        "best_val_accuracy": None if best is None else best.user_attrs["val_accuracy"],
        "best_weight_decay": None if best is None else best.params["weight_decay"],
        "stopped_infeasible": sum(
            not is_feasible(t) and t.state.name == "PRUNED" for t in trials_
        ),
        "complete": sum(t.state.name == "COMPLETE" for t in trials_),
        "recommendation": recommendation,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_args = [a for a in args.run_args if a != "--"]
    config = objective_config(run_args, args.data_dir)
    grid = args.grid_from or grid_optimum(config, args.grid_points, args.grid_seeds)
    optimum = grid["optimum"]
    if optimum is None:
        from search.study.recommend import MIN_FEASIBLE_FRACTION

        raise QualityError(
            f"no weight decay of the dense grid was feasible in {MIN_FEASIBLE_FRACTION:.0%} "
            "of its seeds: "
            "raise --grid-points or --grid-seeds"
        )
    print(
        f"grid optimum: weight_decay={optimum['weight_decay']:.4g} val_accuracy="
        f"{optimum['val_accuracy_mean']:.4f} (mean of {args.grid_seeds} seeds)",
        flush=True,
    )
    report: dict[str, Any] = {"grid": grid, "run_args": run_args, "simulated": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each step: a long run stopped halfway keeps what it measured
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    save()  # the grid alone is worth keeping: --grid-from reuses it
    for trials in args.trials if args.simulate else ():
        mean = optimum["val_accuracy_mean"]
        report["simulated"].append(simulated(config, grid["curves"], trials, args.simulate, mean))
        save()
    report["studies"] = []
    run_studies(args, run_args, optimum["val_accuracy_mean"], report["studies"], save)
    report["summary"] = summarize(report["studies"], args.trials)
    save()
    print(f"wrote {args.out}")
    return 0


def run_studies(
    args: argparse.Namespace,
    run_args: list[str],
    optimum: float,
    studies: list[dict[str, Any]],
    save: Callable[[], None],
) -> None:
    """``args.seeds`` real studies per budget, each row added to ``studies``, printed and
    saved as its study ends."""
    database = args.out.with_suffix(".db")
    database.unlink(missing_ok=True)
    storage = f"sqlite:///{database}"
    if args.seeds:
        print(
            f"{'trials':>6} {'seed':>4} {'best val':>8} {'to opt':>7} {'wd':>9} {'infeas':>6} "
            f"{'complete':>8} {'wall s':>7}  recommended (feasible fraction, val mean)"
        )
    for trials in args.trials:
        for seed in range(args.seeds):
            row = run_study(trials, seed, storage, run_args)
            best = row["best_val_accuracy"]
            row["distance"] = None if best is None else optimum - best
            studies.append(row)
            print(format_row(row), flush=True)
            save()


def summarize(studies: list[dict[str, Any]], budgets: tuple[int, ...]) -> dict[str, Any]:
    """The median and worst distance and the median wall time of each budget's studies."""
    summary = {}
    for trials in budgets:
        rows = [r for r in studies if r["trials"] == trials]
        if not rows:
            continue
        distances = [math.inf if r["distance"] is None else r["distance"] for r in rows]
        walls = [r["wall_s"] for r in rows]
        summary[str(trials)] = {
            "median_distance": statistics.median(distances),
            "worst_distance": max(distances),
            "median_wall_s": statistics.median(walls),
        }
        print(
            f"{trials} trials: distance to the optimum median "
            f"{100 * statistics.median(distances):.2f} points, worst {100 * max(distances):.2f}"
            f"; median wall {statistics.median(walls):.0f} s"
        )
    return summary


def format_row(row: dict[str, Any]) -> str:
    rec = row["recommendation"]
    recommended = (
        "-"
        if rec is None
        else f"wd={rec['weight_decay']:.4g} ({rec['feasible_fraction']:.0%}, "
        f"{rec['val_accuracy_mean']:.4f}){'' if rec['confirmed'] else ' unconfirmed'}"
    )
    if row["best_val_accuracy"] is None:
        return f"{row['trials']:>6} {row['seed']:>4} {'none feasible':>26}"
    return (
        f"{row['trials']:>6} {row['seed']:>4} {row['best_val_accuracy']:>8.4f} "
        f"{100 * row['distance']:>6.2f}p {row['best_weight_decay']:>9.3g} "
        f"{row['stopped_infeasible']:>6} {row['complete']:>8} {row['wall_s']:>7.1f}  {recommended}"
    )
