"""The docs' quality tables, rendered from the quality bench's committed JSON.

Every quality number README and docs/search-quality.md publish comes from the JSON files under
docs/quality/ (one per training-accuracy measure: its grid with every run's curves, its
simulated studies, its real studies with their held-out scores) through ``render``; the docs
hold its output between ``<!-- quality:NAME -->`` and ``<!-- /quality:NAME -->`` lines
(``fill``), and a test fails when they differ. Reads JSON only: no torch, no study database.
``python -m search.evidence`` prints or writes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.config import MEASURE_NAMES
from search.errors import UserError

EVIDENCE_DIR = Path("docs/quality")
DOCUMENTS = (Path("README.md"), Path("docs/search-quality.md"))
MEASURES = ("running", "final")
LIMITS = (0.90, 0.95, 0.97)  # the limits monotonicity is read at
COLUMN = {"running": 0, "final": 2}  # a curve's epoch is [running, validation, final]


class EvidenceError(UserError):
    """A missing or unreadable evidence file, or a document without its table's markers."""


def load(directory: Path) -> dict[str, dict[str, Any]]:
    """The bench's JSON files in ``directory``, merged per measure: one grid (the files of a
    measure share it), and every file's simulated and real studies and summaries."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            report = json.loads(path.read_text())
            measure = report["grid"]["measure"]
        except (ValueError, KeyError, TypeError) as error:
            raise EvidenceError(
                f"{path}: not a quality bench's JSON ({type(error).__name__}: {error}); rerun "
                "the bench that wrote it"
            ) from None
        into = merged.setdefault(
            measure,
            {"grid": report["grid"], "simulated": [], "studies": [], "summary": {}, "files": []},
        )
        into["simulated"] += report.get("simulated", [])
        into["studies"] += report.get("studies", [])
        into["summary"] |= report.get("summary", {})
        if "measured" in report:  # a grid-only file is the grid's row already
            into["files"].append({"file": path.name, **report["measured"]})
    if not merged:
        raise EvidenceError(
            f"no quality bench JSON in {directory}: run python -m search.bench quality --out "
            f"{directory}/running-50.json first"
        )
    return {m: merged[m] for m in MEASURES if m in merged}


def points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def provenance_table(reports: dict[str, dict[str, Any]]) -> str:
    """Which command measured each file, on which commit and machine, when."""
    lines = ["| file | command | commit | machine | date |", "|---|---|---|---|---|"]
    for report in reports.values():
        grid = {"file": f"{report['grid']['measure']} grid", **report["grid"].get("measured", {})}
        for file in [grid, *report["files"]]:
            where = f"{file.get('machine', '?')}, {file.get('cpus', '?')} CPUs"
            lines.append(
                f"| {file['file']} | `{file.get('command', '?')}` | {file.get('commit', '?')} "
                f"| {where} | {file.get('date', '?')} |"
            )
    return "\n".join(lines)


def grid_table(report: dict[str, Any]) -> str:
    """The dense grid across the edge, on the held-out seeds every recommendation is scored
    on: mean validation and both training accuracies, and feasibility by each measure."""
    grid = report["grid"]
    optimum = grid["optimum"]
    lines = [
        "| weight decay | validation | running train | final-weights train | feasible "
        "(running) | feasible (final) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in grid["dense"]:
        mark = " **(robust optimum)**" if row["weight_decay"] == optimum["weight_decay"] else ""
        lines.append(
            f"| {row['weight_decay']:.3e}{mark} | {points(row['val_accuracy_mean'])} "
            f"| {points(row['running_mean'])} | {points(row['final_mean'])} "
            f"| {row['feasible_running']}/{row['seeds']} "
            f"| {row['feasible_final']}/{row['seeds']} |"
        )
    return "\n".join(lines)


def quality_table(reports: dict[str, dict[str, Any]]) -> str:
    """Per measure and budget: the regret of the recommendations, simulated (noise-free value
    on the grid's curves) and real (retrained on the held-out seeds), and how many held the
    limit in 7 of 8 held-out seeds."""
    lines = [
        "| measure | trials | studies | regret median | p90 | worst | feasible on >= 7/8 "
        "held-out seeds | median wall s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for measure, report in reports.items():
        for row in report.get("simulated", []):
            lines.append(
                f"| {measure} | {row['trials']} | {row['n']} simulated | "
                f"{points(row['median'])} | {points(row['p90'])} | {points(row['worst'])} | "
                f"{row['robust']}/{row['n']} | - |"
            )
        for trials, line in report.get("summary", {}).items():
            lines.append(
                f"| {measure} | {trials} | {line['n']} real | {points(line['median'])} | "
                f"{points(line['p90'])} | {points(line['worst'])} | {line['robust']}/"
                f"{line['n']} | {line['median_wall_s']:.0f} |"
            )
    return "\n".join(lines)


def studies_table(reports: dict[str, dict[str, Any]]) -> str:
    """Every real study's recommendation retrained on the held-out seeds, paired with the
    robust optimum on the same seeds."""
    lines = [
        "| measure | trials | study seed | recommended | held-out validation | regret "
        "(paired, +- s.e.) | feasible | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for measure, report in reports.items():
        for study in report.get("studies", []):
            held = study.get("held_out")
            if not held:
                lines.append(
                    f"| {measure} | {study['trials']} | {study['seed']} | none | - | - | - "
                    f"| {study['wall_s']:.0f} |"
                )
                continue
            paired = held.get("paired") or {}
            error = f" +- {points(paired['stderr'])}" if paired else ""
            lines.append(
                f"| {measure} | {study['trials']} | {study['seed']} | "
                f"{held['weight_decay']:.3e} | {points(held['val_accuracy_mean'])} | "
                f"{points(held['regret'])}{error} | {held[f'feasible_{measure}']}/"
                f"{held['seeds']} | {study['wall_s']:.0f} |"
            )
    return "\n".join(lines)


def histories(reports: dict[str, dict[str, Any]], measure: str) -> list[list[float]]:
    """Every full-length run of every grid, as its training accuracy per epoch by ``measure``."""
    return [
        [epoch[COLUMN[measure]] for epoch in run]
        for report in reports.values()
        for seeds in report["grid"]["curves"]["runs"]
        for run in seeds
        if run
    ]


def monotone_table(reports: dict[str, dict[str, Any]]) -> str:
    """How often a run over the limit at an epoch ended within it, by measure and limit."""
    from search.engine.monotone import OVER_LIMIT_MARGIN, over_counts, recoveries

    lines = [
        "| measure | limit | runs | run-epochs over the limit | of them in runs that ended "
        "within it | largest fall (points) | margin used |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for measure in MEASURES:
        runs = histories(reports, measure)
        for limit in LIMITS:
            over, back = over_counts(runs, limit)
            falls = [r.fall for r in recoveries(runs, limit)]
            lines.append(
                f"| {measure} | {limit} | {len(runs)} | {over} | {back} | "
                f"{points(max(falls)) if falls else '-'} | {points(OVER_LIMIT_MARGIN[measure])} |"
            )
    return "\n".join(lines)


# Confidence levels of the oracle table: the 7-of-8 share itself, the confirmation's
# (``search.config.HOLD_CONFIDENCE``) and either side of them.
ORACLE_LEVELS = (0.80, 0.875, 0.90, 0.95, 0.975)


def oracle_table(reports: dict[str, dict[str, Any]]) -> str:
    """What a rule that knew each grid's mean curve and seed spread exactly would recommend
    at each confidence level, scored as the simulated studies are: the floor under any
    confirmation's regret and misses, before it estimates anything from its runs."""
    from search.benchmarks.truth import (
        ROBUST_FRACTION,
        MeasuredCurves,
        noise_free_optimum,
        noise_free_regret,
        oracle_choice,
    )

    lines = [
        "| measure | seed spread (points) | confidence | weight decay | regret (points) | "
        "share of seeds feasible |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for measure, report in reports.items():
        grid = report["grid"]
        truth = MeasuredCurves(grid["curves"]["weight_decays"], grid["curves"]["runs"])
        limit = grid["limit"]
        best = noise_free_optimum(truth, measure, limit)
        if best is None:
            continue
        spread = points(truth.seed_spread(measure))
        for level in ORACLE_LEVELS:
            chosen = oracle_choice(truth, measure, limit, level)
            regret, share = noise_free_regret(truth, chosen, best[1], measure, limit)
            mark = "" if share >= ROBUST_FRACTION else " (under 7/8)"
            where = "-" if chosen is None else f"{chosen:.3e}"
            lines.append(
                f"| {measure} | {spread} | {level:.1%} | {where} | {points(regret)} | "
                f"{share:.2f}{mark} |"
            )
    return "\n".join(lines)


def optimum_line(reports: dict[str, dict[str, Any]]) -> str:
    lines = []
    for measure, report in reports.items():
        grid = report["grid"]
        optimum = grid["optimum"]
        lines.append(
            f"- {MEASURE_NAMES[measure]} <= {grid['limit']}: robust optimum weight decay "
            f"{optimum['weight_decay']:.3e}, validation {points(optimum['val_accuracy_mean'])}% "
            f"(mean of {grid['seeds']} held-out seeds; feasible in "
            f"{optimum[f'feasible_{measure}']} of them)"
        )
    return "\n".join(lines)


def default_study(reports: dict[str, dict[str, Any]]) -> str:
    """What the default command (50 trials, study seed 0, the running measure) recommended,
    how its confirmation saw it, and what it gave on the held-out seeds."""
    found = [
        s
        for s in reports.get("running", {}).get("studies", [])
        if s["trials"] == 50 and s["seed"] == 0
    ]
    if not found or not found[0].get("recommendation"):
        return "- (not measured: run the quality bench with --trials 50 --seeds 1 or more)"
    study, held = found[0], found[0].get("held_out") or {}
    rec = study["recommendation"]
    seeds = rec["confirm_seeds"]
    kept = round(rec["feasible_fraction"] * seeds)
    lines = [
        f"- **Recommended: trial #{rec['trial']}, weight decay {rec['weight_decay']:.3e}**, "
        f"{'confirmed' if rec['confirmed'] else 'UNCONFIRMED'}: feasible in {kept} of {seeds} "
        f"further seeds, mean validation accuracy {points(rec['val_accuracy_mean'])}% +- "
        f"{points(rec['val_accuracy_std'])}, running training accuracy "
        f"{points(rec['train_accuracy_mean'])}%.",
        f"- The 50 trials: {study['complete']} complete, {study['stopped_infeasible']} stopped "
        f"as infeasible; {study['wall_s']:.0f} s in all, confirmation included, as the bench "
        "timed it (no speed figure: other jobs may have shared the machine; a quiet one's time "
        "per study is under Time in docs/search-quality.md).",
    ]
    if held:
        paired = held.get("paired") or {}
        error = f" +- {points(paired['stderr'])}" if paired else ""
        lines.append(
            f"- **Retrained on the 8 held-out seeds: validation "
            f"{points(held['val_accuracy_mean'])}%, {points(held['regret'])}{error} points "
            f"below the robust optimum** on the same seeds, feasible in "
            f"{held['feasible_running']} of {held['seeds']}."
        )
    return "\n".join(lines)


TABLES: dict[str, Callable[[dict[str, dict[str, Any]]], str]] = {
    "provenance": provenance_table,
    "default": default_study,
    "optimum": optimum_line,
    "quality": quality_table,
    "studies": studies_table,
    "grid-running": lambda r: grid_table(r["running"]) if "running" in r else "",
    "grid-final": lambda r: grid_table(r["final"]) if "final" in r else "",
    "monotone": monotone_table,
    "oracle": oracle_table,
}


def render(reports: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: make(reports) for name, make in TABLES.items()}


def fill(text: str, tables: dict[str, str]) -> str:
    """``text`` with every marked block replaced by its table."""
    for name, table in tables.items():
        mark = re.escape(name)
        pattern = re.compile(
            rf"(<!-- quality:{mark} -->\n)(?:.*?\n)?(<!-- /quality:{mark} -->)", re.DOTALL
        )
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)  # noqa: B023
    return text
