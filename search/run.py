"""``python -m search.run``: run (or resume) the weight-decay study.

    python -m search.run --trials 50

Every trial lands in the study's database (SQLite under ``studies/`` unless ``--storage``
says otherwise); running the same command again resumes the study up to its budget.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from search.cli import (
    Parser,
    add_data_dir_flag,
    add_recipe_flags,
    add_study_flags,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
    seed,
    subset,
)
from search.config import (
    DEFAULTS,
    DEVICES,
    PRUNERS,
    RECORDED,
    RUN_SETTINGS,
    SAMPLERS,
    STUDIES_DIR,
    TASKS,
    VALIDATIONS,
    StudyConfig,
)
from search.signals import STOP_SIGNALS, Interrupted
from search.study.artifacts import add_artifacts_flag, artifact_store
from search.study.progress import StudyProgress, choose_mode, other_params
from search.study.recommend import (
    describe_recommendation,
    save_study_note,
    stored_recommendation,
)
from search.study.storage import (
    SIDECARS,
    has_password,
    masked,
    open_storage,
    sqlite_file,
    storage_errors,
)
from search.study.study import (
    best_feasible_trial,
    check_settings,
    create_study,
    find_study,
    finished_trials,
    peek_settings,
    record_best_feasible,
    record_run_settings,
)
from search.study.workers import add_worker_flags, check_worker_flags, exit_status, run_workers

if TYPE_CHECKING:
    from search.data.splits import Splits

# PyTorch and the modules that train are imported inside the functions that use them, after
# the flags are parsed: ``--help`` and a flag error answer at once.

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    # Over 80 lines: one flag after another, in --help's order; split, the order would scatter.
    d = DEFAULTS
    parser = Parser(
        prog="python -m search.run",
        description="Search the weight decay of the seed's MNIST MLP with Optuna: maximize "
        "validation accuracy while training accuracy stays under a limit. An existing study "
        "resumes with the settings it stored: `--study-name NAME` alone continues it, "
        "`--trials N` above its budget extends it; a flag that contradicts a stored setting "
        "is refused. The defaults below are a new study's.",
    )
    parser.add_argument(
        "--trials",
        type=positive_int,
        default=None,
        metavar="N",
        help="total trials in the study, counted across re-runs: a re-run "
        f"resumes up to N (default: {d.trials})",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=d.timeout,
        metavar="S",
        help="stop starting trials after S seconds (default: no limit)",
    )
    add_study_flags(parser)
    parser.add_argument(
        "--wd-low",
        type=positive_float,
        default=None,
        metavar="X",
        help=f"lowest weight decay, log-uniform range (default: {d.wd_low})",
    )
    parser.add_argument(
        "--wd-high",
        type=positive_float,
        default=None,
        metavar="X",
        help=f"highest weight decay (default: {d.wd_high})",
    )
    parser.add_argument(
        "--max-train-acc",
        type=fraction,
        default=None,
        metavar="F",
        help="constraint: final training accuracy must stay at or under F "
        f"(default: {d.max_train_acc})",
    )
    parser.add_argument(
        "--no-constraint-pruning",
        dest="constraint_pruning",
        action="store_false",
        default=None,
        help="train infeasible trials to the end instead of stopping them once "
        "their training accuracy passes the limit",
    )
    add_recipe_flags(parser)
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=None,
        help=f"Optuna sampler (default: {d.sampler})",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        default=None,
        help=f"Optuna pruner on per-epoch validation accuracy (default: {d.pruner})",
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=None,
        help=f"study seed: sampler, initial weights and batch orders (default: {d.seed})",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="mnist: the seed's MNIST MLP; synthetic: the seed pipeline's 1,000-row table "
        "of 10 features and a binary label, 800 rows train and 200 validate "
        f"(default: {d.task})",
    )
    parser.add_argument(
        "--validation",
        choices=VALIDATIONS,
        default=None,
        help="holdout: 10,000 of the training images; test: the official test "
        f"set, as the seed experiment does (default: {d.validation})",
    )
    add_data_dir_flag(parser)
    add_artifacts_flag(parser)
    parser.add_argument(
        "--subset",
        type=subset,
        default=d.subset,
        metavar="N",
        help="train on the first N training images only (and validate on at "
        "most N), for quick runs (default: all)",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=d.device,
        help="auto: CUDA when present, else CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--parallel-trials",
        type=positive_int,
        default=d.parallel_trials,
        metavar="K",
        help="trials trained side by side as one stacked model; 1 trains one at a time "
        "(default: 16 on a CPU, 64 on a GPU, 1 for recipes the pool doesn't train)",
    )
    parser.add_argument(
        "--confirm-seeds",
        type=non_negative_int,
        default=d.confirm_seeds,
        metavar="R",
        help="after the search, retrain the best candidates with R further seeds each and "
        "recommend the best one feasible in at least 80%% of them; 0: no confirmation "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--confirm-candidates",
        type=positive_int,
        default=d.confirm_candidates,
        metavar="N",
        help="how many of the best feasible trials to confirm, at most: those within 0.5 "
        "points of the best first, the others only if none of those holds "
        "(default: %(default)s)",
    )
    add_worker_flags(parser)
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress display: neither the live bar on a terminal nor the line per trial",
    )
    return parser


def parse_config(argv: list[str] | None) -> StudyConfig:
    """The flags, settled against the study they name (``settle_config``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with storage_errors(StudyConfig(study_name=args.study_name, storage=args.storage).storage_url):
        return settle_config(parser, args)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The stored settings the command line gives; a flag left out is None, so not here."""
    return {
        key: getattr(args, key)
        for key in (*RECORDED, *RUN_SETTINGS)
        if getattr(args, key) is not None
    }


def settle_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> StudyConfig:
    """The run's config: the flags given, the rest from the study if it exists, else defaults.

    A given flag that contradicts the study's recorded settings is refused, every such flag
    in one line (``check_settings``); the budget, sampler and pruner may change.
    """
    given = given_settings(args)
    rest = {
        key: value for key, value in vars(args).items() if key not in (*RECORDED, *RUN_SETTINGS)
    }
    config = StudyConfig(**rest)
    # The flags' own rules first: a mistake in them is reported as that, not as a mismatch.
    check_rules(parser, config.replace(**given))
    stored = peek_settings(config.storage_url, config.study_name) or {}
    check_settings(
        config.study_name, stored, {key: given[key] for key in RECORDED if key in given}
    )
    known = {key: stored[key] for key in (*RECORDED, *RUN_SETTINGS) if key in stored}
    config = config.replace(**(known | given))
    check_config(parser, config)
    return config


def check_rules(parser: argparse.ArgumentParser, config: StudyConfig) -> None:
    """The rules between flags; a broken one is ``parser.error``'s one line."""
    if config.wd_low >= config.wd_high:
        parser.error(
            f"--wd-low must be below --wd-high, got {config.wd_low} and {config.wd_high}: "
            "give a non-empty range"
        )
    if config.task == "synthetic" and config.validation == "test":
        parser.error(
            "--validation test: the synthetic task has no test set, it validates on its own "
            "200 held-out rows; drop --validation"
        )


def check_config(parser: argparse.ArgumentParser, config: StudyConfig) -> None:
    """The rules between flags, and the device; a broken one is ``parser.error``'s one line."""
    check_rules(parser, config)
    import torch

    from search.training.pool import check_recipe

    if config.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    if config.parallel_trials not in (None, 1):
        try:
            check_recipe(config)
        except ValueError as error:
            parser.error(f"--parallel-trials {config.parallel_trials}: {error}")
    worker_error = check_worker_flags(config)
    if worker_error is not None:
        parser.error(worker_error)


def study_attrs(data: Splits) -> dict[str, object]:
    """What a study records beside its config: the data it saw and the code that ran."""
    import torch

    return {
        "data_checksums": data.checksums,
        "train_size": len(data.train_x),
        "val_size": len(data.val_x),
        "versions": {"torch": torch.__version__, "optuna": optuna.__version__},
    }


def study_flags(config: StudyConfig, artifacts: bool = True) -> str:
    """The flags that point another command at this study, for the lines printed after a run.

    Pasted, they must work: the URL goes without its password (which would otherwise end up in
    the shell's history), quoted for the shell; ``print_summary`` says where the password goes.
    """
    flags = f"--study-name {shlex.quote(config.study_name)}"
    if config.storage is not None:
        flags += f" --storage {shlex.quote(masked(config.storage, hidden=None))}"
    if artifacts and config.artifacts is not None:
        flags += f" --artifacts {shlex.quote(str(config.artifacts))}"
    return flags


def print_summary(study: optuna.Study, config: StudyConfig) -> None:
    finished = finished_trials(study)
    best = best_feasible_trial(study)
    print(f"\nstudy {study.study_name!r}: {len(finished)} of {config.trials} trials finished")
    if best is None:
        print(
            f"no trial was feasible (final training accuracy at or under "
            f"{config.max_train_acc}): raise --wd-low/--wd-high toward stronger decay, or "
            "raise --max-train-acc"
        )
        return
    attrs = best.user_attrs
    print(
        f"best feasible trial #{best.number}: weight_decay={best.params['weight_decay']:.4g}"
        f"{other_params(best)}  "
        f"val_accuracy={attrs['val_accuracy']:.4f}  train_accuracy={attrs['train_accuracy']:.4f}"
    )
    stored = stored_recommendation(study)
    if stored is not None:
        print(describe_recommendation(stored))
    print(f"inspect: python -m search.dashboard {study_flags(config)}")
    print(f"test:    python -m search.evaluate {study_flags(config)}")
    print(f"export:  python -m search.export {study_flags(config, artifacts=False)}")
    if config.storage is not None and has_password(config.storage):
        print(
            "(the password is left out of these lines: put it in ~/.pgpass, or in the "
            "PGPASSWORD environment variable, and they connect as they are)"
        )


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    with storage_errors(config.storage_url):
        return run_study(config)


@contextmanager
def removed_unless_created(config: StudyConfig) -> Iterator[None]:
    """A new SQLite study that fails before it exists (its data, a stop) leaves no file behind.

    Opening the storage writes Optuna's schema into a new file at once; without this, a
    mistake would leave a study database that holds no study.
    """
    database = sqlite_file(config.storage_url)
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


def run_study(config: StudyConfig) -> int:
    """Open or create the study, run its trials here or in ``--workers`` processes, summarise."""
    from search.data.tasks import load_task
    from search.training.train import resolve_device

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress lines replace its own
    with removed_unless_created(config):
        if config.storage is None:
            STUDIES_DIR.mkdir(exist_ok=True)
        storage = open_storage(config)
        study = find_study(storage, config)
        if study is not None and len(finished_trials(study)) >= config.trials:
            print(f"study {config.study_name!r} already holds {config.trials} finished trials")
            if needs_confirmation(study, config):
                confirm_here(study, config, load_task(config, resolve_device(config.device)))
            print_summary(study, config)
            return 0
        device = resolve_device(config.device)
        data = load_task(config, device)
        if config.validation == "test":
            print(
                "note: validating on the official test set (--validation test), as the seed "
                "experiment does; its accuracy is then no unbiased test figure",
                file=sys.stderr,
            )
        if study is None:
            study = create_study(storage, config, study_attrs(data))
    record_run_settings(study, config)  # the next resume's budget, sampler and pruner
    done = len(finished_trials(study))
    print(
        f"study {config.study_name!r} in {masked(config.storage_url)}: {done} of "
        f"{config.trials} trials finished, training on {device}"
    )
    started = time.perf_counter()
    status = 0
    if config.workers > 1:
        del data  # each worker loads its own
        storage.engine.dispose()  # and opens its own connections; this process waits
        ends = run_workers(config, worker)
        try:
            budget_met = len(finished_trials(study)) >= config.trials
        except Exception:
            if not any(end.error for end in ends):
                raise
            budget_met = False  # the database the workers lost: they said so, in one line
        status = exit_status(ends, budget_met, config)
        if not budget_met and any(end.error for end in ends):
            return status  # their line says it all; the summary would need the database
    else:
        run_here(study, config, data)
    record_best_feasible(study)
    print(f"wall time {time.perf_counter() - started:.1f}s")
    if status == 0 and needs_confirmation(study, config):
        if config.workers > 1:
            data = load_task(config, device)
        confirm_here(study, config, data)
    print_summary(study, config)
    return status


def needs_confirmation(study: optuna.Study, config: StudyConfig) -> bool:
    """Whether the study's recommendation is missing or stale (a new best, other seeds)."""
    if config.confirm_seeds == 0 or best_feasible_trial(study) is None:
        return False
    stored = stored_recommendation(study)
    return stored is None or stored["confirm_seeds"] != config.confirm_seeds


def confirm_here(study: optuna.Study, config: StudyConfig, data: Splits) -> None:
    from search.study.confirm import confirm

    confirm(study, config, data, config.confirm_candidates)
    save_study_note(study)  # the study's note names the recommendation now


def run_here(study: optuna.Study, config: StudyConfig, data: Splits, label: str = "") -> None:
    """This process's trials, until the study's budget (shared with any other worker) is met.

    Progress shows as a live bar on a terminal, one line per trial elsewhere (a worker's
    lines carry its ``label``), nothing with ``--quiet``.
    """
    from search.study.drive import run_until_budget

    store = artifact_store(config.storage_url, config.artifacts, create=True)
    mode = choose_mode(config.quiet, workers=1 if not label else config.workers)
    with StudyProgress(study, config, mode, label=label) as progress:
        run_until_budget(study, config, data, store, [progress.finished], progress.epoch)


def worker(
    config: StudyConfig, index: int, pending: Any, ignored: frozenset[int], errors: Any
) -> None:
    """One of the ``--workers`` processes (``search.study.workers.run_workers`` starts it).

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
        study = find_study(open_storage(config), config)
        assert study is not None, "the parent process creates the study"
        # Seeded alike, every worker's sampler would propose the same first trials. Optuna
        # reseeds the threads of study.optimize(n_jobs=...) the same way.
        study.sampler.reseed_rng()
        device = resolve_device(config.device)
        use_one_cpu_thread(device)
        run_here(study, config, load_task(config, device), label=f"[worker {index}] ")
    return 0


if __name__ == "__main__":
    run_command(main)
