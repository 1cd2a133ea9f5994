"""The study record: loading an existing study, peeking at its settings without creating
anything, refusing a resume with other settings, and counting its trials; on real SQLite files."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.config import StudyConfig
from search.engine.strategy import make_pruner, make_sampler, new_study
from search.study.storage import StudyError, make_storage
from search.study.study import (
    check_settings,
    find_study,
    load_existing_study,
    peek_settings,
    trials_so_far,
)


@pytest.fixture
def config(tmp_path: Path) -> StudyConfig:
    return StudyConfig(study_name="wd", storage=f"sqlite:///{tmp_path / 'study.db'}", epochs=2)


@pytest.fixture
def study(config: StudyConfig) -> optuna.Study:
    """A study as ``search.run`` creates it, with the project's sampler and pruner."""
    return new_study(make_storage(config.storage_url), config, {"data_checksums": {"a": "1"}})


def test_load_existing_study_without_a_database_is_one_line_naming_the_fix(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(StudyError) as error:
        load_existing_study("wd", url)
    message = str(error.value)
    assert "\n" not in message and f"no study database at {tmp_path / 'none.db'}" in message
    assert "python -m search.run --study-name wd" in message and "--storage" in message
    assert not (tmp_path / "none.db").exists()


def test_load_existing_study_of_a_missing_name_lists_the_studies_there(
    study: optuna.Study, config: StudyConfig
) -> None:
    with pytest.raises(StudyError) as error:
        load_existing_study("typo", config.storage_url)
    message = str(error.value)
    assert "\n" not in message and "no study named 'typo'" in message
    assert "it holds: wd" in message and "--study-name" in message
    loaded = load_existing_study("wd", config.storage_url)
    assert loaded.study_name == "wd" and loaded.user_attrs == study.user_attrs


def test_peek_settings_of_a_missing_file_is_none_and_creates_nothing(tmp_path: Path) -> None:
    assert peek_settings(f"sqlite:///{tmp_path / 'none.db'}", "wd") is None
    assert list(tmp_path.iterdir()) == []
    assert peek_settings("sqlite:///:memory:", "wd") is None


def test_peek_settings_gives_what_the_study_stored(
    study: optuna.Study, config: StudyConfig
) -> None:
    settings = peek_settings(config.storage_url, "wd")
    assert settings is not None and settings["epochs"] == 2
    assert settings == config.recorded()
    assert peek_settings(config.storage_url, "other") is None


def test_check_settings_lists_every_differing_flag_with_both_values() -> None:
    stored = {"epochs": 2, "max_train_acc": 0.9, "lr": 0.001}
    given = {"epochs": 3, "max_train_acc": 0.8, "lr": 0.001, "subset": 500}
    with pytest.raises(StudyError) as error:
        check_settings("wd", stored, given)
    message = str(error.value)
    assert "\n" not in message and message.startswith("study 'wd' was created with ")
    assert "--epochs 2 (got 3), --max-train-acc 0.9 (got 0.8)" in message
    assert "--lr" not in message and "--subset" not in message  # equal, or never stored
    assert "--study-name" in message
    check_settings("wd", stored, {"epochs": 2, "subset": 500})  # agrees: nothing raised


def test_trials_so_far_is_none_for_a_missing_study_and_counts_every_state(
    study: optuna.Study, config: StudyConfig
) -> None:
    storage = make_storage(config.storage_url)
    assert trials_so_far(storage, "other") is None
    assert trials_so_far(storage, "wd") == 0
    study.tell(study.ask(), 0.5)
    study.ask()  # still running: counted too
    assert trials_so_far(storage, "wd") == 2


def test_find_study_checks_the_settings_a_resume_must_agree_with(
    study: optuna.Study, config: StudyConfig
) -> None:
    storage = make_storage(config.storage_url)

    def find(config: StudyConfig) -> optuna.Study | None:
        return find_study(storage, config, make_sampler(config), make_pruner(config))

    assert find(config.replace(study_name="other")) is None
    found = find(config)
    assert found is not None and found.user_attrs["data_checksums"] == {"a": "1"}
    with pytest.raises(StudyError, match=r"was created with --epochs 2 \(got 3\)"):
        find(config.replace(epochs=3))


def test_create_study_records_the_config_and_attributes_once(
    study: optuna.Study, config: StudyConfig
) -> None:
    # Another worker creating it since: the study it gets is the first one, unchanged.
    again = new_study(make_storage(config.storage_url), config.replace(epochs=5), {"x": 1})
    assert again.user_attrs == study.user_attrs and "x" not in again.user_attrs
    assert peek_settings(config.storage_url, "wd")["epochs"] == 2
