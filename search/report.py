"""``python -m search.report``: the study as PNG figures and an ``index.html`` that shows them.

    python -m search.report --study-name mnist-weight-decay   # -> studies/<name>-report/

For those who want pictures without a server. Every number comes from what the trials stored
(the per-epoch history, ``train_accuracy``, ``val_accuracy``, ``feasible``, the constraint),
nothing is retrained.

The figures themselves are drawn by ``search.reporting.figures``.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path
from typing import TYPE_CHECKING

from search.cli import Parser, add_study_flags, run_command, storage_url
from search.config import MEASURE_NAMES, STUDIES_DIR, examples_noun
from search.errors import UserError

if TYPE_CHECKING:
    import optuna

    from search.reporting.figures import ReportFigure

# The study's libraries (Optuna, SQLAlchemy, pandas, matplotlib) are imported in main, after the
# flags are parsed: --help and a flag error answer at once.


class OutDirError(UserError):
    """``--out`` can't hold the report: a usage error."""

    exit_code = 2


def summary_rows(study: optuna.Study, url: str) -> list[tuple[str, str]]:
    # Over 60 lines: one row after another, in the table's order.
    """The report's table: what the study is and what it found."""
    from search.reporting.figures import STYLES, records
    from search.study.notes import how_it_held
    from search.study.record import (
        TrialOutcome,
        recommended_trial,
        stored_config,
        stored_recommendation,
        stored_test_result,
        trial_val_accuracy,
    )
    from search.study.storage import masked

    config = stored_config(study)
    trials = records(study)
    counts: dict[str, int] = {kind: 0 for kind in STYLES}
    for trial in trials:
        counts[trial.kind] += 1
    rows = [
        ("study", f"{study.study_name} in {masked(url)}"),
        (
            "trials finished",
            f"{len(trials)}: " + "; ".join(f"{n} {kind}" for kind, n in counts.items() if n),
        ),
    ]
    if config is None:
        rows.append(("recipe", "not recorded: the study was not made by python -m search.run"))
    else:
        rows += [
            (
                "recipe",
                f"{config.epochs} epochs, batch size {config.batch_size}, learning rate "
                f"{config.lr}, seed {config.seed}, weight decay searched in "
                f"[{config.wd_low}, {config.wd_high}]"
                + (
                    f", first {config.subset:,} training {examples_noun(config.task)} only"
                    if config.subset
                    else ""
                ),
            ),
            (
                "constraint",
                f"{MEASURE_NAMES[config.train_accuracy]} at the last epoch ≤ "
                f"{config.max_train_acc} (a trial stopped over it: its projection)",
            ),
            ("validation", config.validation),
        ]
    best = recommended_trial(study)
    if best is None:
        rows.append(("recommended trial", "none: no trial met the constraint"))
        return rows
    outcome = TrialOutcome.read(best)
    train = "" if outcome is None else f", {outcome.train_text()}"
    rows.append(
        (
            "recommended trial",
            f"#{best.number}: weight decay {best.params['weight_decay']:.4g}, validation "
            f"accuracy {trial_val_accuracy(best):.4f}{train}",
        )
    )
    confirmed = stored_recommendation(study)
    rows.append(
        (
            "seed confirmation",
            "none: run with --confirm-seeds R to retrain the best candidates with R more seeds"
            if confirmed is None
            else how_it_held(confirmed),
        )
    )
    tested = stored_test_result(study)
    if tested is None:
        rows.append(("test set", "not evaluated yet: python -m search.evaluate"))
    else:
        caveat = (
            " (selected on this same test set: not unbiased)" if tested.selected_on_test else ""
        )
        rows.append(
            (
                "test set",
                f"accuracy {tested.test_accuracy:.4f}, loss {tested.test_loss:.4f} on "
                f"{tested.test_images:,} {examples_noun(config.task if config else None)}"
                f"{caveat}",
            )
        )
    return rows


def index_html(study: optuna.Study, url: str, shown: list[ReportFigure]) -> str:
    esc = html.escape
    rows = "\n".join(
        f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>"
        for key, value in summary_rows(study, url)
    )
    blocks = "\n".join(
        f'<figure><img src="{esc(f.name)}" alt="{esc(f.name)}">'
        f"<figcaption>{esc(f.caption)}</figcaption></figure>"
        for f in shown
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Study {esc(study.study_name)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ text-align: left; padding: 0.3em 1em 0.3em 0; vertical-align: top; }}
figure {{ margin: 0 0 3em 0; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ color: #333; max-width: 70em; }}
</style>
</head>
<body>
<h1>Study {esc(study.study_name)}</h1>
<table>
{rows}
</table>
{blocks}
</body>
</html>
"""


def write_report(study: optuna.Study, url: str, out: Path) -> list[Path]:
    """Write the figures and ``index.html`` into ``out`` (created if missing); returns paths."""
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out}: is a file; give a folder for the figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutDirError(f"--out {out}: can't create it ({error.strerror})") from None
    from search.reporting.figures import figures

    shown = figures(study)
    written = []
    for f in shown:
        f.figure.savefig(out / f.name)
        written.append(out / f.name)
    (out / "index.html").write_text(index_html(study, url, shown), encoding="utf-8")
    written.append(out / "index.html")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.report",
        description="Draw the study as PNG figures with an index.html that shows them.",
    )
    add_study_flags(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder to write into (default: studies/<study-name>-report)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from search.study.study import load_existing_study

    url = storage_url(args)
    study = load_existing_study(args.study_name, url)
    out = args.out or STUDIES_DIR / f"{args.study_name}-report"
    written = write_report(study, url, out)
    print(f"wrote {len(written) - 1} figures and index.html to {out}")
    print(f"open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    run_command(main)
