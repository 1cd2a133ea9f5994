"""``python -m search.evidence``: the quality tables of README and docs, from committed data.

    python -m search.evidence            # print the tables
    python -m search.evidence --write    # put them into README.md and docs/search-quality.md

Every quality number the docs publish comes from the quality bench's JSON files committed
under docs/quality/ (one per training-accuracy measure: its grid with every run's curves,
its simulated studies, its real studies with their held-out scores), through this command:
the docs hold its output between ``<!-- quality:NAME -->`` and ``<!-- /quality:NAME -->``
lines, and a test fails when they differ. Re-measure with the command each table names.
Reads JSON only: no torch, no study database.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from search.benchmarks.evidence import DOCUMENTS, EVIDENCE_DIR, fill, load, render
from search.cli import Parser, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.evidence",
        description="Print the quality tables of README.md and docs/search-quality.md from "
        "the quality bench's JSON under docs/quality/, or --write them into those documents.",
    )
    parser.add_argument(
        "--from",
        dest="directory",
        type=Path,
        default=EVIDENCE_DIR,
        metavar="DIR",
        help="the folder of the quality bench's JSON files (default: %(default)s)",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="replace each marked table in README.md and docs/search-quality.md",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tables = render(load(args.directory))
    if not args.write:
        for name, table in tables.items():
            print(f"<!-- quality:{name} -->\n{table}\n<!-- /quality:{name} -->\n")
        return 0
    for path in DOCUMENTS:
        text = path.read_text()
        filled = fill(text, tables)
        if filled != text:
            path.write_text(filled)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_command(main)
