"""A run's config from its flags: the flags given, the rest from the study if it exists.

A resumed study keeps the settings it was created with; a flag that contradicts one is
refused (``search.study.study.check_settings``), every such flag in one line. The budget,
sampler and pruner may change. Every rule between flags is checked here, before anything is
opened or trained, and broken ones raise ``UsageError``: the command prints them as argparse
prints a bad flag.
"""

from __future__ import annotations

from typing import Any

from search.config import DEFAULTS, RECORDED, RUN_SETTINGS, TASKS_WITH_TEST_SET, StudyConfig
from search.data.task import is_reference, load_user_task, task_name
from search.engine.workers import check_worker_flags
from search.errors import UsageError
from search.study.storage import storage_errors
from search.study.study import check_settings, peek_settings


def settle_config(flags: dict[str, Any]) -> StudyConfig:
    """The run's config from the parsed ``flags`` (by field name).

    A stored setting's flag left out is None there: it comes from the study if the study
    exists, else from the defaults.
    """
    flags = own_study_name(flags)
    given = {key: flags[key] for key in (*RECORDED, *RUN_SETTINGS) if flags.get(key) is not None}
    rest = {key: value for key, value in flags.items() if key not in (*RECORDED, *RUN_SETTINGS)}
    config = StudyConfig(**rest)
    check_rules(given)  # the rules among the flags given, before any database is touched
    with storage_errors(config.storage_url):
        stored = peek_settings(config.storage_url, config.study_name) or {}
    known = {key: stored[key] for key in (*RECORDED, *RUN_SETTINGS) if key in stored}
    # The rules between flags first, with what the study stored filling what is left out (a
    # lone --wd-low is judged against the study's --wd-high, not the default's): a mistake in
    # them is reported as that, not as a mismatch.
    check_rules(vars(config.replace(**(known | given))))
    check_settings(
        config.study_name, stored, {key: given[key] for key in RECORDED if key in given}
    )
    config = config.replace(**(known | given))
    check_config(config)
    return config


def own_study_name(flags: dict[str, Any]) -> dict[str, Any]:
    """A user's task gets a study of its own by default, ``<name>-weight-decay`` (the Task's
    name, else NAME of the reference): under the default name it would meet the MNIST study
    and be refused as another task. The task is imported here, once per process."""
    task = flags.get("task")
    if task is None or not is_reference(task) or flags.get("study_name") != DEFAULTS.study_name:
        return flags
    name = load_user_task(task).name or task_name(task)
    return flags | {"study_name": f"{name}-weight-decay"}


def check_rules(values: dict[str, Any]) -> None:
    """The rules between flags that need nothing but their values; a rule is checked once
    ``values`` (by field name) holds every field it is about."""
    if {"wd_low", "wd_high"} <= values.keys() and values["wd_low"] >= values["wd_high"]:
        raise UsageError(
            f"--wd-low must be below --wd-high, got {values['wd_low']} and {values['wd_high']}: "
            "give a non-empty range"
        )
    task = values.get("task")
    if task is not None and is_reference(task) and values.get("validation") == "test":
        raise UsageError(
            f"--validation test: the task {task} validates on its own val split (and "
            "search.evaluate scores its test split); drop --validation"
        )
    if task is not None and task not in TASKS_WITH_TEST_SET and values.get("validation") == "test":
        raise UsageError(
            f"--validation test: the {task} task has no test set, it validates on its own "
            "200 held-out rows; drop --validation"
        )


def check_config(config: StudyConfig) -> None:
    """The device, the workers and a user's task, which is imported here (the rules between
    flags are checked first): a task that does not load is refused before any study opens."""
    from search.training.train import device_problem

    problem = device_problem(config.device)
    if problem is not None:
        raise UsageError(problem)
    worker_error = check_worker_flags(config)
    if worker_error is not None:
        raise UsageError(worker_error)
    if is_reference(config.task):
        load_user_task(config.task)
