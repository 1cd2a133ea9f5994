"""The layout's rules: reading commands and every --help stay free of PyTorch; imports run down.

Each check runs in a fresh interpreter, since this test process has imported torch already.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.helpers import REPO

COMMANDS = (
    "run", "export", "report", "dashboard", "evaluate", "bench", "experiment", "data", "evidence",
)  # fmt: skip
# A room imports only from the rooms below it; the command modules and the flag catalogue
# (search.cli) sit above them all.
WINGS = ("data", "training", "study", "reporting", "evaluation", "engine", "benchmarks")


def torch_loaded(code: str) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('torch' in sys.modules)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


def test_reading_commands_import_no_torch() -> None:
    assert not torch_loaded("import search.export, search.report, search.dashboard")
    # The docs' quality tables, rendered from the committed JSON: a read of files only.
    render = "evidence.render(evidence.load(evidence.EVIDENCE_DIR))"
    assert not torch_loaded(f"from search.benchmarks import evidence\n{render}")


def test_import_search_is_light_until_load_best_is_called() -> None:
    assert not torch_loaded("import search\nfrom search import load_best")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_no_torch(command: str) -> None:
    # What `python -m search.<command> --help` runs, with sys.modules looked at afterwards.
    code = (
        "import runpy, sys, contextlib, io\n"
        f"sys.argv = ['search.{command}', '--help']\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        runpy.run_module('search.{command}', run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code in (0, None), stop.code"
    )
    assert not torch_loaded(code)


def search_imports(path: str) -> set[str]:
    """The ``search.*`` modules a file imports, at any depth of the file."""
    tree = ast.parse((REPO / path).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("search"):
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("search")}
    return found


@pytest.mark.parametrize("wing", WINGS)
def test_wing_imports_run_down(wing: str) -> None:
    above = WINGS[WINGS.index(wing) + 1 :]
    commands = (*(f"search.{c}" for c in COMMANDS if c != "data"), "search.cli")
    for path in sorted((REPO / "search" / wing).glob("*.py")):
        for name in search_imports(str(path.relative_to(REPO))):
            assert not name.startswith(tuple(f"search.{w}." for w in above)), (path.name, name)
            assert not any(name == c or name.startswith(c + ".") for c in commands), (
                path.name,
                name,
            )


def test_the_record_and_the_figures_import_no_torch() -> None:
    modules = sorted(p.stem for p in (REPO / "search" / "study").glob("*.py"))
    imports = ", ".join(f"search.study.{m}" for m in modules if m != "__init__")
    assert not torch_loaded(f"import {imports}, search.reporting.figures")
