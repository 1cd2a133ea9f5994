"""search.report: the figures say what they claim, and index.html shows them all."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import optuna
import pytest
from matplotlib.colors import to_rgba
from optuna.trial import TrialState

from search import report
from search.config import StudyConfig
from search.data.splits import Splits
from search.reporting.figures import BAND, DPI, FIGSIZE, figures
from search.study.history import trial_history
from tests.helpers import enqueued_study, run_cli

LIMIT = 0.83  # between what 2,000 images reach in 3 epochs with weak and with strong decay


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> str:
    """A study with one trial of each kind: #0 pruned as infeasible at epoch 2, #1 complete
    and feasible, #2 complete but over the limit at its last epoch. Built once per module:
    these tests only read it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'study.db'}"
    config = StudyConfig(storage=url, epochs=3, subset=2000, max_train_acc=LIMIT, device="cpu")
    study = enqueued_study(config, tiny_splits, [1e-6, 1e-1, 5e-2])
    states = [t.state for t in study.trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    return url


@pytest.fixture
def study(url: str) -> optuna.Study:
    return optuna.load_study(study_name=StudyConfig().study_name, storage=url)


def legend_labels(figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def test_report_writes_readable_pngs_and_an_index(
    study: optuna.Study, url: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "report"
    argv = ["--storage", url, "--out", str(out)]
    status, stdout, _ = run_cli(report.main, argv, capsys)
    assert status == 0 and f"wrote 4 figures and index.html to {out}" in stdout
    names = ["optimization_history.png", "weight_decay.png", "learning_curves.png"]
    names.append("best_trial.png")
    index = (out / "index.html").read_text()
    for name in names:
        height, width, _ = matplotlib.image.imread(out / name).shape
        assert (width, height) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
        assert f'<img src="{name}"' in index
    best = study.best_trial
    assert "<h1>Study mnist-weight-decay</h1>" in index
    assert f"#{best.number}: weight decay {best.params['weight_decay']:.4g}" in index
    kinds = "1 complete, feasible; 1 complete, infeasible; 1 pruned: over the limit"
    assert f"<td>3: {kinds}</td>" in index
    assert "not evaluated yet: python -m search.evaluate" in index


def test_report_history_tells_feasible_infeasible_and_pruned_apart(study: optuna.Study) -> None:
    history = figures(study)[0].figure
    (ax,) = history.axes
    assert "order in which the trials finished" in ax.get_xlabel()
    assert "validation accuracy" in ax.get_ylabel()
    labels = legend_labels(history)
    assert "complete, feasible (1)" in labels and "complete, infeasible (1)" in labels
    assert "pruned: over the limit (1): when it stopped" in labels
    assert "last epoch" in ax.get_ylabel()
    assert f"best feasible: #{study.best_trial.number} " in " ".join(labels)
    assert "best feasible so far" in labels


def test_report_weight_decay_shades_only_where_trials_were_feasible(study: optuna.Study) -> None:
    figure = figures(study)[1].figure
    ax, zoom = figure.axes  # the overview, and the edge between #2 (5e-2) and #1 (1e-1)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "weight decay (log scale)"
    assert zoom.get_xlim()[0] < 5e-2 and 1e-1 < zoom.get_xlim()[1]
    assert "final" not in figure.get_suptitle() and "last epoch" in ax.get_ylabel()
    labels = legend_labels(figure)
    assert f"training-accuracy limit ({LIMIT:.0%}), infeasible above" in labels
    assert "validation, pruned: last epoch" in labels
    assert "validation, complete: final" in labels
    # Pruned trials in another shape than complete ones, not only hollow.
    shapes = {c.get_label(): c.get_paths()[0].vertices.shape for c in ax.collections[:4]}
    assert len(set(shapes.values())) > 1
    # The band spans the feasible complete trials' weight decays only, up to the limit: here
    # the one feasible trial, a band of one point.
    (band,) = [c for c in ax.collections if c.get_gid() == BAND]
    feasible = [t.params["weight_decay"] for t in study.trials if t.user_attrs.get("feasible")
                and t.state == TrialState.COMPLETE]  # fmt: skip
    (x0, _), (x1, y1) = band.get_paths()[0].vertices.min(0), band.get_paths()[0].vertices.max(0)
    assert (x0, x1) == pytest.approx((min(feasible), max(feasible)))
    assert y1 == pytest.approx(LIMIT)
    infeasible = [t.params["weight_decay"] for t in study.trials if not t.user_attrs["feasible"]]
    assert all(not x0 <= wd <= x1 for wd in infeasible)


def test_report_learning_curves_pick_out_the_recommended_trial(study: optuna.Study) -> None:
    figure = figures(study)[2].figure
    ax = figure.axes[0]
    best = study.best_trial
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("recommended")]
    assert line.get_label().startswith(f"recommended trial #{best.number} ")
    assert list(line.get_ydata()) == [r["val_accuracy"] for r in trial_history(best)]
    # No curve colour is too light to see on white (viridis' yellow end is left out).
    for curve in ax.get_lines():
        red, green, blue, _ = to_rgba(curve.get_color())
        assert 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.75


def test_report_learning_curves_end_pruned_trials_early(study: optuna.Study) -> None:
    figure = figures(study)[2].figure
    ax = figure.axes[0]
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 1][:3]
    assert [list(line.get_xdata()) for line in curves] == [[1, 2], [1, 2, 3], [1, 2, 3]]
    for line, trial in zip(curves, study.trials, strict=True):
        recorded = [row["val_accuracy"] for row in trial_history(trial)]
        assert list(line.get_ydata()) == recorded
    assert figure.axes[1].get_ylabel() == "weight decay (log scale)"  # the colour bar


def test_report_best_trial_shows_loss_and_accuracy_per_epoch(study: optuna.Study) -> None:
    figure = figures(study)[3].figure
    loss_ax, accuracy_ax = figure.axes
    best = study.best_trial
    assert figure.get_suptitle().startswith(f"Best feasible trial #{best.number}")
    assert loss_ax.get_ylabel() == "loss (cross-entropy, nats)"
    assert accuracy_ax.get_ylabel() == "accuracy (%)"
    validation = accuracy_ax.get_lines()[1]
    assert list(validation.get_ydata()) == [r["val_accuracy"] for r in trial_history(best)]


def test_report_without_a_feasible_trial_has_no_best_trial_figure(
    tiny_config: StudyConfig, tiny_splits: Splits, tmp_path: Path
) -> None:
    study = enqueued_study(tiny_config.replace(max_train_acc=0.05), tiny_splits, [1e-3])
    written = report.write_report(study, tiny_config.storage_url, tmp_path / "r")
    assert [p.name for p in written] == [
        "optimization_history.png",
        "weight_decay.png",
        "learning_curves.png",
        "index.html",
    ]
    assert "none: no trial met the constraint" in (tmp_path / "r" / "index.html").read_text()


def test_report_of_a_missing_study_is_one_line(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'nothing.db'}"
    status, _, err = run_cli(report.main, ["--storage", url], capsys)
    assert status == 2 and "no study database" in err
    assert not (tmp_path / "nothing.db").exists()
