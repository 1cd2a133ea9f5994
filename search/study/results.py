"""The study's test-set figure, stored on it by ``search.evaluate`` and read back by export,
report and dashboard: the one place that knows its attribute and when it is stale.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna_dashboard import save_note

from search.study.notes import best_feasible_note
from search.study.study import recommended_trial, record_best_feasible

TEST_ATTR = "test_evaluation"  # the study user attribute that holds the test-set result


def record_test_result(study: optuna.Study, result: dict[str, Any]) -> None:
    """Store the result on the study, and add it to the note the dashboard shows on top."""
    study.set_user_attr(TEST_ATTR, result)
    record_best_feasible(study)  # the note must name the trial this result belongs to
    summary = study.user_attrs["best_feasible_trial"]
    caveat = (
        " The trial was selected on this same test set (`--validation test`), so this is "
        "no unbiased estimate."
        if result["selected_on_test"]
        else " The test set was used for nothing else."
    )
    save_note(
        study,
        best_feasible_note(study, summary)
        + f"\n\n**Test set** ({result['test_images']:,} official MNIST test images, "
        f"`python -m search.evaluate`): accuracy = {result['test_accuracy']:.4f}, "
        f"loss = {result['test_loss']:.4f}.{caveat}",
    )


def stored_test_result(study: optuna.Study) -> dict[str, Any] | None:
    """The study's test-set result if it belongs to the current best feasible trial.

    A resumed study may have found a better trial since; its old test figure is then stale.
    """
    result = study.user_attrs.get(TEST_ATTR)
    best = recommended_trial(study)
    if result is None or best is None or result.get("trial") != best.number:
        return None
    return result
