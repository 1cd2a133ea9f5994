"""Which storage methods a study's life calls, recorded on a real SQLite storage: what
``search.study.optuna_private`` and ``search.study.outage`` must cover."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from search.study.optuna_private import (
    fail_trial,
    heartbeat_storage,
    record_heartbeat,
    set_trial_system_attr,
    stale_trial_numbers,
    storage_of,
)

SPACE = {"weight_decay": FloatDistribution(1e-6, 1e-1, log=True)}


class Recording(RDBStorage):
    """An RDB storage that notes every method called on it from outside (not its own calls
    to itself): which calls a study, Optuna's cache in front of it included, makes."""

    calls: set[str] = set()
    depth = 1  # not while it is being made: the calls are what a study makes


def _recorded(name: str) -> Any:
    method = getattr(RDBStorage, name)

    def recorded(self: Recording, *args: Any, **kwargs: Any) -> Any:
        if self.depth == 0:
            self.calls.add(name)
        self.depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self.depth -= 1

    return recorded


for _name, _value in vars(RDBStorage).items():
    if inspect.isfunction(_value) and not _name.startswith("__"):  # not static methods
        setattr(Recording, _name, _recorded(_name))


def recorded_study_calls(tmp_path: Path) -> set[str]:
    """The storage methods a study's life calls: create, ask, report, attributes, tell,
    enqueue, read back, heartbeats, stale trials, a second study beside it, delete."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        storage = Recording(
            f"sqlite:///{tmp_path / 'recorded.db'}", heartbeat_interval=1, grace_period=60
        )
    storage.calls, storage.depth = set(), 0
    study = optuna.create_study(storage=storage, study_name="recorded", direction="maximize")
    study.set_user_attr("config", {"trials": 2})
    with pytest.warns(UserWarning, match="supposed to be used with Study.optimize"):
        trial = study.ask(SPACE)
    beating = heartbeat_storage(study)
    assert beating is not None
    record_heartbeat(beating, trial)
    trial.report(0.5, 1)
    trial.set_user_attr("val_accuracy", 0.5)
    set_trial_system_attr(trial, "history", {"epoch": [1]})
    study.tell(trial, 0.5)
    study.enqueue_trial({"weight_decay": 1e-3})
    with pytest.warns(UserWarning, match="supposed to be used with Study.optimize"):
        queued = study.ask(SPACE)
    assert stale_trial_numbers(study) == set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    assert fail_trial(study, queued.number) is True
    loaded = optuna.load_study(study_name="recorded", storage=storage)
    assert [t.state for t in loaded.get_trials(deepcopy=False)] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
    ]
    assert loaded.best_trial.number == 0 and loaded.user_attrs["config"] == {"trials": 2}
    optuna.get_all_study_summaries(storage)
    optuna.create_study(storage=storage_of(study), study_name="recorded-confirm")
    optuna.delete_study(study_name="recorded-confirm", storage=storage)
    return storage.calls
