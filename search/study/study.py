"""The study: create / find / load, and the settings a resume must agree with.

The study database is the source of truth: a study records the settings it was created with,
and a resumed study must agree with them, or its trials would not be comparable.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection

from search.config import StudyConfig, flag_of
from search.study.backends import backend_for
from search.study.record import record_config, recorded_settings, stored_settings
from search.study.storage import StudyError, make_storage, masked


def load_existing_study(study_name: str, storage: str | None) -> optuna.Study:
    """An existing study, for the commands that only read one; never creates a database.

    Args:
        storage: the URL, or None for the default SQLite file of ``study_name``.
    """
    url = StudyConfig(study_name=study_name, storage=storage).storage_url
    database = backend_for(url).missing_file()
    if database is not None:
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
    backend = backend_for(url)
    if backend.in_memory or backend.missing_file() is not None:
        return None  # no study before this process makes one
    storage = make_storage(url)
    if study_name not in [s.study_name for s in storage.get_all_studies()]:
        return None
    return stored_settings(optuna.load_study(study_name=study_name, storage=storage))


def trials_so_far(storage: BaseStorage, study_name: str) -> int | None:
    """How many trials study ``study_name`` holds (any state); None if there is no such study."""
    if study_name not in [s.study_name for s in storage.get_all_studies()]:
        return None
    return storage.get_n_trials(storage.get_study_id_from_name(study_name))


def find_study(
    storage: BaseStorage,
    config: StudyConfig,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study | None:
    """The existing study of this name, checked against ``config``; None if there is none.

    The sampler and pruner are the engine's (``search.engine.strategy``): the record only
    opens the study with them.
    """
    if trials_so_far(storage, config.study_name) is None:
        return None
    study = optuna.load_study(
        study_name=config.study_name, storage=storage, sampler=sampler, pruner=pruner
    )
    if study.directions != [StudyDirection.MAXIMIZE]:
        raise StudyError(
            f"study {config.study_name!r} in {masked(config.storage_url)} is not a single "
            "maximized objective (this search maximizes validation accuracy); "
            "choose another --study-name"
        )
    check_settings(config.study_name, recorded_settings(study), config.recorded())
    return study


def check_settings(name: str, stored: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse settings that contradict the ones study ``name`` stored, all in one line.

    Args:
        stored: the study's recorded settings (``StudyConfig.recorded()`` at creation).
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


def create_study(
    storage: BaseStorage,
    config: StudyConfig,
    study_attrs: dict[str, Any],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """A new study that records ``config`` and ``study_attrs`` (data checksums and the like)."""
    # load_if_exists: another worker may have created it since find_study looked.
    study = optuna.create_study(
        storage=storage,
        study_name=config.study_name,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if record_config(study, config):
        for key, value in study_attrs.items():
            study.set_user_attr(key, value)
    return study
