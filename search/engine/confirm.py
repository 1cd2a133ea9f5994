"""Seed confirmation: retrain the best few candidates with further seeds, side by side.

Across seeds a trial's training accuracy and its validation accuracy both move near the edge
(the seed-to-seed spreads measured: docs/search-quality.md), so a best trial on the
feasibility edge can be feasible by its seed's luck, and a user who retrains it breaks the
constraint. After the search, each candidate (``search.engine.choose
.candidates``) is trained again with ``confirm_seeds`` seeds of its own, those of one round
all at once in the trial pool, and ``search.engine.choose`` recommends the best one that
holds.

The runs are trials of a study beside the searched one (``<study>-confirm``), so a person can
inspect them in the dashboard; they never count toward ``--trials`` and the sampler never sees
them. A run already there for (candidate, seed index) is reused: a resumed study confirms only
the candidates it has not confirmed before.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config import MAX_ROUNDS, StudyConfig
from search.data.splits import Splits
from search.engine.choose import (
    candidates,
    confirmation_rounds,
    recipes,
    recommend,
    robust,
)
from search.engine.objective import (
    constraint_value,
    record_last_epoch,
    suggest_recipe,
)
from search.recipe import Recipe
from search.reporting.steps import Steps
from search.study.notes import plural
from search.study.optuna_private import storage_of
from search.study.record import (
    Candidate,
    Recommendation,
    TrialOutcome,
    confirm_study_name,
    confirmation_run_attrs,
    confirmation_run_of,
    finished_trials,
    last_recommendation,
    record_parallel_trials,
    record_recommendation,
    record_run_diverged,
)
from search.study.storage import first_line
from search.training.pools import make_pool
from search.training.runs import Run as PoolRun
from search.training.runs import train_runs as train_side_by_side
from search.training.seeds import derive_seed
from search.training.train import DivergedError, EpochMetrics

logger = logging.getLogger(__name__)

CONFIRM_KEY = 0xC0F  # keeps confirmation seeds apart from every search trial's seed


def confirmation_seed(study_seed: int, trial_number: int, replicate: int) -> int:
    return derive_seed(study_seed, CONFIRM_KEY, trial_number, replicate)


@dataclass
class Run:
    """One confirmation run: a candidate's weight decay (and other parameters), a new seed."""

    trial: optuna.Trial
    candidate: int
    replicate: int
    seed: int
    recipe: Recipe
    history: list[EpochMetrics] = field(default_factory=list)


def confirm(
    study: optuna.Study,
    config: StudyConfig,
    data: Splits,
    n_candidates: int,
    say: Callable[[str], None] = print,
) -> tuple[Recommendation | None, int]:
    """Confirm the study's best ``n_candidates`` with ``config.confirm_seeds`` seeds each.

    In rounds (``search.engine.choose.confirmation_rounds``): the candidates close to the
    best trial first, the others only if none of those holds, so the usual confirmation trains
    the runs that can change the answer and no more.

    Returns the recommendation it stored on the study (None when the study has no feasible
    trial to confirm) and how many runs it trained. Where it trained none, the recommendation
    names the confirmation whose runs it reused: when it ran, after how many trials, and what
    it cost then.
    """
    chosen = candidates(study, n_candidates * MAX_ROUNDS)
    if not chosen or config.confirm_seeds == 0:
        return None, 0
    earlier = last_recommendation(study)
    confirm_study = optuna.create_study(
        storage=storage_of(study),
        study_name=confirm_study_name(study.study_name),
        direction="maximize",
        load_if_exists=True,
    )
    started = time.perf_counter()
    confirmed: list[Candidate] = []
    trained = 0
    for round_ in confirmation_rounds(chosen, n_candidates):
        if robust(confirmed, config.max_train_acc, recipes(study)):
            break  # a closer candidate held: the rest could not change the answer
        if confirmed:
            say("no candidate held the limit: confirming the next ones")
        trained += confirm_round(confirm_study, round_, config, data, say)
        confirmed += candidates_from_runs(finished_runs(confirm_study), round_, config)
    seconds = round(time.perf_counter() - started, 1)
    if trained == 0 and earlier is not None:
        cost = (earlier.confirm_runs, earlier.confirm_seconds)
        when = (earlier.confirmed_at, earlier.confirmed_after)
    else:
        cost = (trained, seconds)
        when = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", len(finished_trials(study)))
    runs = finished_runs(confirm_study)
    observed = {
        c.trial: [runs[(c.trial, r)] for r in range(config.confirm_seeds) if (c.trial, r) in runs]
        for c in confirmed
    }
    recommendation = recommend(
        study,
        confirmed,
        config.max_train_acc,
        *cost,
        *when,
        observed=observed,
        measure=config.train_accuracy,
    )
    record_recommendation(study, recommendation)
    return recommendation, trained


def confirm_round(
    confirm_study: optuna.Study,
    chosen: list[FrozenTrial],
    config: StudyConfig,
    data: Splits,
    say: Callable[[str], None],
) -> int:
    """Train the runs of ``chosen`` that the confirmation study lacks; returns how many."""
    done = finished_runs(confirm_study)
    todo = [
        (trial, r)
        for trial in chosen
        for r in range(config.confirm_seeds)
        if (trial.number, r) not in done
    ]
    if not todo:
        return 0
    say(
        f"confirming {plural(len(chosen), 'candidate')} with "
        f"{plural(config.confirm_seeds, 'seed')} each: {plural(len(todo), 'run')} of "
        f"{plural(config.epochs, 'epoch')}, "
        "not counted in --trials"
    )
    runs = [start_run(confirm_study, config, trial, r) for trial, r in todo]
    try:
        with Steps(
            len(runs) * config.epochs, "confirmation", unit="run-epoch", quiet=config.quiet
        ) as steps:
            train_runs(runs, config, data, steps.step)
    except BaseException:
        for run in runs:  # a re-run confirms them again
            _fail_quietly(confirm_study, run.trial)
        raise
    for run in runs:
        finish_run(confirm_study, run, config)
    return len(todo)


def candidates_from_runs(
    done: dict[tuple[int, int], tuple[float, float]],
    chosen: list[FrozenTrial],
    config: StudyConfig,
) -> list[Candidate]:
    return [
        Candidate.from_runs(
            trial.number,
            float(trial.params["weight_decay"]),
            [
                done[(trial.number, r)]
                for r in range(config.confirm_seeds)
                if (trial.number, r) in done  # a diverged run failed: it counts as infeasible
            ],
            config.confirm_seeds,
            config.max_train_acc,
        )
        for trial in chosen
    ]


def finished_runs(confirm_study: optuna.Study) -> dict[tuple[int, int], tuple[float, float]]:
    """(candidate trial, seed index) -> (train, validation accuracy) of the complete runs."""
    runs: dict[tuple[int, int], tuple[float, float]] = {}
    for t in confirm_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        outcome = TrialOutcome.read(t)
        if outcome is not None:
            runs[confirmation_run_of(t)] = (outcome.train_accuracy, outcome.val_accuracy)
    return runs


def start_run(
    confirm_study: optuna.Study, config: StudyConfig, candidate: FrozenTrial, replicate: int
) -> Run:
    """A trial of the confirmation study with the candidate's parameters and a new seed."""
    seed = confirmation_seed(config.seed, candidate.number, replicate)
    confirm_study.enqueue_trial(
        candidate.params,
        user_attrs=confirmation_run_attrs(candidate.number, replicate, seed),
        skip_if_exists=False,
    )
    with warnings.catch_warnings():
        # Optuna warns that heartbeats need study.optimize; a confirmation has none to keep.
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = confirm_study.ask()
    return Run(trial, candidate.number, replicate, seed, suggest_recipe(trial, config))


def train_runs(
    runs: list[Run],
    config: StudyConfig,
    data: Splits,
    progress: Callable[[str, int], None] | None = None,
) -> None:
    """Every run's epochs, all at once in the trial pool, each with its own recipe.

    ``progress`` is told each time epochs end: a text, and how many run-epochs that was.
    """
    told = progress or (lambda text, n: None)
    for slot, run in enumerate(runs):  # train_side_by_side fills the slots in order
        record_parallel_trials(run.trial, len(runs), slot)
    train_side_by_side(
        make_pool(data, config, len(runs)),
        [PoolRun(key, run.seed, run.recipe) for key, run in enumerate(runs)],
        config.epochs,
        on_result=lambda key, result: _record_epoch(runs[key], result),
        on_pass=lambda epoch, trained: told(
            f"epoch {epoch}/{config.epochs} of {len(runs)} runs side by side", trained
        ),
    )


def _record_epoch(run: Run, result: EpochMetrics | DivergedError) -> None:
    if isinstance(result, DivergedError):
        record_run_diverged(run.trial, str(result))
        return
    run.history.append(result)
    run.trial.report(result.val_accuracy, result.epoch)


def finish_run(confirm_study: optuna.Study, run: Run, config: StudyConfig) -> None:
    """Tell a run with its last epoch's numbers and its own constraint (a diverged run fails)."""
    if not run.history or run.history[-1].epoch < config.epochs:
        confirm_study.tell(run.trial, state=TrialState.FAIL)
        return
    last = run.history[-1]
    measure = config.train_accuracy
    record_last_epoch(run.trial, last, constraint_value(last.accuracy(measure), config), measure)
    confirm_study.tell(run.trial, last.val_accuracy)


def _fail_quietly(confirm_study: optuna.Study, trial: optuna.Trial) -> None:
    try:
        confirm_study.tell(trial, state=TrialState.FAIL)
    except Exception as error:  # the storage may be what failed; report the original error
        logger.warning(
            "could not mark confirmation run %d failed: %s", trial.number, first_line(error)
        )
