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
from optuna.trial import FrozenTrial, TrialState

from search.cli import (
    Parser,
    add_data_dir_flag,
    add_recipe_flags,
    add_study_flags,
    fraction,
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
    SAMPLERS,
    STUDIES_DIR,
    TASKS,
    VALIDATIONS,
    StudyConfig,
)
from search.signals import STOP_SIGNALS, Interrupted
from search.study.artifacts import add_artifacts_flag, artifact_store
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
    create_study,
    find_study,
    finished_trials,
    record_best_feasible,
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
        "validation accuracy while training accuracy stays under a limit.",
    )
    parser.add_argument(
        "--trials",
        type=positive_int,
        default=d.trials,
        metavar="N",
        help="total trials in the study, counted across re-runs: a re-run "
        "resumes up to N (default: %(default)s)",
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
        default=d.wd_low,
        metavar="X",
        help="lowest weight decay, log-uniform range (default: %(default)s)",
    )
    parser.add_argument(
        "--wd-high",
        type=positive_float,
        default=d.wd_high,
        metavar="X",
        help="highest weight decay (default: %(default)s)",
    )
    parser.add_argument(
        "--max-train-acc",
        type=fraction,
        default=d.max_train_acc,
        metavar="F",
        help="constraint: final training accuracy must stay at or under F (default: %(default)s)",
    )
    parser.add_argument(
        "--no-constraint-pruning",
        dest="constraint_pruning",
        action="store_false",
        default=d.constraint_pruning,
        help="train infeasible trials to the end instead of stopping them once "
        "their training accuracy passes the limit",
    )
    add_recipe_flags(parser)
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=d.sampler,
        help="Optuna sampler (default: %(default)s)",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        default=d.pruner,
        help="Optuna pruner on per-epoch validation accuracy (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=d.seed,
        help="study seed: sampler, initial weights and batch orders (default: %(default)s)",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default=d.task,
        help="mnist: the seed's MNIST MLP; synthetic: the seed pipeline's 1,000-row table "
        "of 10 features and a binary label, 800 rows train and 200 validate "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--validation",
        choices=VALIDATIONS,
        default=d.validation,
        help="holdout: 10,000 of the training images; test: the official test "
        "set, as the seed experiment does (default: %(default)s)",
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
    add_worker_flags(parser)
    return parser


def parse_config(argv: list[str] | None) -> StudyConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wd_low >= args.wd_high:
        parser.error(
            f"--wd-low must be below --wd-high, got {args.wd_low} and {args.wd_high}: "
            "give a non-empty range"
        )
    if args.task == "synthetic" and args.validation == "test":
        parser.error(
            "--validation test: the synthetic task has no test set, it validates on its own "
            "200 held-out rows; drop --validation"
        )
    import torch

    from search.training.pool import check_recipe

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    if args.parallel_trials not in (None, 1):
        try:
            check_recipe(StudyConfig(**vars(args)))
        except ValueError as error:
            parser.error(f"--parallel-trials {args.parallel_trials}: {error}")
    worker_error = check_worker_flags(args)
    if worker_error is not None:
        parser.error(worker_error)
    return StudyConfig(**vars(args))


def study_attrs(data: Splits) -> dict[str, object]:
    """What a study records beside its config: the data it saw and the code that ran."""
    import torch

    return {
        "data_checksums": data.checksums,
        "train_size": len(data.train_x),
        "val_size": len(data.val_x),
        "versions": {"torch": torch.__version__, "optuna": optuna.__version__},
    }


def other_params(trial: FrozenTrial) -> str:
    """The trial's parameters beside weight decay (``--search-space full``), or ''."""
    return "".join(f"  {k}={v}" for k, v in trial.params.items() if k != "weight_decay")


def describe(trial: FrozenTrial) -> str:
    """One progress line for a finished trial."""
    attrs = trial.user_attrs
    line = f"trial {trial.number:3d}  weight_decay={trial.params.get('weight_decay', 0):.2e}"
    line += other_params(trial)
    if "val_accuracy" in attrs:
        line += f"  val_acc={attrs['val_accuracy']:.4f}  train_acc={attrs['train_accuracy']:.4f}"
        line += f"  epochs={attrs['epochs_run']}  {attrs['duration_s']:.1f}s"
    if trial.state == TrialState.COMPLETE:
        return line + ("  feasible" if attrs.get("feasible") else "  INFEASIBLE")
    if trial.state == TrialState.PRUNED:
        return line + f"  pruned ({attrs.get('pruned_reason', 'pruned')})"
    return line + f"  {trial.state.name.lower()}"


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
    print_summary(study, config)
    return status


def run_here(study: optuna.Study, config: StudyConfig, data: Splits, label: str = "") -> None:
    """This process's trials, until the study's budget (shared with any other worker) is met."""
    from search.study.drive import run_until_budget

    store = artifact_store(config.storage_url, config.artifacts, create=True)
    callbacks = [lambda study, trial: print(label + describe(trial), flush=True)]
    run_until_budget(study, config, data, store, callbacks)


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
