"""The sampler and pruner a config names, seeded for a new or a resumed study, and the new
study that records its config."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.config import PRUNERS, SAMPLERS, StudyConfig
from search.engine.sampling import ConstrainedMedianPruner, EdgeSampler
from search.engine.strategy import make_pruner, make_sampler, new_study
from search.study.record import recorded_settings, stored_config
from search.study.storage import make_storage

SAMPLER_CLASSES = {
    "edge": EdgeSampler,
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
}
PRUNER_CLASSES = {
    "median": ConstrainedMedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}
SPACE = FloatDistribution(1e-6, 1e-1, log=True)


def test_every_sampler_and_pruner_choice_has_a_class_here() -> None:
    assert set(SAMPLER_CLASSES) == set(SAMPLERS) and set(PRUNER_CLASSES) == set(PRUNERS)


@pytest.mark.parametrize("name", SAMPLERS)
def test_make_sampler_returns_the_named_sampler(name: str) -> None:
    assert type(make_sampler(StudyConfig(sampler=name))) is SAMPLER_CLASSES[name]


@pytest.mark.parametrize("name", PRUNERS)
def test_make_pruner_returns_the_named_pruner(name: str) -> None:
    assert type(make_pruner(StudyConfig(pruner=name))) is PRUNER_CLASSES[name]


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'cmaes'"):
        make_sampler(StudyConfig(sampler="cmaes"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown pruner 'sha'"):
        make_pruner(StudyConfig(pruner="sha"))  # type: ignore[arg-type]


def first_values(sampler: optuna.samplers.BaseSampler, n: int = 3) -> list[float]:
    """The first ``n`` weight decays ``sampler`` proposes, asked together as the pool asks."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return [study.ask({"weight_decay": SPACE}).params["weight_decay"] for _ in range(n)]


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_resumed_sampler_is_seeded_apart_from_a_new_one(name: str) -> None:
    config = StudyConfig(sampler=name, seed=3)
    new = first_values(make_sampler(config))
    assert first_values(make_sampler(config)) == new  # seeded: the same study, the same values
    resumed = first_values(make_sampler(config, trials_so_far=7))
    assert resumed != new and resumed[0] != new[0]
    assert first_values(make_sampler(config, trials_so_far=7)) == resumed
    assert first_values(make_sampler(config, trials_so_far=8)) != resumed


def test_new_samplers_of_other_seeds_propose_other_values() -> None:
    assert first_values(make_sampler(StudyConfig(seed=0))) != first_values(
        make_sampler(StudyConfig(seed=1))
    )


def frozen(step: int, value: float, state: TrialState = TrialState.RUNNING):
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"weight_decay": 1e-3},
        distributions={"weight_decay": SPACE},
        intermediate_values={s: value for s in range(1, step + 1)},
        constraints={"train_accuracy": -0.01},
    )


@pytest.mark.parametrize(("epochs", "first_judged"), [(2, 4), (10, 4), (20, 7), (300, 91)])
def test_median_pruner_waits_out_its_warm_up(epochs: int, first_judged: int) -> None:
    # 30% of a trial's epochs and at least 3, then judged from the next epoch on.
    pruner = make_pruner(StudyConfig(pruner="median", epochs=epochs))
    study = optuna.create_study(direction="maximize")
    for _ in range(5):
        study.add_trial(frozen(first_judged, 0.9, TrialState.COMPLETE))
    assert pruner.prune(study, frozen(first_judged - 1, 0.1)) is False
    assert pruner.prune(study, frozen(first_judged, 0.1)) is True


def test_median_pruner_waits_for_five_feasible_trials() -> None:
    pruner = make_pruner(StudyConfig(pruner="median", epochs=10))
    study = optuna.create_study(direction="maximize")
    for _ in range(4):
        study.add_trial(frozen(10, 0.9, TrialState.COMPLETE))
    assert pruner.prune(study, frozen(5, 0.1)) is False
    study.add_trial(frozen(10, 0.9, TrialState.COMPLETE))
    assert pruner.prune(study, frozen(5, 0.1)) is True


def test_new_study_records_the_config_with_the_strategy_it_names(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'strategy.db'}"
    config = StudyConfig(
        study_name="strat",
        storage=url,
        epochs=3,
        wd_low=1e-4,
        seed=5,
        sampler="random",
        pruner="none",
    )
    study = new_study(make_storage(url), config, {"train_size": 2000})
    assert type(study.sampler) is optuna.samplers.RandomSampler
    assert type(study.pruner) is optuna.pruners.NopPruner
    reread = optuna.load_study(study_name="strat", storage=url)
    assert recorded_settings(reread) == config.recorded()
    assert reread.user_attrs["train_size"] == 2000
    assert reread.metric_names == ["val_accuracy"]
    assert reread.direction == optuna.study.StudyDirection.MAXIMIZE
    read = stored_config(reread, storage=url)
    assert read is not None and read.recorded() == config.recorded()


def test_new_study_of_an_existing_name_keeps_what_it_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'strategy.db'}"
    config = StudyConfig(study_name="strat", storage=url, epochs=3)
    first = new_study(make_storage(url), config, {"train_size": 2000})
    again = new_study(make_storage(url), config.replace(epochs=9), {"train_size": 1})
    assert again.study_name == first.study_name
    assert recorded_settings(again)["epochs"] == 3 and again.user_attrs["train_size"] == 2000
