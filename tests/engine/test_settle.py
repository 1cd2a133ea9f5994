"""A run's config from its flags: defaults for a new study, the stored recipe for a resumed
one, and the rules between flags, each refused in one line before anything is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from search import run
from search.config import StudyConfig
from search.engine.settle import settle_config
from search.engine.strategy import new_study
from search.errors import UsageError, UserError
from search.study.record import record_run_settings
from search.study.storage import make_storage


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'settle.db'}"


def flags(*argv: str) -> dict:
    """The flags as ``search.run`` parses them: a stored setting left out is None."""
    return vars(run.build_parser().parse_args(list(argv)))


def stored_study(url: str, **recipe) -> StudyConfig:
    """A study in ``url`` created with ``recipe`` and run once with its budget and sampler."""
    config = StudyConfig(storage=url, device="cpu", **recipe)
    study = new_study(make_storage(url), config, {})
    record_run_settings(study, config)
    return config


def test_settle_config_on_a_fresh_storage_is_the_defaults_and_the_flags(
    url: str, tmp_path: Path
) -> None:
    settled = settle_config(flags("--storage", url, "--epochs", "3", "--device", "cpu"))
    assert settled == StudyConfig(storage=url, epochs=3, device="cpu")
    assert list(tmp_path.iterdir()) == []  # settling opened nothing: no database file


def test_settle_config_takes_a_plain_dict_of_some_fields(url: str) -> None:
    given = {"storage": url, "device": "cpu", "trials": 7, "sampler": None, "lr": 3e-4}
    assert settle_config(given) == StudyConfig(storage=url, device="cpu", trials=7, lr=3e-4)


@pytest.mark.parametrize(("low", "high"), [("0.1", "0.01"), ("0.01", "0.01")])
def test_settle_config_refuses_an_empty_weight_decay_range(url: str, low: str, high: str) -> None:
    with pytest.raises(UsageError) as refused:
        settle_config(
            flags("--storage", url, "--device", "cpu", "--wd-low", low, "--wd-high", high)
        )
    message = str(refused.value)
    assert "--wd-low" in message and "--wd-high" in message
    assert f"got {float(low)} and {float(high)}" in message


def test_settle_config_refuses_a_grace_period_within_one_heartbeat(url: str) -> None:
    argv = ["--storage", url, "--device", "cpu", "--heartbeat-interval", "20"]
    with pytest.raises(UsageError, match="--grace-period must exceed --heartbeat-interval"):
        settle_config(flags(*argv, "--grace-period", "20"))


def test_a_resumed_study_takes_its_stored_recipe_for_flags_left_out(url: str) -> None:
    created = stored_study(
        url,
        epochs=2,
        lr=3e-4,
        batch_size=32,
        optimizer="adamw",
        wd_low=1e-4,
        max_train_acc=0.9,
        subset=2000,
        seed=7,
        trials=3,
        sampler="random",
        pruner="none",
        constraint_pruning=False,
    )
    settled = settle_config(flags("--storage", url, "--device", "cpu"))
    assert settled == created


def test_a_resumed_study_accepts_flags_that_agree_with_it(url: str) -> None:
    created = stored_study(url, epochs=2, lr=3e-4, subset=2000)
    argv = ["--storage", url, "--device", "cpu", "--epochs", "2", "--lr", "0.0003"]
    assert settle_config(flags(*argv, "--subset", "2000")) == created


def test_a_resumed_study_refuses_a_contradicting_flag_naming_both_values(url: str) -> None:
    stored_study(url, epochs=2, lr=3e-4)
    with pytest.raises(UserError) as refused:
        settle_config(flags("--storage", url, "--device", "cpu", "--epochs", "3"))
    message = str(refused.value)
    assert "was created with --epochs 2 (got 3)" in message
    assert "--study-name" in message  # the way out: another study
    assert refused.value.exit_code == 2  # a usage error, as argparse's


def test_a_resumed_study_refuses_every_contradicting_flag_at_once(url: str) -> None:
    stored_study(url, epochs=2, lr=3e-4, optimizer="adam")
    argv = ["--epochs", "3", "--lr", "0.01", "--optimizer", "sgd", "--seed", "0"]
    with pytest.raises(UserError) as refused:
        settle_config(flags("--storage", url, "--device", "cpu", *argv))
    message = str(refused.value)
    assert "--epochs 2 (got 3), --lr 0.0003 (got 0.01), --optimizer adam (got sgd)" in message
    assert "--seed" not in message  # given, but as stored


def test_a_resumed_study_may_change_its_budget_sampler_and_pruner(url: str) -> None:
    created = stored_study(url, epochs=2, trials=3, sampler="edge", pruner="median")
    argv = ["--trials", "10", "--sampler", "tpe", "--pruner", "none", "--no-constraint-pruning"]
    settled = settle_config(flags("--storage", url, "--device", "cpu", *argv))
    assert settled == created.replace(
        trials=10, sampler="tpe", pruner="none", constraint_pruning=False
    )


def test_a_resumed_study_keeps_its_latest_budget_when_trials_is_left_out(url: str) -> None:
    created = stored_study(url, epochs=2, trials=3)
    study = new_study(make_storage(url), created, {})
    record_run_settings(study, created.replace(trials=8))  # a run that extended it
    assert settle_config(flags("--storage", url, "--device", "cpu")).trials == 8


def test_a_resumed_study_accepts_an_agreeing_flag_checked_against_its_own_range(
    url: str,
) -> None:
    created = stored_study(url, wd_low=0.2, wd_high=0.5)
    settled = settle_config(flags("--storage", url, "--device", "cpu", "--wd-low", "0.2"))
    assert settled == created
