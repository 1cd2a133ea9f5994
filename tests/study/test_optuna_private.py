"""What ``search.study.optuna_private`` relies on in Optuna's private API, pinned: an Optuna
upgrade that changes any of it fails here, not in a study."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.trial import TrialState, create_trial

import search.study.optuna_private as private
from search.study.optuna_private import (
    CACHE_CALLS,
    REPEATING_LOGGERS,
    STALE_TRIAL_IDS,
    backend_of,
    fail_trial,
    heartbeat_storage,
    rdb_stale_trial_ids,
    record_heartbeat,
    set_trial_system_attr,
    stale_trial_numbers,
    storage_of,
)
from tests.helpers import GRACE_S, age_heartbeats
from tests.study.storage_calls import recorded_study_calls

SPACE = {"weight_decay": FloatDistribution(1e-6, 1e-1, log=True)}


def rdb(tmp_path: Path, **heartbeat: int) -> RDBStorage:
    with warnings.catch_warnings():  # heartbeats are "experimental"
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RDBStorage(f"sqlite:///{tmp_path / 'private.db'}", **heartbeat)


def fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def test_storage_of_is_the_in_memory_storage_the_study_was_created_with() -> None:
    storage = InMemoryStorage()
    study = optuna.create_study(storage=storage)
    assert storage_of(study) is storage


def test_storage_of_reaches_the_database_the_study_was_created_with(tmp_path: Path) -> None:
    # Optuna wraps an RDBStorage in its own cache (not the same object): what the sibling
    # confirmation study relies on is that storage_of opens the same database.
    storage = rdb(tmp_path)
    study = optuna.create_study(storage=storage, study_name="searched")
    found = storage_of(study)
    assert found is storage or getattr(found, "_backend", None) is storage
    sibling = optuna.create_study(storage=found, study_name="searched-confirm")
    sibling.add_trial(create_trial(value=0.9, params={"weight_decay": 1e-3}, distributions=SPACE))
    assert {s.study_name for s in storage.get_all_studies()} == {"searched", "searched-confirm"}
    again = optuna.load_study(study_name="searched-confirm", storage=storage)
    assert len(again.trials) == 1


def test_set_trial_system_attr_writes_an_attribute_the_frozen_trial_reads(
    tmp_path: Path,
) -> None:
    storage = rdb(tmp_path)
    study = optuna.create_study(storage=storage, study_name="attrs", direction="maximize")
    running = study.ask(SPACE)
    set_trial_system_attr(running, "history", {"epoch": [1, 2], "val_accuracy": [0.9, 0.91]})
    set_trial_system_attr(running, "constraints", [-0.01])
    assert study.trials[0].system_attrs["history"] == {
        "epoch": [1, 2],
        "val_accuracy": [0.9, 0.91],
    }
    study.tell(running, 0.91)
    frozen = optuna.load_study(study_name="attrs", storage=storage).trials[0]
    assert frozen.system_attrs["constraints"] == [-0.01]
    assert frozen.user_attrs == {}  # system, not user: out of the dashboard's attribute table


def test_heartbeat_storage_is_none_without_heartbeats(tmp_path: Path) -> None:
    assert heartbeat_storage(optuna.create_study()) is None  # InMemoryStorage
    assert heartbeat_storage(optuna.create_study(storage=rdb(tmp_path))) is None


def test_heartbeat_storage_is_the_studys_storage_with_heartbeats_on(tmp_path: Path) -> None:
    storage = rdb(tmp_path, heartbeat_interval=5, grace_period=10)
    study = optuna.create_study(storage=storage)
    beating = heartbeat_storage(study)
    assert beating is storage_of(study)
    assert beating.get_heartbeat_interval() == 5


def test_record_heartbeat_keeps_a_running_trial_alive_until_it_stops(tmp_path: Path) -> None:
    # Beats aged in the database past the grace period stand for a long pause: no waiting.
    storage = rdb(tmp_path, heartbeat_interval=1, grace_period=GRACE_S)
    study = optuna.create_study(storage=storage, study_name="beats")
    beating = heartbeat_storage(study)
    assert beating is not None
    with pytest.warns(UserWarning, match="supposed to be used with Study.optimize"):
        running = study.ask(SPACE)  # the ask-and-tell loop that must beat itself
    record_heartbeat(beating, running)
    age_heartbeats(storage)
    record_heartbeat(beating, running)  # beat again: its age starts over
    fail_stale(study)
    assert study.trials[0].state == TrialState.RUNNING
    age_heartbeats(storage)  # no beat since: the worker "died"
    fail_stale(study)
    assert study.trials[0].state == TrialState.FAIL


def test_repeating_loggers_exist_once_optuna_is_imported() -> None:
    known = logging.Logger.manager.loggerDict
    for name in REPEATING_LOGGERS:
        assert isinstance(known.get(name), logging.Logger), name
        assert name.startswith("optuna.")


@pytest.mark.parametrize(
    ("states", "numbers"),
    [
        (None, [0, 1, 2, 3, 4]),
        ((TrialState.COMPLETE,), [0, 3]),
        ((TrialState.COMPLETE, TrialState.PRUNED), [0, 1, 3]),
        ((TrialState.RUNNING, TrialState.FAIL), [2, 4]),
    ],
)
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_get_trials_without_copies_matches_optunas_private_get_trials(
    backend: str, states, numbers: list[int], tmp_path: Path
) -> None:
    storage = InMemoryStorage() if backend == "memory" else rdb(tmp_path)
    study = optuna.create_study(storage=storage, direction="maximize")
    for state, value in [
        (TrialState.COMPLETE, 0.9),
        (TrialState.PRUNED, None),
        (TrialState.FAIL, None),
        (TrialState.COMPLETE, 0.95),
    ]:
        study.add_trial(
            create_trial(
                state=state, value=value, params={"weight_decay": 1e-3}, distributions=SPACE
            )
        )
    study.ask(SPACE)  # running
    public = study.get_trials(deepcopy=False, states=states)
    assert public == study._get_trials(deepcopy=False, states=states)
    assert [t.number for t in public] == numbers


def test_every_function_of_the_adapter_is_pinned_here() -> None:
    # A new reach into Optuna's private API belongs in the adapter with a test in this file.
    defined = {
        name
        for name, value in vars(private).items()
        if callable(value) and getattr(value, "__module__", None) == private.__name__
    }
    assert defined == {
        "backend_of",
        "fail_trial",
        "stale_trial_numbers",
        "storage_of",
        "set_trial_system_attr",
        "heartbeat_storage",
        "record_heartbeat",
        "rdb_stale_trial_ids",
    }


def test_backend_of_is_the_storage_behind_optunas_cache(tmp_path: Path) -> None:
    storage = rdb(tmp_path)
    study = optuna.create_study(storage=storage)
    assert backend_of(study) is storage  # what the study was given, not Optuna's wrapper
    memory = InMemoryStorage()
    assert backend_of(optuna.create_study(storage=memory)) is memory


def test_stale_trials_are_named_and_failed_without_a_retry(tmp_path: Path) -> None:
    storage = rdb(tmp_path, heartbeat_interval=1, grace_period=GRACE_S)
    study = optuna.create_study(storage=storage, study_name="stale")
    with pytest.warns(UserWarning, match="supposed to be used with Study.optimize"):
        running = study.ask(SPACE)
    beating = heartbeat_storage(study)
    assert beating is not None
    record_heartbeat(beating, running)
    assert stale_trial_numbers(study) == set()
    age_heartbeats(storage)  # past the grace period
    assert stale_trial_numbers(study) == {0}
    assert fail_trial(study, 0) is True
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # no retry queued
    assert fail_trial(study, 0) is False  # ended already


def test_optunas_cache_calls_the_private_methods_the_adapter_names(tmp_path: Path) -> None:
    # If an upgrade routes the cache through other private methods, a storage that changes
    # how calls behave (search.study.outage) would miss them: CACHE_CALLS must follow.
    calls = recorded_study_calls(tmp_path)
    assert {c for c in calls if c.startswith("_")} == {*CACHE_CALLS, STALE_TRIAL_IDS}
    for name in (*CACHE_CALLS, STALE_TRIAL_IDS):
        assert callable(getattr(RDBStorage, name))


def test_rdb_stale_trial_ids_is_the_storages_own_answer(tmp_path: Path) -> None:
    storage = rdb(tmp_path, heartbeat_interval=1, grace_period=GRACE_S)
    study = optuna.create_study(storage=storage, study_name="stale-ids")
    with pytest.warns(UserWarning, match="supposed to be used with Study.optimize"):
        running = study.ask(SPACE)
    record_heartbeat(storage, running)
    study_id = storage.get_study_id_from_name("stale-ids")
    assert rdb_stale_trial_ids(storage, study_id) == []
    age_heartbeats(storage)  # past the grace period
    assert rdb_stale_trial_ids(storage, study_id) == [running._trial_id]
