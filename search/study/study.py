"""The study: sampler, pruner, create / find / load, and its best feasible trial.

The study database is the source of truth: a study records the settings it was created with,
and a resumed study must agree with them, or its trials would not be comparable.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna_dashboard import save_note

from search.config import CPU_PARALLEL_TRIALS, RUN_SETTINGS, StudyConfig, flag_of
from search.study.budget import FINISHED
from search.study.notes import best_feasible_note
from search.study.sampling import ConstrainedMedianPruner, EdgeSampler, best_feasible_trial
from search.study.storage import StudyError, make_storage, masked
from search.training.seeds import derive_seed

# Median pruning: wait for this many complete trials before pruning anything, and never judge a
# trial on its first epochs, where a strongly regularised trial that learns slowly but ends well
# would look worse than the trials that finished. The warm-up is 30% of a trial's epochs and at
# least 3 epochs: 3 of the seed's 10, 90 of a 300-epoch run on the small synthetic table.
RUN_ATTR = "run_settings"  # the study user attribute that holds RUN_SETTINGS

MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_EPOCHS = 3
MEDIAN_WARMUP_FRACTION = 0.3

# The edge sampler's QMC start is never shorter than TPE's own random start.
EDGE_STARTUP_MIN = 10


def make_sampler(config: StudyConfig, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    """Samplers see feasibility through ``trial.set_constraint``; no ``constraints_func``.

    A new study's sampler is seeded with the study seed. A resumed one is seeded with
    (study seed, trials so far): seeded alike, it would propose again the very values the
    interrupted run began with.
    """
    seed = config.seed if trials_so_far == 0 else derive_seed(config.seed, trials_so_far)
    if config.sampler == "edge":
        return edge_sampler(config, seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"unknown sampler {config.sampler!r}")


def edge_sampler(config: StudyConfig, seed: int) -> EdgeSampler:
    """TPE with the constant liar, edge bisection on top, and a QMC start.

    The first trials, asked all at once by the pool, are spread evenly by a scrambled Sobol
    sequence rather than drawn at random: random draws leave gaps of a decade that the edge
    can hide in. A start of 16 (a CPU pool's worth) spaces five decades 0.3 decades apart.
    """
    n_startup = max(EDGE_STARTUP_MIN, min(CPU_PARALLEL_TRIALS, config.trials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # QMCSampler is "experimental"
        startup = optuna.samplers.QMCSampler(
            scramble=True,
            seed=seed,
            warn_independent_sampling=False,
            warn_asynchronous_seeding=False,
        )
    base = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    # Weight decay lowers training accuracy, in expectation: the feasible side is above.
    return EdgeSampler(base, startup, n_startup, param="weight_decay", direction=1)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        warmup = max(MEDIAN_WARMUP_EPOCHS, int(MEDIAN_WARMUP_FRACTION * config.epochs))
        # Steps are epochs from 1; the pruner judges a step when step >= n_warmup_steps.
        return ConstrainedMedianPruner(MEDIAN_STARTUP_TRIALS, warmup + 1)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs)
    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {config.pruner!r}")


def load_existing_study(study_name: str, storage: str | None) -> optuna.Study:
    """An existing study, for the commands that only read one; never creates a database.

    Args:
        storage: the URL, or None for the default SQLite file of ``study_name``.
    """
    url = StudyConfig(study_name=study_name, storage=storage).storage_url
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


def peek_settings(url: str, study_name: str) -> dict[str, Any] | None:
    """The settings study ``study_name`` stored (``stored_settings``), or None if there is no
    such study; creates nothing, not even an empty SQLite file."""
    if url.startswith("sqlite"):
        database = sqlalchemy.engine.make_url(url).database
        # In memory, or not there yet: no study before this process makes one.
        if not database or database == ":memory:" or not Path(database).is_file():
            return None
    storage = make_storage(url)
    if study_name not in [s.study_name for s in storage.get_all_studies()]:
        return None
    return stored_settings(optuna.load_study(study_name=study_name, storage=storage))


def find_study(storage: RDBStorage, config: StudyConfig) -> optuna.Study | None:
    """The existing study of this name, checked against ``config``; None if there is none."""
    names = [s.study_name for s in storage.get_all_studies()]
    if config.study_name not in names:
        return None
    trials_so_far = storage.get_n_trials(storage.get_study_id_from_name(config.study_name))
    study = optuna.load_study(
        study_name=config.study_name,
        storage=storage,
        sampler=make_sampler(config, trials_so_far),
        pruner=make_pruner(config),
    )
    if study.directions != [StudyDirection.MAXIMIZE]:
        raise StudyError(
            f"study {config.study_name!r} in {masked(config.storage_url)} is not a single "
            "maximized objective (this search maximizes validation accuracy); "
            "choose another --study-name"
        )
    check_settings(config.study_name, study.user_attrs.get("config", {}), config.recorded())
    return study


def check_settings(name: str, stored: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse settings that contradict the ones study ``name`` stored, all in one line.

    Args:
        stored: the study's ``config`` user attribute (``StudyConfig.recorded()`` at creation).
        given: the settings asked for now, by field name.

    Raises:
        StudyError: one or more differ; the message lists every one with both values.
    """
    differ = [
        f"{flag_of(key)} {stored[key]} (got {value})"
        for key, value in given.items()
        if key in stored and stored[key] != value
    ]
    if differ:
        raise StudyError(
            f"study {name!r} was created with {', '.join(differ)}: leave these flags out to "
            "resume it with its own settings, or choose another --study-name"
        )


def stored_settings(study: optuna.Study) -> dict[str, Any]:
    """What a study stored of its settings: its recorded config and its run settings."""
    return {**study.user_attrs.get(RUN_ATTR, {}), **study.user_attrs.get("config", {})}


def record_run_settings(study: optuna.Study, config: StudyConfig) -> None:
    """Store the budget, sampler and pruner this run uses: the next resume's defaults."""
    settings = {key: getattr(config, key) for key in RUN_SETTINGS}
    if study.user_attrs.get(RUN_ATTR) != settings:
        study.set_user_attr(RUN_ATTR, settings)


def create_study(
    storage: BaseStorage, config: StudyConfig, study_attrs: dict[str, Any]
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
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and still there
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val_accuracy"])  # the dashboard's axis, not "Objective 0"
        for key, value in study_attrs.items():
            study.set_user_attr(key, value)
    return study


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


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
