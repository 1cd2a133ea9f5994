"""Run (or resume) a study: the one library call behind ``python -m search.run``.

``run_study`` opens or creates the study, runs its trials here or in ``config.workers``
processes, confirms the best candidates, and returns an ``Outcome`` for the caller to print.
It takes a settled ``StudyConfig`` (``search.engine.settle``); nothing here parses flags.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from search.config import STUDIES_DIR, StudyConfig
from search.engine.budget import fail_leftovers
from search.engine.strategy import make_pruner, make_sampler
from search.engine.workers import exit_status, run_workers
from search.errors import UsageError
from search.reporting.progress import StudyProgress, choose_mode
from search.signals import STOP_SIGNALS, Interrupted, run_command
from search.study.artifacts import artifact_store
from search.study.backends import SIDECARS, backend_for
from search.study.notes import record_best_feasible_and_note, save_study_note
from search.study.record import (
    BestTrial,
    Counts,
    RangeEnd,
    Recommendation,
    best_feasible_trial,
    finished_trials,
    range_ends,
    record_run_settings,
    stored_recommendation,
)
from search.study.storage import masked, open_storage, storage_errors
from search.study.study import create_study, find_study, trials_so_far

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from search.data.splits import Splits

# PyTorch and the modules that train are imported inside the functions that use them: a
# command's ``--help`` and its flag errors answer before they load.

Say = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    """What a run of a study did and found, for its command to print."""

    study_name: str
    budget: int
    finished: int
    best: BestTrial | None  # the best feasible trial, if any
    best_params: dict[str, Any]  # its parameters (beside weight decay: --search-space full)
    recommendation: Recommendation | None  # current (confirmed against ``best``), if any
    confirmed_now: bool  # this run trained the recommendation's confirmation runs
    trained_now: bool  # this run trained trials (False: the budget was already met)
    wall_s: float | None  # the search's wall time, when this run searched
    status: int  # the command's exit status (workers that failed make it non-zero)
    summary_known: bool = True  # False: the workers lost the database, and said so
    counts: Counts = Counts()  # the study's trials by how they ended, each once
    trials_now: int = 0  # trials that finished during this run (its workers' included)
    leftovers: tuple[int, ...] = ()  # trials dead workers left running, failed by this run
    range_ends: tuple[RangeEnd, ...] = ()  # recipes whose edge the searched range misses


def run_study(config: StudyConfig, say: Say = print) -> Outcome:
    """Open or create the study, run its trials here or in ``config.workers`` processes, then
    confirm the best candidates; ``say`` gets the lines a person watches the run by."""
    from search.data.tasks import load_task
    from search.training.train import resolve_device

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress lines replace its own
    with storage_errors(config.storage_url):
        with removed_unless_created(config):
            if config.storage is None:
                STUDIES_DIR.mkdir(exist_ok=True)
            storage = open_storage(config)
            study = open_study(storage, config)
            if study is not None and len(finished_trials(study)) >= config.trials:
                say(f"study {config.study_name!r} already holds {config.trials} finished trials")
                leftovers = fail_leftovers(study, config)
                confirmed = False
                if needs_confirmation(study, config):
                    data = load_task(config, resolve_device(config.device))
                    confirmed = confirm_here(study, config, data, say)
                return outcome(
                    study, config, trained=False, confirmed=confirmed, leftovers=leftovers
                )
            device = resolve_device(config.device)
            data = load_task(config, device)
            if config.validation == "test":
                print(
                    "note: validating on the official test set (--validation test), as the "
                    "seed experiment does; its accuracy is then no unbiased test figure",
                    file=sys.stderr,
                )
            if study is None:
                study = create_study(
                    storage, config, study_attrs(data), make_sampler(config), make_pruner(config)
                )
            else:
                check_same_data(study, data)
        return search_and_confirm(study, storage, config, data, device, say)


def search_and_confirm(
    study: optuna.Study,
    storage: BaseStorage,
    config: StudyConfig,
    data: Splits,
    device: Any,
    say: Say,
) -> Outcome:
    """The study's trials up to its budget, here or in workers; then its confirmation."""
    from search.data.tasks import load_task

    record_run_settings(study, config)  # the next resume's budget, sampler and pruner
    done = len(finished_trials(study))
    say(
        f"study {config.study_name!r} in {masked(config.storage_url)}: {done} of "
        f"{config.trials} trials finished, training on {device}"
    )
    started = time.perf_counter()
    status = 0
    if config.workers > 1:
        del data  # each worker loads its own
        dispose = getattr(storage, "engine", None)
        if dispose is not None:
            dispose.dispose()  # and opens its own connections; this process waits
        ends = run_workers(config, worker)
        try:
            budget_met = len(finished_trials(study)) >= config.trials
        except Exception:
            if not any(end.error for end in ends):
                raise
            budget_met = False  # the database the workers lost: they said so, in one line
        status = exit_status(ends, budget_met, config)
        if not budget_met and any(end.error for end in ends):
            # Their line says it all; a summary would need the database.
            return Outcome(
                config.study_name,
                config.trials,
                0,
                None,
                {},
                None,
                False,
                True,
                None,
                status,
                summary_known=False,
            )
    else:
        run_here(study, config, data)
    record_best_feasible_and_note(study)
    budget_met = len(finished_trials(study)) >= config.trials
    leftovers = fail_leftovers(study, config) if status == 0 and budget_met else []
    wall = time.perf_counter() - started
    say(f"wall time {wall:.1f}s")
    confirmed = False
    if status == 0 and needs_confirmation(study, config):
        if config.workers > 1:
            data = load_task(config, device)
        confirmed = confirm_here(study, config, data, say)
    return outcome(
        study,
        config,
        trained=True,
        confirmed=confirmed,
        wall=wall,
        status=status,
        before=done,
        leftovers=leftovers,
    )


def outcome(
    study: optuna.Study,
    config: StudyConfig,
    trained: bool,
    confirmed: bool,
    wall: float | None = None,
    status: int = 0,
    before: int | None = None,
    leftovers: list[int] | None = None,
) -> Outcome:
    """What the study holds now; ``before``: its finished trials when this run began."""
    best = best_feasible_trial(study)
    counts = Counts.of(study.get_trials(deepcopy=False))
    return Outcome(
        study_name=study.study_name,
        budget=config.trials,
        finished=len(finished_trials(study)),
        best=None if best is None else BestTrial.of(best),
        best_params={} if best is None else dict(best.params),
        recommendation=stored_recommendation(study),
        confirmed_now=confirmed,
        trained_now=trained,
        wall_s=wall,
        status=status,
        counts=counts,
        trials_now=0 if before is None else counts.finished - before,
        leftovers=tuple(leftovers or ()),
        range_ends=tuple(range_ends(study.get_trials(deepcopy=False))),
    )


def open_study(storage: BaseStorage, config: StudyConfig) -> optuna.Study | None:
    """The existing study, with a sampler seeded by the trials it holds, or None."""
    held = trials_so_far(storage, config.study_name)
    if held is None:
        return None
    return find_study(storage, config, make_sampler(config, held), make_pruner(config))


def study_attrs(data: Splits) -> dict[str, object]:
    """What a study records beside its config: the data it saw and the code that ran."""
    import torch

    return {
        "data_checksums": data.checksums,
        "train_size": len(data.train_x),
        "val_size": len(data.val_x),
        "versions": {"torch": torch.__version__, "optuna": optuna.__version__},
    }


def check_same_data(study: optuna.Study, data: Splits) -> None:
    """Refuse to resume a study on data that changed under it: its trials would not compare."""
    stored = study.user_attrs.get("data_checksums")
    if stored is None or stored == data.checksums:
        return
    changed = sorted(
        k for k in stored.keys() | data.checksums.keys() if stored.get(k) != data.checksums.get(k)
    )
    raise UsageError(
        f"study {study.study_name!r} was made on other data ({', '.join(changed)} changed since): "
        "its trials would not compare; give the data it was made on, or a new --study-name"
    )


@contextmanager
def removed_unless_created(config: StudyConfig) -> Iterator[None]:
    """A new SQLite study that fails before it exists (its data, a stop) leaves no file behind.

    Opening the storage writes Optuna's schema into a new file at once; without this, a
    mistake would leave a study database that holds no study.
    """
    database = backend_for(config.storage_url).file
    paths = [] if database is None else [database, *(Path(f"{database}{s}") for s in SIDECARS)]
    if config.storage is None:
        paths.append(STUDIES_DIR)
    new = [path for path in paths if not path.exists()]
    try:
        yield
    except BaseException:
        for path in new:
            if path.is_dir():
                with suppress(OSError):
                    path.rmdir()  # only if empty: another study's files stay
            else:
                path.unlink(missing_ok=True)
        raise


def needs_confirmation(study: optuna.Study, config: StudyConfig) -> bool:
    """Whether the study's recommendation is missing or stale (a new best, other seeds)."""
    if config.confirm_seeds == 0 or best_feasible_trial(study) is None:
        return False
    stored = stored_recommendation(study)
    return stored is None or stored.choice.confirm_seeds != config.confirm_seeds


def confirm_here(study: optuna.Study, config: StudyConfig, data: Splits, say: Say) -> bool:
    """Confirm the best candidates; True if that trained runs here (not all reused)."""
    from search.engine.confirm import confirm

    _, trained = confirm(study, config, data, config.confirm_candidates, say)
    save_study_note(study)  # the study's note names the recommendation now
    return trained > 0


def run_here(study: optuna.Study, config: StudyConfig, data: Splits, label: str = "") -> None:
    """This process's trials, until the study's budget (shared with any other worker) is met.

    Progress shows as a live bar on a terminal, one line per trial elsewhere (a worker's
    lines carry its ``label``), nothing with ``--quiet``.
    """
    from search.engine.drive import run_until_budget
    from search.training.pool import parallel_trials

    store = artifact_store(config.storage_url, config.artifacts, create=True)
    mode = choose_mode(config.quiet, workers=1 if not label else config.workers)
    slots = parallel_trials(config, data.train_x.device)
    with StudyProgress(study, config, mode, slots=slots, label=label) as progress:
        run_until_budget(
            study, config, data, store, [progress.finished], progress.epoch, progress.pass_done
        )


def worker(
    config: StudyConfig, index: int, pending: Any, ignored: frozenset[int], errors: Any
) -> None:
    """One of the ``--workers`` processes (``search.engine.workers.run_workers`` starts it).

    Its one-line error goes to the parent, which prints each distinct one once.
    """
    for signum in set(STOP_SIGNALS) - ignored:  # started deaf to them; listen from here on
        signal.signal(signum, signal.default_int_handler)
    run_command(
        lambda argv: work(config, index, pending.value),
        report=lambda error: errors.put((index, str(error))),
    )


def work(config: StudyConfig, index: int, pending: int) -> int:
    """A worker's life: the study its parent created, trials until the budget is met.

    Stopped by a signal, it exits with the signal's status quietly: the parent says it once.
    """
    try:
        if pending:
            raise Interrupted(pending)  # the stop came while this worker was starting
        return work_until_done(config, index)
    except Interrupted as stop:
        return stop.exit_code


def work_until_done(config: StudyConfig, index: int) -> int:
    from search.data.tasks import load_task
    from search.training.train import resolve_device, use_one_cpu_thread

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with storage_errors(config.storage_url):
        storage = open_storage(config)
        study = open_study(storage, config)
        assert study is not None, "the parent process creates the study"
        # Seeded alike, every worker's sampler would propose the same first trials. Optuna
        # reseeds the threads of study.optimize(n_jobs=...) the same way.
        study.sampler.reseed_rng()
        device = resolve_device(config.device)
        use_one_cpu_thread(device)
        run_here(study, config, load_task(config, device), label=f"[worker {index}] ")
    return 0
