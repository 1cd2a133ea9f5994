"""Storage URL -> Optuna study: storage, sampler, pruner, budget, resume, best feasible trial.

The study database is the source of truth: a study records the settings it was created with,
and a resumed study must agree with them, or its trials would not be comparable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.study import MaxTrialsCallback, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import save_note

from search.config import StudyConfig
from search.errors import UserError

logger = logging.getLogger(__name__)

# States that use up the budget: a failed trial is retried, so it doesn't count.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# Median pruning: wait for this many complete trials before pruning anything, and never judge a
# trial on its first epochs, where a strongly regularised trial that learns slowly but ends well
# would look worse than the trials that finished.
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_EPOCHS = 3

# SQLite waits this long for a lock instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 60


class StudyError(UserError):
    """The storage or the study can't be used as asked: one line saying why and what to do."""

    exit_code = 2  # a bad --storage or --study-name is a usage error


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for every message a user sees."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """Samplers see feasibility through ``trial.set_constraint``; no ``constraints_func``."""
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=config.seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=config.seed)
    raise ValueError(f"unknown sampler {config.sampler!r}")


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS + 1
        )
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs)
    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {config.pruner!r}")


def make_storage(url: str) -> RDBStorage:
    """An RDB storage for ``url``, or a StudyError naming the (masked) URL and the problem."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        database = sqlalchemy.engine.make_url(url).database
        if database and database != ":memory:" and not Path(database).parent.is_dir():
            raise StudyError(
                f"--storage {url}: directory {Path(database).parent} does not exist; "
                "create it or point --storage elsewhere"
            )
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        raise StudyError(f"--storage {masked(url)}: {first_line(error)}") from None


def first_line(error: BaseException) -> str:
    """The first line of an exception's message: SQLAlchemy's run to many."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_existing_study(study_name: str, storage: str | None) -> optuna.Study:
    """An existing study, for the commands that only read one; never creates a database.

    Args:
        storage: the URL, or None for the default SQLite file of ``study_name``.
    """
    url = storage or StudyConfig(study_name=study_name).storage_url
    database = sqlalchemy.engine.make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:" and not Path(database).is_file():
        raise StudyError(
            f"no study database at {database}: run `python -m search.run --study-name "
            f"{study_name}` first, or pass the study's --storage"
        )
    rdb = make_storage(url)
    names = [s.study_name for s in rdb.get_all_studies()]
    if study_name not in names:
        raise StudyError(
            f"no study named {study_name!r} in {masked(url)} (it holds: "
            f"{', '.join(names) or 'none'}): pass --study-name"
        )
    return optuna.load_study(study_name=study_name, storage=rdb)


def find_study(storage: RDBStorage, config: StudyConfig) -> optuna.Study | None:
    """The existing study of this name, checked against ``config``; None if there is none."""
    names = [s.study_name for s in storage.get_all_studies()]
    if config.study_name not in names:
        return None
    study = optuna.load_study(
        study_name=config.study_name,
        storage=storage,
        sampler=make_sampler(config),
        pruner=make_pruner(config),
    )
    if study.directions != [StudyDirection.MAXIMIZE]:
        raise StudyError(
            f"study {config.study_name!r} in {masked(config.storage_url)} is not a single "
            "maximized objective (this search maximizes validation accuracy); "
            "choose another --study-name"
        )
    recorded = study.user_attrs.get("config", {})
    for key, value in config.recorded().items():
        if key in recorded and recorded[key] != value:
            flag = "--" + key.replace("_", "-")
            raise StudyError(
                f"study {config.study_name!r} was created with {flag} {recorded[key]}, got "
                f"{value}: resume it with its own settings or choose another --study-name"
            )
    return study


def create_study(
    storage: RDBStorage, config: StudyConfig, study_attrs: dict[str, Any]
) -> optuna.Study:
    """A new study that records ``config`` and ``study_attrs`` (data checksums and the like)."""
    # load_if_exists: another worker may have created it since find_study looked.
    study = optuna.create_study(
        storage=storage,
        study_name=config.study_name,
        direction="maximize",
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    if "config" not in study.user_attrs:
        study.set_user_attr("config", config.recorded())
        for key, value in study_attrs.items():
            study.set_user_attr(key, value)
    return study


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def best_feasible_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete, feasible trial with the highest validation accuracy, if any.

    Optuna's ``study.best_trial`` already skips infeasible trials; this only turns its
    "nothing yet" errors into None.
    """
    try:
        return study.best_trial
    except ValueError:
        return None


def record_best_feasible(study: optuna.Study) -> None:
    """Store the best feasible trial on the study, where export, report and dashboard read it.

    optuna-dashboard's Best Trial card ignores feasibility, so the study's note (shown at the
    top of its page) names the best feasible trial too.
    """
    best = best_feasible_trial(study)
    if (
        best is None
        or study.user_attrs.get("best_feasible_trial", {}).get("number") == best.number
    ):
        return
    summary = {
        "number": best.number,
        "weight_decay": best.params["weight_decay"],
        "val_accuracy": best.user_attrs.get("val_accuracy"),
        "train_accuracy": best.user_attrs.get("train_accuracy"),
    }
    study.set_user_attr("best_feasible_trial", summary)
    save_note(study, best_feasible_note(study, summary))


def best_feasible_note(study: optuna.Study, summary: dict[str, Any]) -> str:
    limit = study.user_attrs.get("config", {}).get("max_train_acc")
    return (
        f"## Best feasible trial: #{summary['number']}\n\n"
        f"weight_decay = {summary['weight_decay']:.3g}, "
        f"validation accuracy = {summary['val_accuracy']:.4f}, "
        f"training accuracy = {summary['train_accuracy']:.4f} (limit {limit}).\n\n"
        "The Best Trial card does not know about the constraint; this note does. "
        "A trial's `feasible` user attribute and its constraint value "
        "(training accuracy minus the limit, feasible when <= 0) are on its page."
    )


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    config: StudyConfig,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
) -> int:
    """Run trials until the study holds ``config.trials`` finished ones; returns how many ran.

    The budget is the study's, not this process's: a re-run resumes and runs only what is
    missing, and MaxTrialsCallback stops this process once other workers have filled it.
    """
    remaining = config.trials - len(finished_trials(study))
    if remaining <= 0:
        return 0
    before = len(study.trials)
    study.optimize(
        objective,
        n_trials=remaining,
        timeout=config.timeout,
        callbacks=[
            MaxTrialsCallback(config.trials, states=FINISHED),
            lambda study, trial: record_best_feasible(study),
            *(callbacks or []),
        ],
        catch=(),
    )
    return len(study.trials) - before
