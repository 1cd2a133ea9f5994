"""The report's figures, drawn from what a study's trials stored; nothing is retrained.

The figures are drawn here rather than by ``optuna.visualization.matplotlib``: its
optimization history leaves out pruned trials (with constraint pruning, most infeasible trials
end pruned, so they would vanish) and gives infeasible points no legend entry, and its
intermediate-values plot has one legend entry per trial, unreadable past a dozen trials.
Figures are built on ``matplotlib.figure.Figure``, not pyplot: no global state, no display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator, PercentFormatter
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
BAND = "feasible band"  # the gid of each stretch of the feasible band, for whoever reads it
# The edge panel shows the bracket plus as much again on each side (log scale), and at least
# this factor, so the trials just outside it are in view.
EDGE_CONTEXT = 1.1
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


def new_figure(
    title: str, ncols: int = 1, width_ratios: Sequence[float] | None = None
) -> tuple[Figure, Any]:
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = figure.subplots(1, ncols, width_ratios=width_ratios)
    figure.suptitle(title, fontsize=13, fontweight="bold")
    return figure, axes


def legend_below(
    figure: Figure, ax: Any, ncols: int, handles: Sequence[Artist] | None = None
) -> None:
    """The legend under the axes, where it can't hide a point, whatever the data.

    Args:
        handles: what the legend lists; by default everything labelled in ``ax``.
    """
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    figure.legend(handles=list(handles), loc="outside lower center", ncols=ncols, fontsize=9)


def percent_axis(axis: Any) -> None:
    axis.set_major_formatter(PercentFormatter(xmax=1))


def completion_order(trials: list[TrialRecord]) -> list[TrialRecord]:
    """The trials in the order they finished (trial numbers only say when they started:
    trials trained side by side or by several workers finish in another order)."""
    return sorted(trials, key=lambda t: (t.finished or datetime.max, t.number))


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def plot_history(trials: list[TrialRecord], best: FrozenTrial | None) -> Figure:
    # Over 60 lines: one figure drawn layer by layer, in its legend's order.
    """Final validation accuracy per trial, in the order the trials finished, by kind, with
    the best feasible value so far; the trials that raised it are labelled with their number.
    """
    figure, ax = new_figure("Optimization history: validation accuracy of each trial")
    ordered = completion_order(trials)
    rank = {t.number: position for position, t in enumerate(ordered, start=1)}
    for kind, (marker, face, edge) in STYLES.items():
        chosen = [t for t in ordered if t.kind == kind]
        if chosen:
            ax.scatter(
                [rank[t.number] for t in chosen],
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
    raised: list[TrialRecord] = []
    for trial in ordered:
        if trial.complete and trial.feasible and trial.val_accuracy > current:
            current = trial.val_accuracy
            raised.append(trial)
        if current > -math.inf:
            steps.append(rank[trial.number])
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
    if raised:
        # Which trial each step is, above the axes where no label can hide a point: the x axis
        # is the order of finishing, not the trial number.
        top = ax.secondary_xaxis("top")
        top.set_xticks(
            [rank[t.number] for t in raised], [f"#{t.number}" for t in raised], fontsize=8
        )
        top.tick_params(axis="x", labelrotation=90, colors=FEASIBLE)
        top.set_xlabel("trial number of each new best", fontsize=9, color=FEASIBLE)
    if best is not None and best.number in rank:
        ax.scatter(
            [rank[best.number]],
            [trial_val_accuracy(best)],
            marker="*",
            color="black",
            s=160,
            zorder=4,
            label=f"best feasible: #{best.number} ({trial_val_accuracy(best):.2%}), "
            f"{ordinal(rank[best.number])} to finish",
        )
    ax.set_xlabel("order in which the trials finished (1 = first to finish)")
    ax.set_ylabel("validation accuracy at the trial's last epoch (%)")
    percent_axis(ax.yaxis)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.margins(y=0.08)
    legend_below(figure, ax, ncols=2)
    return figure


def proven(trials: list[TrialRecord]) -> list[TrialRecord]:
    """The trials whose feasibility is final: complete ones, and those stopped over the limit
    (further over it than any recorded run came back from, docs/search-quality.md#monotone).
    One the pruner stopped under the limit proves nothing."""
    return [t for t in trials if t.complete or not t.feasible]


def feasible_spans(trials: list[TrialRecord]) -> list[tuple[float, float]]:
    """The stretches of weight decay, outermost trials included, in which every trial whose
    feasibility is final ended feasible: from one feasible trial to the last before an
    infeasible one. A lone feasible trial between infeasible ones is a stretch of one point.
    """
    feasible_at: dict[float, bool] = {}
    for trial in proven(trials):  # one infeasible trial at a weight decay makes it infeasible
        feasible_at[trial.weight_decay] = feasible_at.get(trial.weight_decay, True) and (
            trial.feasible
        )
    spans: list[tuple[float, float]] = []
    start: float | None = None
    end = 0.0
    for weight_decay, feasible in sorted(feasible_at.items()):
        if feasible:
            start = weight_decay if start is None else start
            end = weight_decay
        elif start is not None:
            spans.append((start, end))
            start = None
    if start is not None:
        spans.append((start, end))
    return spans


@dataclass(frozen=True)
class Edge:
    """Where the constraint decides the study: the largest weight decay a trial proved
    infeasible at and the smallest a complete trial ended feasible at. Seeds differ, so near
    the edge the two may cross (an infeasible trial above the smallest feasible one)."""

    infeasible: float
    feasible: float

    @property
    def bounds(self) -> tuple[float, float]:
        return min(self.infeasible, self.feasible), max(self.infeasible, self.feasible)


def feasibility_edge(trials: list[TrialRecord]) -> Edge | None:
    """The edge, or None until the trials show both sides of it."""
    feasible = [t.weight_decay for t in trials if t.complete and t.feasible]
    infeasible = [t.weight_decay for t in trials if not t.feasible]
    if not feasible or not infeasible:
        return None
    return Edge(infeasible=max(infeasible), feasible=min(feasible))


def draw_accuracies(
    ax: Any,
    trials: list[TrialRecord],
    limit: float,
    floor: float,
    best: FrozenTrial | None,
) -> None:
    """The trials' accuracies, the limit, the feasible band down to ``floor`` and the
    recommended trial: the same layers in the overview and in the edge's close-up."""
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
        label=f"training-accuracy limit ({limit:.0%}), infeasible above",
    )
    for index, (low, high) in enumerate(feasible_spans(trials)):
        ax.fill_between(
            [low, high],
            floor,
            limit,
            # The edge drawn stronger than the fill: a stretch of one trial is then a line.
            facecolor=to_rgba(FEASIBLE_REGION, 0.12),
            edgecolor=to_rgba(FEASIBLE_REGION, 0.5),
            linewidth=1.5,
            gid=BAND,
            label="feasible weight decays found" if index == 0 else "_nolegend_",
        )
    if best is not None:
        ax.axvline(
            best.params["weight_decay"],
            color="black",
            linestyle=":",
            linewidth=1,
            label=f"recommended trial #{best.number}",
        )


def accuracy_range(trials: list[TrialRecord], limit: float) -> tuple[float, float]:
    """The y range of the trials' accuracies and the limit, with room above the limit too,
    so the infeasible side of the line is visible."""
    values = [t.val_accuracy for t in trials] + [t.train_accuracy for t in trials]
    low, high = min(*values, limit), max(*values, limit)
    pad = 0.12 * (high - low or 0.01)
    return low - pad, high + pad


def zoom_on_edge(ax: Any, trials: list[TrialRecord], limit: float, edge: Edge) -> list[Line2D]:
    """Frame ``ax`` on the edge's bracket and mark both of its ends; returns the two marks."""
    low, high = edge.bounds
    context = max(high / low, EDGE_CONTEXT)
    left, right = low / context, high * context
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.set_ylim(*accuracy_range([t for t in trials if left <= t.weight_decay <= right], limit))
    marks = [
        ax.axvline(x, color=color, linestyle="-.", linewidth=1.2, label=f"{what}: {x:.3g}")
        for x, color, what in (
            (edge.infeasible, INFEASIBLE, "largest proven infeasible"),
            (edge.feasible, FEASIBLE_REGION, "smallest found feasible"),
        )
    ]
    # A narrow log range has no decade in it: plain, evenly spaced ticks read better.
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_title("The feasibility edge, zoomed (grey at left)", fontsize=10)
    ax.set_xlabel("weight decay (log scale)")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=2))
    ax.grid(alpha=0.3)
    return marks


def plot_weight_decay(trials: list[TrialRecord], limit: float, best: FrozenTrial | None) -> Figure:
    """Validation and training accuracy at each trial's last epoch against weight decay.

    Complete trials ran every epoch: their figures are final. Pruned ones stopped early, so
    theirs are as of the epoch they stopped at, drawn hollow and in another shape. The band
    under the limit is shaded only where the trials proved it: from the smallest to the
    largest feasible weight decay, broken wherever an infeasible trial lies between, what the
    study found rather than what the limit alone would promise. The edge between the two
    decides the study and its trials crowd there, so a second panel shows it close up.
    """
    edge = feasibility_edge(trials)
    figure, axes = new_figure(
        "Weight decay against accuracy at each trial's last epoch",
        ncols=1 if edge is None else 2,
        width_ratios=None if edge is None else [3, 2],
    )
    ax = axes if edge is None else axes[0]
    floor, ceiling = accuracy_range(trials, limit)
    draw_accuracies(ax, trials, limit, floor, best)
    ax.set_ylim(floor, ceiling)
    ax.set_xscale("log")
    ax.set_xlabel("weight decay (log scale)")
    ax.set_ylabel("accuracy at the trial's last epoch (%)")
    percent_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if edge is not None:
        draw_accuracies(axes[1], trials, limit, floor, best)
        handles += zoom_on_edge(axes[1], trials, limit, edge)
        # Where the close-up is, behind the trials: a frame would vanish among them.
        ax.axvspan(*axes[1].get_xlim(), color="0.5", alpha=0.2, linewidth=0, zorder=0)

    legend_below(figure, ax, ncols=3, handles=handles)
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
    legend_below(figure, ax, ncols=3, handles=handles)
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
    handles = loss_ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
    legend_below(figure, loss_ax, ncols=3, handles=handles)
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
            "the order they finished (trials trained side by side finish out of their "
            "numbers' order): final for filled markers (all epochs), at the epoch they "
            "stopped for hollow ones (pruned). Red: training accuracy over the limit "
            "(infeasible). The line is the best feasible validation accuracy so far; each "
            "trial that raised it is labelled with its number.",
            plot_history(trials, best),
        ),
        ReportFigure(
            "weight_decay.png",
            "Which weight decays are feasible, and which is best? Validation (blue) and "
            "training (orange) accuracy against weight decay: final for complete trials "
            "(filled circles and triangles), at the epoch they stopped for pruned ones (hollow "
            "squares and down-triangles), which would have gone higher. A trial is feasible "
            f"when its training accuracy ends at or under the limit ({limit:.0%}, dashed). The "
            "shading runs from the smallest to the largest weight decay a complete trial ended "
            "feasible at, broken wherever a trial between ended infeasible. Where both kinds "
            "of trials were found, the right panel zooms on the edge between them: the "
            "largest weight decay proven infeasible and the smallest found feasible.",
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
