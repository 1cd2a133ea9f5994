"""Search quality: how close studies get to their objective's own optimum.

The ground truth is a grid trained through the trial pool (``grid_optimum``); studies are then
replayed on its curves (``simulated``: the real driver and sampler, no training) or run as a
user runs them (``real_study``: ``python -m search.run`` in a process of its own). The
command ``python -m search.bench quality`` prints and saves what these return.
"""

from __future__ import annotations

import math
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage

from search.benchmarks.simulate import Spread, simulate_study
from search.benchmarks.truth import MeasuredCurves
from search.config import StudyConfig
from search.errors import UsageError, UserError
from search.reporting.progress import Tally
from search.reporting.steps import Steps
from search.study.record import (
    best_feasible_trial,
    is_feasible,
    stored_recommendation,
    trial_val_accuracy,
)

GRID_SEED_KEY = 0x6121  # grid runs' seeds, apart from every study trial's and confirmation's

# How often a real study's database is read for its progress: a trial lasts many such reads.
POLL_S = 1.0


class QualityError(UserError):
    """The grid holds no edge to measure a study against."""


# A weight decay counts as feasible on held-out seeds when it holds the limit in at least this
# share of them (7 of 8): the robust optimum is the best mean validation accuracy among those.
ROBUST_FRACTION = 7 / 8


def grid_seed(config: StudyConfig, index: int) -> int:
    """The ``index``-th held-out seed: no study trial and no confirmation run draws it."""
    from search.training.seeds import derive_seed

    return derive_seed(config.seed, GRID_SEED_KEY, index)


def grid_optimum(
    config: StudyConfig,
    points: int,
    seeds: int,
    say: Callable[[str], None] = print,
    quiet: bool = False,
) -> dict[str, Any]:
    """Locate the edge in three grids, then the robust optimum on held-out seeds across it.

    A coarse grid (one seed) over the whole range finds the edge between two weight decays, a
    fine one (one seed) across that bracket narrows it, and a dense one of ``points`` weight
    decays across the fine bracket, each trained with ``seeds`` held-out seeds, gives the
    robust optimum (``robust_optimum``) for the measure the constraint reads.

    Returns the optimum, the dense grid's table (``held_out_rows``) and every run's curves
    (``curves``: the weight decays, and for each every seed's run as [running training,
    validation, final training] accuracy per epoch, None where it diverged), which
    ``search.benchmarks.simulate`` replays. Progress on stderr unless ``quiet``.
    """
    import numpy as np

    limit = config.max_train_acc
    measure = config.train_accuracy
    capacity = training_capacity(config)

    def bracket(decays: list[float], what: str) -> tuple[int, list[list[Any] | None]]:
        say(f"grid: {len(decays)} weight decays {what}, to find the edge")
        runs = train_curves(config, [(w, grid_seed(config, 0)) for w in decays], what, quiet)
        feasible = [r is not None and final_accuracy(r, measure) <= limit for r in runs]
        edge = next(
            (i for i, ok in enumerate(feasible) if ok and i > 0 and not feasible[i - 1]), None
        )
        if edge is None:
            raise QualityError(
                f"the grid {what} found no feasible weight decay above an infeasible one "
                f"between {decays[0]:.3g} and {decays[-1]:.3g}: no edge to measure against"
            )
        return edge, runs

    coarse = [float(w) for w in np.geomspace(config.wd_low, config.wd_high, capacity)]
    c, coarse_runs = bracket(coarse, "over the whole range")
    fine = [float(w) for w in np.geomspace(coarse[c - 1], coarse[c], capacity)]
    f, fine_runs = bracket(fine, f"from {fine[0]:.3g} to {fine[-1]:.3g}")
    low, high = fine[max(0, f - 2)], fine[min(len(fine) - 1, f + 2)]
    dense = [float(w) for w in np.geomspace(low, high, points)]
    say(
        f"grid: {points} weight decays from {dense[0]:.3g} to {dense[-1]:.3g} by {seeds} "
        "held-out seeds"
    )
    runs = [(w, grid_seed(config, s)) for w in dense for s in range(seeds)]
    histories = train_curves(config, runs, "across the edge", quiet)
    by_decay: dict[float, list[list[Any] | None]] = {}
    for w, h in [*zip(coarse, coarse_runs, strict=True), *zip(fine, fine_runs, strict=True)]:
        by_decay[w] = [h]
    for i, w in enumerate(dense):
        by_decay[w] = histories[i * seeds : (i + 1) * seeds]
    decays = sorted(by_decay)
    rows = held_out_rows(dict(zip(dense, (by_decay[w] for w in dense), strict=True)), limit)
    return {
        "optimum": robust_optimum(rows, measure),
        "measure": measure,
        "limit": limit,
        "seeds": seeds,
        "dense": rows,
        "curves": {"weight_decays": decays, "runs": [by_decay[w] for w in decays]},
    }


def training_capacity(config: StudyConfig) -> int:
    from search.training.pool import default_parallel_trials
    from search.training.train import resolve_device

    return default_parallel_trials(resolve_device(config.device))


def final_accuracy(curve: list[Any], measure: str) -> float:
    """The last epoch's training accuracy of a curve row by ``measure``."""
    last = curve[-1]
    return float(last[2] if measure == "final" else last[0])


def train_curves(
    config: StudyConfig, runs: list[tuple[float, int]], what: str, quiet: bool
) -> list[list[Any] | None]:
    """Each (weight decay, seed) in ``runs`` trained for every epoch through the trial pool, as
    a curve: [running training, validation, final training] accuracy per epoch (None where it
    diverged)."""
    from search.data.tasks import load_task
    from search.training.grid import train_grid_histories
    from search.training.train import resolve_device, use_one_cpu_thread

    device = resolve_device(config.device)
    use_one_cpu_thread(device)
    data = load_task(config, device)
    with Steps(len(runs) * config.epochs, f"grid {what}", unit="run-epoch", quiet=quiet) as steps:
        histories = train_grid_histories(
            data, config, runs, training_capacity(config), advance(steps)
        )
    return [
        None
        if h is None
        else [[m.train_accuracy, m.val_accuracy, m.train_accuracy_final] for m in h]
        for h in histories
    ]


def held_out_rows(
    by_decay: dict[float, list[list[Any] | None]], limit: float
) -> list[dict[str, Any]]:
    """Per weight decay, what its held-out runs ended at: the mean validation accuracy and
    both training accuracies, and in how many runs each measure held ``limit`` (a diverged
    run holds none)."""
    rows = []
    for weight_decay, runs in sorted(by_decay.items()):
        done = [r[-1] for r in runs if r is not None]
        rows.append(
            {
                "weight_decay": weight_decay,
                "seeds": len(runs),
                "val_accuracy_mean": statistics.fmean(r[1] for r in done) if done else None,
                "running_mean": statistics.fmean(r[0] for r in done) if done else None,
                "final_mean": statistics.fmean(r[2] for r in done) if done else None,
                "feasible_running": sum(r[0] <= limit for r in done),
                "feasible_final": sum(r[2] <= limit for r in done),
                "val_accuracies": [r[1] for r in done],
            }
        )
    return rows


def robust_optimum(rows: list[dict[str, Any]], measure: str) -> dict[str, Any] | None:
    """The row with the best mean validation accuracy among those feasible by ``measure`` in
    at least ``ROBUST_FRACTION`` of their held-out seeds; None if none is."""
    held = [
        r
        for r in rows
        if r["val_accuracy_mean"] is not None
        and r[f"feasible_{measure}"] >= ROBUST_FRACTION * r["seeds"] - 1e-9
    ]
    return max(held, key=lambda r: r["val_accuracy_mean"], default=None)


def held_out_scores(
    config: StudyConfig,
    weight_decays: list[float],
    seeds: int,
    optimum: dict[str, Any],
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Each recommended weight decay retrained on the grid's ``seeds`` held-out seeds (the
    optimum's own, so the comparison is paired): its held-out row, and its regret, the
    optimum's mean validation accuracy less its own."""
    unique = sorted(set(weight_decays))
    runs = [(w, grid_seed(config, s)) for w in unique for s in range(seeds)]
    curves = train_curves(config, runs, "of the recommendations", quiet)
    by_decay = {w: curves[i * seeds : (i + 1) * seeds] for i, w in enumerate(unique)}
    rows = {r["weight_decay"]: r for r in held_out_rows(by_decay, config.max_train_acc)}
    scored = []
    for w in weight_decays:
        row = dict(rows[w])
        mean = row["val_accuracy_mean"]
        row["regret"] = None if mean is None else optimum["val_accuracy_mean"] - mean
        row["paired"] = paired_difference(optimum["val_accuracies"], row["val_accuracies"])
        scored.append(row)
    return scored


def paired_difference(optimum: list[float], other: list[float]) -> dict[str, float] | None:
    """The optimum's validation accuracy less ``other``'s, seed by seed: mean and standard
    error (None unless both have every seed)."""
    if len(optimum) != len(other) or len(optimum) < 2:
        return None
    differences = [a - b for a, b in zip(optimum, other, strict=True)]
    return {
        "mean": statistics.fmean(differences),
        "stderr": statistics.stdev(differences) / math.sqrt(len(differences)),
    }


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
    grid: dict[str, Any],
    trials: int,
    seeds: int,
    quiet: bool = False,
) -> dict[str, Any]:
    """``seeds`` studies of ``trials`` replayed on the grid's curves, confirmation included,
    each recommendation scored by its noise-free value against the noise-free robust
    optimum (``noise_free_optimum``): their regrets, their spread (``Spread``'s fields) and
    how many were robustly feasible. Progress on stderr unless ``quiet``."""
    from search.benchmarks.simulate import simulated_recommendation
    from search.benchmarks.truth import ROBUST_FRACTION as SIM_ROBUST
    from search.benchmarks.truth import noise_free_optimum, noise_free_regret
    from search.training.pool import parallel_trials
    from search.training.train import resolve_device

    capacity = parallel_trials(config, resolve_device(config.device))  # as the real studies'
    curves = grid["curves"]
    truth = MeasuredCurves(curves["weight_decays"], curves["runs"])
    measure, limit = grid.get("measure", "running"), config.max_train_acc
    best = noise_free_optimum(truth, measure, limit)
    if best is None:
        raise QualityError("the grid's curves hold no robustly feasible weight decay")
    regrets, shares, chosen = [], [], []
    what = f"simulating studies of {trials} trials"
    with Steps(seeds, what, unit="study", quiet=quiet) as steps:
        for seed in range(seeds):
            run = config.replace(trials=trials, seed=seed)
            study = simulate_study(run, truth, capacity)
            choice = simulated_recommendation(study, run, truth)
            weight_decay = None if choice is None else choice.weight_decay
            regret, share = noise_free_regret(truth, weight_decay, best[1], measure, limit)
            regrets.append(regret)
            shares.append(share)
            chosen.append(weight_decay)
            steps.step(f"seed {seed}: {100 * regret:+.2f} points below the optimum")
    return {
        "trials": trials,
        "optimum": {"weight_decay": best[0], "val_accuracy": best[1]},
        "regrets": regrets,
        "feasible_shares": shares,
        "weight_decays": chosen,
        "robust": int(sum(s >= SIM_ROBUST for s in shares)),
        **asdict(Spread.of(regrets)),
    }


def real_study(
    trials: int,
    seed: int,
    database: Path,
    run_args: list[str],
    what: str = "",
    quiet: bool = False,
) -> dict[str, Any]:
    """One study as a user runs it, in a process of its own, timed as a whole; what it found.

    Its progress shows on stderr unless ``quiet`` (``what`` heads the lines): trials finished
    of ``trials`` with the best so far, read from the study's SQLite file ``database``, and
    whatever the study itself prints (it runs with ``--quiet``: only its errors).
    """
    name = f"quality-t{trials}-s{seed}"
    storage = f"sqlite:///{database}"
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
        "--quiet",
    ]
    started = time.perf_counter()
    with Steps(trials, what or f"study {name}", unit="trial", quiet=quiet) as steps:
        follow(command, steps, StudyWatch(database, name))
    wall = time.perf_counter() - started
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    trials_ = study.get_trials(deepcopy=False)
    best = best_feasible_trial(study)
    recommendation = stored_recommendation(study)
    rec = None if recommendation is None else recommendation.as_attr()
    return {
        "trials": trials,
        "seed": seed,
        "wall_s": round(wall, 1),
        "recommended_weight_decay": None if rec is None else rec["weight_decay"],
        "best_val_accuracy": None if best is None else trial_val_accuracy(best),
        "best_weight_decay": None if best is None else best.params["weight_decay"],
        "stopped_infeasible": sum(
            not is_feasible(t) and t.state.name == "PRUNED" for t in trials_
        ),
        "complete": sum(t.state.name == "COMPLETE" for t in trials_),
        "recommendation": rec,
    }


class StudyWatch:
    """A study another process runs in SQLite file ``database``, read for its progress.

    It only reads: the file is opened read-only (a URI with ``mode=ro``) and no table is
    created, so watching can never change or lock out the study it watches; before the
    study's process has made the file, its schema and the study, there is nothing to read.
    """

    def __init__(self, database: Path, study_name: str) -> None:
        self.database = database
        self.study_name = study_name
        self.storage: RDBStorage | None = None

    def progress(self) -> Tally | None:
        """Trials finished so far and the best among them; None while there is no study."""
        try:
            if self.storage is None:
                if not self.database.exists():
                    return None
                self.storage = RDBStorage(
                    f"sqlite:///file:{self.database.resolve()}?mode=ro&uri=true",
                    skip_table_creation=True,
                    skip_compatibility_check=True,
                )
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            return Tally(study)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):
            return None  # not made yet, or mid-write: the next poll reads it

    def advance(self, steps: Steps) -> None:
        """Move ``steps`` to the trials finished by now, saying the best so far."""
        tally = self.progress()
        if tally is None:
            return
        finished = len(tally.finished)
        if finished > steps.done:
            steps.step(tally.best_text(), finished - steps.done)


def follow(command: list[str], steps: Steps, watch: StudyWatch) -> None:
    """Run ``command`` (a ``python -m search.run``), showing its progress as ``steps``.

    Progress is read from the study's database by ``watch`` every ``POLL_S`` seconds, and
    once more after the command ends, so the count is the study's own whatever the timing;
    each line the command prints is relayed, indented. Stopping the benchmark stops the study.

    Raises:
        QualityError: the command failed; the message ends with its last line.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines as they are written
    last = ""  # for the error: a failing study's last line says why
    ended = threading.Event()

    def poll() -> None:
        while not ended.wait(POLL_S):
            watch.advance(steps)

    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        assert process.stdout is not None
        poller = threading.Thread(target=poll, name="quality: study progress", daemon=True)
        poller.start()
        try:
            for raw in process.stdout:
                line = raw.rstrip()
                if line:
                    last = line
                    steps.say(f"  {line}")
        except BaseException:
            # A Ctrl-C reached it too; SIGTERM, sent to this process alone, did not.
            process.terminate()
            raise
        finally:
            ended.set()
            poller.join()
    watch.advance(steps)
    if process.returncode != 0:
        said = f": {last}" if last else ""
        run = shlex.join(["python", *command[1:]])
        raise QualityError(f"`{run}` failed with exit status {process.returncode}{said}")


def summarize(
    studies: list[dict[str, Any]], budgets: tuple[int, ...], measure: str
) -> dict[str, Any]:
    """Per budget: the spread of the recommendations' held-out regret (a study with none
    counts as infinitely far), how many held the limit in ``ROBUST_FRACTION`` of the held-out
    seeds, and the median wall time."""
    summary = {}
    for trials in budgets:
        rows = [r for r in studies if r["trials"] == trials]
        if not rows:
            continue
        regrets = [
            math.inf
            if not r.get("held_out") or r["held_out"]["regret"] is None
            else r["held_out"]["regret"]
            for r in rows
        ]
        robust = sum(
            bool(r.get("held_out"))
            and r["held_out"][f"feasible_{measure}"] >= ROBUST_FRACTION * r["held_out"]["seeds"]
            for r in rows
        )
        summary[str(trials)] = {
            **asdict(Spread.of(regrets)),
            "robust": robust,
            "median_wall_s": statistics.median(r["wall_s"] for r in rows),
        }
    return summary
