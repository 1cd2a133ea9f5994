"""The report's figures, drawn from what a study's trials stored; nothing is retrained.

The figures are drawn here rather than by ``optuna.visualization.matplotlib``: its
optimization history leaves out pruned trials (with constraint pruning, most infeasible trials
end pruned, so they would vanish) and gives infeasible points no legend entry, and its
intermediate-values plot has one legend entry per trial, unreadable past a dozen trials.
Figures are built on ``matplotlib.figure.Figure``, not pyplot: no global state, no display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter
from optuna.trial import FrozenTrial

from search.config import DEFAULTS
from search.reporting.trials import ReportError, TrialRecord, records
from search.study.history import trial_history
from search.study.record import (
    TestResult,
    recommended_trial,
    stored_config,
    stored_test_result,
    trial_val_accuracy,
)

__all__ = ["ReportError", "TrialRecord", "records"]  # read by the report command from here

FIGSIZE = (9.0, 5.5)  # inches; at DPI, 1350 x 825 pixels: legible on a laptop screen
DPI = 150

# One look per kind of trial, the same in every figure.
FEASIBLE = "tab:blue"
INFEASIBLE = "tab:red"
PRUNED = "tab:gray"
VALIDATION = "tab:blue"
TRAINING = "tab:orange"
LIMIT = "tab:red"
FEASIBLE_REGION = "tab:green"
FEASIBLE_PAD = 1.15  # the feasible band reaches this factor beyond its outermost trials
# Learning curves by weight decay: viridis without its last fifth, whose yellows are faint
# on white.
CURVE_COLOURS = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.8, 256)))


# marker, face colour ("none": hollow), edge colour: filled for complete, hollow for pruned.
STYLES: dict[str, tuple[str, str, str]] = {
    "complete, feasible": ("o", FEASIBLE, FEASIBLE),
    "complete, infeasible": ("X", INFEASIBLE, INFEASIBLE),
    "pruned: over the limit": ("o", "none", INFEASIBLE),
    "pruned by the pruner": ("o", "none", PRUNED),
}


def new_figure(title: str, ncols: int = 1) -> tuple[Figure, Any]:
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = figure.subplots(1, ncols)
    figure.suptitle(title, fontsize=13, fontweight="bold")
    return figure, axes


def legend_below(figure: Figure, ax: Any, ncols: int) -> None:
    """The legend under the axes, where it can't hide a point, whatever the data."""
    figure.legend(
        *ax.get_legend_handles_labels(), loc="outside lower center", ncols=ncols, fontsize=9
    )


def percent_axis(axis: Any) -> None:
    axis.set_major_formatter(PercentFormatter(xmax=1))


def plot_history(trials: list[TrialRecord], best: FrozenTrial | None) -> Figure:
    """Final validation accuracy per trial, by kind, with the best feasible value so far."""
    figure, ax = new_figure("Optimization history: validation accuracy of each trial")
    for kind, (marker, face, edge) in STYLES.items():
        chosen = [t for t in trials if t.kind == kind]
        if chosen:
            ax.scatter(
                [t.number for t in chosen],
                [t.val_accuracy for t in chosen],
                marker=marker,
                facecolors=face,
                edgecolors=edge,
                s=45,
                label=f"{kind} ({len(chosen)})"
                + ("" if kind.startswith("complete") else ": when it stopped"),
                zorder=3,
            )
    steps, best_so_far, current = [], [], -math.inf
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.complete and trial.feasible:
            current = max(current, trial.val_accuracy)
        if current > -math.inf:
            steps.append(trial.number)
            best_so_far.append(current)
    if steps:
        ax.step(
            steps,
            best_so_far,
            where="post",
            color=FEASIBLE,
            alpha=0.6,
            label="best feasible so far",
        )
    if best is not None:
        ax.scatter(
            [best.number],
            [trial_val_accuracy(best)],
            marker="*",
            color="black",
            s=160,
            zorder=4,
            label=f"best feasible: #{best.number} ({trial_val_accuracy(best):.2%})",
        )
    ax.set_xlabel("trial number")
    ax.set_ylabel("validation accuracy at the trial's last epoch (%)")
    percent_axis(ax.yaxis)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.margins(y=0.08)
    legend_below(figure, ax, ncols=3)
    return figure


def plot_weight_decay(trials: list[TrialRecord], limit: float, best: FrozenTrial | None) -> Figure:
    # Over 60 lines: one figure drawn layer by layer, in its legend's order.
    """Validation and training accuracy at each trial's last epoch against weight decay.

    Complete trials ran every epoch: their figures are final. Pruned ones stopped early, so
    theirs are as of the epoch they stopped at, drawn hollow and in another shape. The band
    under the limit is shaded only across the weight decays whose complete trials ended
    feasible: what the study found, not what the limit alone would promise.
    """
    figure, ax = new_figure("Weight decay against accuracy at each trial's last epoch")
    for complete in (True, False):
        chosen = [t for t in trials if t.complete == complete]
        if not chosen:
            continue
        how = "complete: final" if complete else "pruned: last epoch"
        x = [t.weight_decay for t in chosen]
        for values, colour, marker, name in (
            ([t.val_accuracy for t in chosen], VALIDATION, "o" if complete else "s", "validation"),
            ([t.train_accuracy for t in chosen], TRAINING, "^" if complete else "v", "training"),
        ):
            ax.scatter(
                x,
                values,
                marker=marker,
                facecolors=colour if complete else "none",
                edgecolors=colour,
                s=45,
                label=f"{name}, {how}",
                zorder=3,
            )
    ax.axhline(
        limit,
        color=LIMIT,
        linestyle="--",
        linewidth=1.5,
        label=f"training-accuracy limit ({limit:.0%})",
    )
    # Room above the limit too, so the infeasible side of the line is visible.
    values = [t.val_accuracy for t in trials] + [t.train_accuracy for t in trials]
    low, high = min(*values, limit), max(*values, limit)
    pad = 0.12 * (high - low or 0.01)
    ax.set_ylim(low - pad, high + pad)
    feasible = [t.weight_decay for t in trials if t.complete and t.feasible]
    if feasible:
        ax.fill_between(
            # A little wider than the trials themselves, so one feasible trial is still a band.
            [min(feasible) / FEASIBLE_PAD, max(feasible) * FEASIBLE_PAD],
            low - pad,
            limit,
            color=FEASIBLE_REGION,
            alpha=0.12,
            linewidth=0,
            label="feasible weight decays found",
        )
    ax.text(
        0.99,
        limit,
        "infeasible above the line ",
        transform=ax.get_yaxis_transform(),
        ha="right",
        va="bottom",
        color=LIMIT,
        fontsize=9,
    )
    if best is not None:
        ax.axvline(
            best.params["weight_decay"],
            color="black",
            linestyle=":",
            linewidth=1,
            label=f"recommended trial #{best.number}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("weight decay (log scale)")
    ax.set_ylabel("accuracy at the trial's last epoch (%)")
    percent_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    legend_below(figure, ax, ncols=3)
    return figure


def plot_learning_curves(
    trials: list[TrialRecord], epochs: int | None, best: FrozenTrial | None = None
) -> Figure:
    """Validation accuracy per epoch for every trial, coloured by weight decay; the
    recommended trial drawn over them in black."""
    figure, ax = new_figure("Learning curves: validation accuracy per epoch, every trial")
    decays = [t.weight_decay for t in trials]
    norm = LogNorm(vmin=min(decays), vmax=max(decays) * (1.0001 if len(set(decays)) == 1 else 1))
    cmap = CURVE_COLOURS
    for trial in trials:
        epoch = [row["epoch"] for row in trial.history]
        accuracy = [row["val_accuracy"] for row in trial.history]
        colour = cmap(norm(trial.weight_decay))
        ax.plot(epoch, accuracy, color=colour, linewidth=1.3, alpha=0.9)
        end = "o" if trial.complete else "X"
        ax.plot(epoch[-1], accuracy[-1], marker=end, color=colour, markersize=6, linestyle="")
    handles = [
        Line2D([], [], color="gray", marker="o", label="complete trial: all epochs"),
        Line2D([], [], color="gray", marker="X", label="pruned trial: × where it stopped"),
    ]
    chosen = next((t for t in trials if best is not None and t.number == best.number), None)
    if chosen is not None:
        epoch = [row["epoch"] for row in chosen.history]
        accuracy = [row["val_accuracy"] for row in chosen.history]
        (line,) = ax.plot(
            epoch,
            accuracy,
            color="black",
            linewidth=2.6,
            marker="o",
            markersize=5,
            zorder=4,
            label=f"recommended trial #{chosen.number} (weight decay {chosen.weight_decay:.2g})",
        )
        handles.insert(0, line)
    colorbar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
    colorbar.set_label("weight decay (log scale)")
    ax.legend(handles=handles, loc="lower right", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    percent_axis(ax.yaxis)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if epochs:
        ax.set_xlim(0.8, epochs + 0.2)
    ax.grid(alpha=0.3)
    return figure


def plot_best_trial(best: FrozenTrial, limit: float, tested: TestResult | None) -> Figure:
    """The best feasible trial's loss and accuracy per epoch, training and validation."""
    history = trial_history(best)
    figure, (loss_ax, acc_ax) = new_figure(
        f"Best feasible trial #{best.number} (weight decay {best.params['weight_decay']:.3g})",
        ncols=2,
    )
    epoch = [row["epoch"] for row in history]
    for ax, metric, unit in ((loss_ax, "loss", "cross-entropy, nats"), (acc_ax, "accuracy", "%")):
        ax.plot(
            epoch,
            [r[f"train_{metric}"] for r in history],
            "^-",
            color=TRAINING,
            label=f"training {metric} (running, over the epoch)",
        )
        ax.plot(
            epoch,
            [r[f"val_{metric}"] for r in history],
            "o-",
            color=VALIDATION,
            label=f"validation {metric}",
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} ({unit})")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    loss_ax.set_title("Loss")
    acc_ax.set_title("Accuracy")
    acc_ax.axhline(
        limit,
        color=LIMIT,
        linestyle="--",
        linewidth=1.5,
        label=f"training-accuracy limit ({limit:.0%})",
    )
    if tested is not None:
        for ax, value, label in (
            (acc_ax, tested.test_accuracy, f"test accuracy ({tested.test_accuracy:.2%})"),
            (loss_ax, tested.test_loss, f"test loss ({tested.test_loss:.3f})"),
        ):
            ax.plot(epoch[-1], value, "*", color="black", markersize=12, label=label)
    percent_axis(acc_ax.yaxis)
    loss_ax.legend(fontsize=8, loc="upper right")
    acc_ax.legend(fontsize=8, loc="lower right")
    return figure


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: its file name, its caption, and the figure itself."""

    name: str
    caption: str
    figure: Figure


def figures(study: optuna.Study) -> list[ReportFigure]:
    """Every figure of the report; the best trial's only when a trial is feasible."""
    trials = records(study)
    if not trials:
        raise ReportError(f"study {study.study_name!r} has no finished trial yet: run it first")
    config = stored_config(study)
    limit = (config or DEFAULTS).max_train_acc
    best = recommended_trial(study)
    out = [
        ReportFigure(
            "optimization_history.png",
            "Is the search still improving? Validation accuracy of every finished trial, in "
            "the order they ran: final for filled markers (all epochs), at the epoch they "
            "stopped for hollow ones (pruned). Red: training accuracy over the limit "
            "(infeasible). The line is the best feasible validation accuracy so far.",
            plot_history(trials, best),
        ),
        ReportFigure(
            "weight_decay.png",
            "Which weight decays are feasible, and which is best? Validation (blue) and "
            "training (orange) accuracy against weight decay: final for complete trials "
            "(filled circles and triangles), at the epoch they stopped for pruned ones (hollow "
            "squares and down-triangles), which would have gone higher. A trial is feasible "
            f"when its training accuracy ends at or under the limit ({limit:.0%}, dashed); the "
            "shading spans the weight decays whose complete trials ended feasible.",
            plot_weight_decay(trials, limit, best),
        ),
        ReportFigure(
            "learning_curves.png",
            "How do trials learn, and when were they stopped? Validation accuracy after each "
            "epoch, one line per trial, coloured by weight decay; the recommended trial in "
            "black. Pruned trials end early, at the ×.",
            plot_learning_curves(trials, None if config is None else config.epochs, best),
        ),
    ]
    if best is not None:
        out.append(
            ReportFigure(
                "best_trial.png",
                f"Does the recommended trial, #{best.number}, over- or under-fit? Its loss and "
                "accuracy epoch by epoch. Training figures are "
                "running averages over each epoch (each batch scored before its update), so "
                "they lag behind the weights at the epoch's end."
                + (" The star is its test-set figure." if stored_test_result(study) else ""),
                plot_best_trial(best, limit, stored_test_result(study)),
            )
        )
    return out
