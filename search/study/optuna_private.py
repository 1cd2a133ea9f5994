"""The one adapter over Optuna's private API: what we need that Optuna does not make public.

Each function and name says what it stands for and why no public call does it, the private
methods that ``search.study.outage``'s storage overrides included. ``tests/study/
test_optuna_private.py`` pins the behaviour relied on (which private methods Optuna's own cache
calls, among it), so an Optuna upgrade that changes it fails a test, not a study. Nothing else
in the project names anything in ``optuna.*._*``.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage

# Optuna's heartbeat lives in a private module; ask-and-tell loops (the trial pool) must beat
# themselves, since Optuna's own heartbeat thread runs only inside ``study.optimize``.
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import TrialState

# The loggers that log a failed trial's error again after our loops have reported it once.
REPEATING_LOGGERS = ("optuna.study._optimize", "optuna.storages._rdb.storage")

# The private ``RDBStorage`` methods that Optuna's cache in front of an RDB storage (the
# private ``_CachedStorage``, which ``optuna.create_study`` and ``load_study`` put there) calls
# in place of the public ones: a storage that changes how its calls behave (riding through an
# outage, ``search.study.outage``) must change these as well.
CACHE_CALLS = ("_create_new_trial", "_get_trials", "_set_trial_param", "_get_best_trial_id")
# The private ``RDBStorage`` method that ``optuna.storages.fail_stale_trials`` and
# ``stale_trial_numbers`` ask which trials are stale: a storage that must not judge trials
# stale for a while (after an outage, every heartbeat is old) overrides this one.
STALE_TRIAL_IDS = "_get_stale_trial_ids"


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study lives in: a sibling study (the confirmation runs) opens the same
    one, and the heartbeat writes to it. ``optuna.Study`` keeps it private."""
    storage = study._storage
    assert isinstance(storage, BaseStorage)
    return storage


def set_trial_system_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    """A system attribute of a running trial. Public ``Trial`` writes only user attributes;
    system attributes are where a trial's per-epoch history stays out of the dashboard's
    attribute table, and where optuna-dashboard reads the legacy ``constraints`` list."""
    trial.storage.set_trial_system_attr(trial._trial_id, key, value)


def heartbeat_storage(study: optuna.Study) -> BaseHeartbeat | None:
    """The study's storage if it keeps heartbeats and has them switched on, else None."""
    storage = storage_of(study)
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        return storage
    return None


def record_heartbeat(storage: BaseHeartbeat, trial: optuna.Trial) -> None:
    """Beat for a running trial, as ``study.optimize``'s heartbeat thread would."""
    storage.record_heartbeat(trial._trial_id)


def stale_trial_numbers(study: optuna.Study) -> set[int]:
    """The study's RUNNING trials whose heartbeat is older than the storage's grace period.

    ``optuna.storages.fail_stale_trials`` asks the same and fails them at once, queueing a
    retry of each; ending a run whose budget is met needs the question without those.
    """
    storage = heartbeat_storage(study)
    if storage is None:
        return set()
    ids = set(getattr(storage, STALE_TRIAL_IDS)(study._study_id))
    return {t.number for t in study.get_trials(deepcopy=False) if t._trial_id in ids}


def fail_trial(study: optuna.Study, number: int) -> bool:
    """Mark trial ``number`` failed without running any callback (no retry is queued); False
    if it had ended already. ``study.tell`` can't: it takes only trials of this process."""
    trial = study.get_trials(deepcopy=False)[number]
    try:
        return bool(storage_of(study).set_trial_state_values(trial._trial_id, TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def backend_of(study: optuna.Study) -> BaseStorage:
    """The storage behind Optuna's cache: ``optuna.create_study`` and ``load_study`` wrap an
    RDB storage in a private ``_CachedStorage``, which hides what the storage adds (its
    ``riding`` through an outage, ``search.study.outage``)."""
    storage = storage_of(study)
    backend = getattr(storage, "_backend", storage)
    assert isinstance(backend, BaseStorage)
    return backend


def rdb_stale_trial_ids(storage: RDBStorage, study_id: int) -> list[int]:
    """``RDBStorage``'s own answer to ``STALE_TRIAL_IDS``, for an override to fall back on."""
    return list(getattr(RDBStorage, STALE_TRIAL_IDS)(storage, study_id))
