"""Search quality: how close studies get to their objective's own optimum.

The ground truth is a grid trained through the trial pool (``grid_optimum``); studies are then
replayed on its curves (``simulated``: the real driver and sampler, no training) or run as a
user runs them (``real_study``: ``python -m search.run`` in a process of its own). The
command ``python -m search.bench quality`` prints and saves what these return.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import optuna

from search.config import StudyConfig
from search.engine.simulate import MeasuredCurves, Spread, regret, simulate_study
from search.errors import UsageError, UserError
from search.reporting.steps import Steps
from search.study.record import (
    best_feasible_trial,
    is_feasible,
    stored_recommendation,
    trial_val_accuracy,
)

GRID_SEED_KEY = 0x6121  # grid runs' seeds, apart from every study trial's and confirmation's

# What ``python -m search.run`` prints per finished trial off a terminal: "[12/50] trial ...",
# and the best feasible trial so far, "best #12 94.80% (wd 5.72e-03)".
TRIAL_LINE = re.compile(r"\[(\d+)/(\d+)\] ")
BEST_SO_FAR = re.compile(r"best #\d+ \S+ \(wd [^)]*\)|no feasible trial yet")


class QualityError(UserError):
    """The grid holds no edge to measure a study against."""


def grid_optimum(
    config: StudyConfig,
    points: int,
    seeds: int,
    say: Callable[[str], None] = print,
    quiet: bool = False,
) -> dict[str, Any]:
    # Over 60 lines: the coarse grid, the dense grid across its edge and the choice among them
    # are one procedure over the same runs' curves.
    """Find the edge on a coarse grid, then the optimum on a dense one across it.

    Returns the optimum, the dense grid's candidates and every run's curves (``curves``: the
    weight decays, and for each every seed's run as [training, validation] accuracy per
    epoch, None where it diverged), which ``search.engine.simulate`` replays. Each grid shows
    its progress on stderr unless ``quiet``: a pool of runs takes minutes.
    """
    import numpy as np

    from search.data.tasks import load_task
    from search.engine.choose import choose
    from search.study.record import Candidate
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
    say(f"grid: {len(coarse)} weight decays over the whole range, to find the edge")
    epochs = config.epochs
    with Steps(
        len(coarse) * epochs, "grid 1 of 2 (whole range)", unit="run-epoch", quiet=quiet
    ) as steps:
        coarse_runs = train_grid_histories(
            data, config, [(w, seed(0)) for w in coarse], capacity, advance(steps)
        )
    feasible = [h is not None and h[-1].train_accuracy <= limit for h in coarse_runs]
    edge = next((i for i, ok in enumerate(feasible) if ok and i > 0 and not feasible[i - 1]), None)
    if edge is None:
        raise QualityError(
            "the coarse grid found no feasible weight decay above an infeasible one between "
            f"{config.wd_low:g} and {config.wd_high:g}: no edge to measure against"
        )
    dense = [float(w) for w in np.geomspace(coarse[edge - 1], coarse[edge], points)]
    say(f"grid: {points} weight decays from {dense[0]:.3g} to {dense[-1]:.3g} by {seeds} seeds")
    runs = [(w, seed(s)) for w in dense for s in range(seeds)]
    with Steps(
        len(runs) * epochs, "grid 2 of 2 (across the edge)", unit="run-epoch", quiet=quiet
    ) as steps:
        histories = train_grid_histories(data, config, runs, capacity, advance(steps))
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


def check_one_recipe(config: StudyConfig) -> None:
    """Refuse a full search space: a grid optimum is one recipe's, so it would judge a study
    of six against the grid of whichever recipe the flags name.

    Raises:
        UsageError: saying how to measure each recipe instead.
    """
    if config.search_space == "full":
        raise UsageError(
            "-- --search-space full: the grid optimum is one recipe's; measure each recipe "
            "on its own (-- --optimizer adamw --no-decay-biases, say)"
        )


def advance(steps: Steps) -> Callable[[int], None]:
    """The grid's ``done`` callback (run-epochs trained so far) as steps of ``steps``."""
    return lambda finished: steps.step(n=finished - steps.done) if finished > steps.done else None


def simulated(
    config: StudyConfig,
    curves: dict[str, Any],
    trials: int,
    seeds: int,
    optimum: float,
    quiet: bool = False,
) -> dict[str, Any]:
    """``seeds`` studies of ``trials`` replayed on the grid's curves: their distances and
    their spread (``Spread``'s fields). Progress on stderr unless ``quiet``: about a second
    a study on an idle machine."""
    from search.training.pool import parallel_trials
    from search.training.train import resolve_device

    capacity = parallel_trials(config, resolve_device(config.device))  # as the real studies'
    replay = MeasuredCurves(curves["weight_decays"], curves["runs"])
    distances = []
    what = f"simulating studies of {trials} trials"
    with Steps(seeds, what, unit="study", quiet=quiet) as steps:
        for seed in range(seeds):
            study = simulate_study(config.replace(trials=trials, seed=seed), replay, capacity)
            distances.append(regret(study, optimum))
            steps.step(f"seed {seed}: {100 * distances[-1]:+.2f} points from the optimum")
    return {"trials": trials, "distances": distances, **asdict(Spread.of(distances))}


def real_study(
    trials: int,
    seed: int,
    storage: str,
    run_args: list[str],
    what: str = "",
    quiet: bool = False,
) -> dict[str, Any]:
    """One study as a user runs it, timed as a whole; what it found.

    Its progress shows on stderr unless ``quiet`` (``what`` heads the lines): trials finished
    of ``trials`` with the best so far, read from the study's own lines, and its other lines
    relayed, since one study takes minutes to hours.
    """
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
        *(["--quiet"] if quiet else []),
    ]
    started = time.perf_counter()
    with Steps(trials, what or f"study {name}", unit="trial", quiet=quiet) as steps:
        follow(command, steps)
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
        "best_val_accuracy": None if best is None else trial_val_accuracy(best),
        "best_weight_decay": None if best is None else best.params["weight_decay"],
        "stopped_infeasible": sum(
            not is_feasible(t) and t.state.name == "PRUNED" for t in trials_
        ),
        "complete": sum(t.state.name == "COMPLETE" for t in trials_),
        "recommendation": None if recommendation is None else recommendation.as_attr(),
    }


def follow(command: list[str], steps: Steps) -> None:
    """Run ``command`` (a ``python -m search.run``) and show its progress as ``steps``.

    Its stdout and stderr come through one pipe, so that it draws no bar of its own over
    ``steps``' and its lines arrive in order: a trial line ("[12/50] trial ...") advances
    ``steps``, any other line is relayed, indented. Stopping the benchmark stops the study.

    Raises:
        QualityError: the command failed; the message ends with its last line.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines as they are written
    last = ""  # for the error: a failing study's last line says why
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                line = raw.rstrip()
                if not line:
                    continue
                last = line
                trial = TRIAL_LINE.search(line)
                if trial is None:
                    steps.say(f"  {line}")
                    continue
                best = BEST_SO_FAR.search(line)
                finished = int(trial.group(1))
                steps.step(best.group(0) if best else "", max(0, finished - steps.done))
        except BaseException:
            # A Ctrl-C reached it too; SIGTERM, sent to this process alone, did not.
            process.terminate()
            raise
    if process.returncode != 0:
        said = f": {last}" if last else ""
        run = shlex.join(["python", *command[1:]])
        raise QualityError(f"`{run}` failed with exit status {process.returncode}{said}")


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
    return summary
