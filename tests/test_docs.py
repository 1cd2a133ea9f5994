"""The manual runs as pasted: every ```python block of README.md and docs/*.md runs against a
tiny real study, and every ``python -m search.<command>`` line of a ```bash block parses with
that command's own parser, so no documented flag is stale.

A python block that cannot run on its own (a PostgreSQL server, a GPU) is marked in the
markdown by an HTML comment on the line before its fence, ``<!-- not run: the reason -->``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, tiny

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<language>\S*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not run:(?P<reason>.*?)-->$")
PYTHON = re.compile(r"(^|/)python(3(\.\d+)?)?$")  # python, python3, .venv/bin/python, ...
SHELL_OPERATOR = set("();<>|&")
# Commands that are not their module's own parser: `python -m search.data` runs fetch's main.
PARSER_MODULE = {"search.data": "search.data.fetch"}
PYTHON_FENCES = {"python", "py", "python3"}
SHELL_FENCES = {"bash", "sh", "shell"}


@dataclass(frozen=True)
class Block:
    """A fenced block of a markdown file, and the ``not run`` reason marked before it, if any."""

    path: Path
    line: int  # of the opening fence, from 1
    language: str
    text: str
    not_run: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, in order."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        marker = NOT_RUN.match(before)
        text = "\n".join(lines[i + 1 : end]) + "\n"
        not_run = None if marker is None else marker["reason"].strip()
        found.append(Block(path, i + 1, fence["language"], text, not_run))
        i = end + 1
    return found


ALL_BLOCKS = [block for path in DOCS for block in blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language in PYTHON_FENCES]


@dataclass(frozen=True)
class Command:
    """One ``python -m search.<command> ARGS`` of a bash block, and the comment after it."""

    block: Block
    argv: list[str]  # the module, then its arguments
    comment: str

    @property
    def where(self) -> str:
        return f"{self.block.where}:{' '.join(self.argv)}"


def commands(block: Block) -> list[Command]:
    """The ``python -m search.<command> ARGS`` of a bash block.

    Continued lines are joined, and a shell variable stands for the value 1 (``--trials "$2"``
    in a shell function); the arguments end at a shell operator or a comment.
    """
    script = re.sub(r"\$\{?\w+\}?", "1", block.text.replace("\\\n", " "))
    found = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        comment = line.partition(" #")[2]
        for i, token in enumerate(tokens[:-2]):
            if PYTHON.search(token) and tokens[i + 1] == "-m":
                module = tokens[i + 2]
                if not module.startswith("search."):
                    continue
                argv = [module]
                for arg in tokens[i + 3 :]:
                    if set(arg) <= SHELL_OPERATOR:
                        break
                    argv.append(arg)
                found.append(Command(block, argv, comment))
    return found


COMMANDS = [c for block in ALL_BLOCKS if block.language in SHELL_FENCES for c in commands(block)]


def parser_of(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser ``python -m MODULE ARGS`` parses ARGS with, and the ARGS it gets."""
    module, args = argv[0], argv[1:]
    module = PARSER_MODULE.get(module, module)
    return importlib.import_module(module).build_parser(), args


def parse(argv: list[str]) -> None:
    """Parse ``python -m MODULE ARGS`` with MODULE's parser, as its ``main`` would first."""
    parser, args = parser_of(argv)
    parsed = parser.parse_args(args)
    if argv[:2] == ["search.bench", "quality"]:
        # The flags after `--` go to every study's `python -m search.run`.
        from search.run import build_parser as run_parser

        run_parser().parse_args([a for a in parsed.run_args if a != "--"])


def options(argv: list[str]) -> set[str]:
    """Every option string the command of ``argv`` accepts (of its subcommand, if it has one)."""
    parser, args = parser_of(argv)
    for arg in args:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and arg in action.choices:
                parser = action.choices[arg]
    return set(parser._option_string_actions)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A folder as a fresh clone has it after the README's first commands, on a tiny study:
    ``studies/mnist-weight-decay.db`` (the default study, 3 trials of 2 epochs on 500 images,
    with its artifacts and seed confirmation), its CSV exports, and ``data/`` (MNIST)."""
    root = tmp_path_factory.mktemp("clone")
    (root / "studies").mkdir()
    (root / "data").symlink_to(mnist_dir)
    run = ["search.run", "--trials", "3", *tiny(mnist_dir, root / "studies", 2)]
    exports = [["search.export", *flags] for flags in ([], ["--all"], ["--history"])]
    for argv in [run, *exports]:
        done = subprocess.run(
            [sys.executable, "-m", *argv], cwd=root, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"python -m {' '.join(argv)} failed:\n{done.stderr}"
    return root


def test_docs_have_the_snippets_this_file_checks() -> None:
    assert len(PYTHON_BLOCKS) >= 3
    assert {c.argv[0] for c in COMMANDS} >= {"search.run", "search.export", "search.bench"}
    assert any("load_best" in block.text and block.not_run is None for block in PYTHON_BLOCKS)


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.not_run is not None], ids=lambda block: block.where
)
def test_not_run_markers_give_a_reason_and_mark_a_python_block(block: Block) -> None:
    assert block.not_run, f"{block.where}: say why the block can't run: <!-- not run: REASON -->"
    assert block.language in PYTHON_FENCES, f"{block.where}: only python blocks are run"


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.where)
def test_python_snippet_runs_as_pasted(block: Block, clone: Path) -> None:
    if block.not_run is not None:
        assert block.not_run  # an empty reason fails above, never silently skips
        pytest.skip(f"{block.where} not run: {block.not_run}")
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", block.text],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{block.where} fails as pasted:\n{done.stderr}"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.where)
def test_documented_command_parses(
    command: Command,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `--grid-from docs/quality/running-50.json` reads a committed benchmark's JSON while parsing.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "quality").symlink_to(REPO / "docs" / "quality")
    monkeypatch.chdir(tmp_path)
    try:
        parse(command.argv)
    except SystemExit as exit_:
        assert exit_.code == 0, f"{command.where}: {capsys.readouterr().err}"
    # argparse takes an unambiguous prefix too: a documented flag must be spelled out in full.
    args = command.argv[1:]
    end = args.index("--") if "--" in args else len(args)  # after `--`: search.run's flags
    own, passed_on = args[:end], args[end + 1 :]
    for part, accepted in ((own, options(command.argv)), (passed_on, options(["search.run"]))):
        flags = {arg.partition("=")[0] for arg in part if arg.startswith("--")}
        assert flags <= accepted, f"{command.where}: {sorted(flags - accepted)} abbreviated"


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if "--" in c.comment], ids=lambda command: command.where
)
def test_flags_named_in_a_command_comment_exist(command: Command) -> None:
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command.comment))
    assert named
    unknown = sorted(named - options(command.argv))
    assert not unknown, f"{command.where}: its comment names {unknown}, which it doesn't take"


def test_options_table_lists_every_run_flag() -> None:
    from search.run import build_parser

    table = (REPO / "docs" / "options.md").read_text()
    flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    missing = sorted(flag for flag in flags if not re.search(f"`{flag}[ `]", table))
    assert not missing, f"docs/options.md lacks {', '.join(missing)}"


def test_options_table_defaults_are_what_help_says() -> None:
    """docs/options.md's default column against ``search.run --help``'s own "(default: X)",
    which the catalogue writes from ``StudyConfig``: a default changed in the code and not in
    the table, or the other way round, fails here. A switch without a shown default is "off"."""
    from search.run import build_parser

    actions = build_parser()._option_string_actions
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in (REPO / "docs" / "options.md").read_text().splitlines()
        if line.startswith("| `--")
    ]
    checked, wrong = 0, []
    for cells in rows:
        flags = re.findall(r"`(--[a-z][a-z0-9-]*)", cells[0])
        shown = cells[1].replace("`", "")
        values = shown.split(", ")
        if len(values) != len(flags):  # one default for a pair: --decay-biases, --no-...
            flags, values = flags[:1], [shown]
        for flag, value in zip(flags, values, strict=True):
            action = actions[flag]
            helped = re.findall(r"\(default: (.*?)\)(?:$|[;,. ])", action.help or "")
            expected = helped[-1] if helped else "off"
            expected = {"True": "on", "False": "off"}.get(expected, expected)
            try:
                same = float(value) == float(expected)
            except ValueError:
                same = value == expected
            checked += 1
            if not same:
                wrong.append(f"{flag}: the table says {value!r}, --help {expected!r}")
    assert not wrong, "docs/options.md disagrees with --help: " + "; ".join(wrong)
    assert checked >= 30  # every row was read


def test_quality_tables_are_what_the_committed_evidence_gives() -> None:
    """Every quality table of the docs is ``python -m search.evidence``'s output from the
    bench's JSON under docs/quality/: a number edited by hand, or evidence re-measured without
    ``--write``, fails here."""
    from search.benchmarks import evidence

    tables = evidence.render(evidence.load(REPO / evidence.EVIDENCE_DIR))
    found = 0
    for path in (REPO / p for p in evidence.DOCUMENTS):
        text = path.read_text()
        found += sum(f"<!-- quality:{name} -->" in text for name in tables)
        assert evidence.fill(text, tables) == text, (
            f"{path.name}: its quality tables differ from the evidence; run "
            "python -m search.evidence --write"
        )
    assert found >= len(tables)  # each table is published somewhere


# A markdown link and the heading anchors GitHub derives: lower case, punctuation dropped
# but hyphens, spaces to hyphens.
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


def anchor_of(title: str) -> str:
    title = re.sub(r"`([^`]*)`", r"\1", title)  # code spans keep their text
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """``path``'s lines outside fenced blocks, numbered from 1."""
    kept, inside = [], False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            kept.append((number, line))
    return kept


def anchors(path: Path) -> set[str]:
    return {anchor_of(m["title"]) for _, line in prose_lines(path) if (m := HEADING.match(line))}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_its_heading(path: Path) -> None:
    broken = []
    for number, line in prose_lines(path):
        for link in LINK.finditer(line):
            target = link["target"]
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not this repository's
                continue
            file, _, anchor = target.partition("#")
            where = (path.parent / file).resolve() if file else path
            if not where.exists():
                broken.append(f"{path.name}:{number}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append(f"{path.name}:{number}: {target} (no such heading)")
    assert broken == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_code_fences_open_with_a_language_and_close_bare(path: Path) -> None:
    """A fence that does not close (text after the backticks, or an opening fence where a
    closing one belongs) swallows the prose after it into the code block."""
    problems, open_at = [], None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.startswith("```"):
            continue
        if open_at is None:
            if FENCE.match(line) is None or line.strip() == "```":
                problems.append(f"{path.name}:{number}: an opening fence needs a language")
            open_at = number
        elif line.strip() != "```":
            problems.append(f"{path.name}:{number}: the block from line {open_at} never closes")
            open_at = None
        else:
            open_at = None
    if open_at is not None:
        problems.append(f"{path.name}:{open_at}: this block never closes")
    assert problems == []


# What a measured figure looks like in prose: a date it was measured on, or a speed claim.
MEASURED = re.compile(
    r"\b20\d\d-[01]\d-[0-3]\d\b|\d(\.\d+)?x (faster|slower)|\d+% (faster|slower)"
)


def prose_of(path: Path) -> list[tuple[int, str]]:
    """A module's comments and docstrings, with their line numbers: its prose, not its code."""
    source = path.read_text()
    found = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                found.append((node.body[0].lineno, doc))
    return found


def test_docstrings_and_comments_carry_no_measured_figures() -> None:
    """A figure measured on some machine and day belongs in the docs, with its command beside
    it; a docstring that repeats it goes stale unseen when the docs are measured again."""
    modules = sorted([*(REPO / "search").rglob("*.py"), *(REPO / "models").rglob("*.py")])
    assert len(modules) > 50
    found = [
        f"{path.relative_to(REPO)}:{line}: {match.group()}"
        for path in modules
        for line, text in prose_of(path)
        for match in MEASURED.finditer(text)
    ]
    assert found == []


EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_every_example_file_is_on_its_page_as_pasted(example: Path) -> None:
    blocks = {block.text for block in PYTHON_BLOCKS if block.path.name == "your-own-model.md"}
    assert example.read_text() in blocks, f"docs/your-own-model.md shows another {example.name}"


def test_the_cnn_example_runs_a_study_and_its_test_split(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """As the page runs it, on 256 images and one epoch: it reads MNIST from ./data."""
    from search import evaluate, run
    from tests.helpers import run_cli

    monkeypatch.chdir(mnist_dir.parent)
    where = ["--storage", f"sqlite:///{tmp_path / 's.db'}", "--artifacts", str(tmp_path / "a")]
    argv = ["--task", "docs/examples/cnn_mnist.py:task", "--trials", "2", "--epochs", "1",
            "--subset", "256", "--parallel-trials", "2", "--confirm-seeds", "0",
            "--device", "cpu", "--quiet", *where]  # fmt: skip
    status, out, err = run_cli(run.main, argv, capsys)
    assert status == 0, err
    assert "study 'mnist-cnn-weight-decay': 2 of 2 trials finished" in out
    argv = ["--study-name", "mnist-cnn-weight-decay", *where, "--device", "cpu", "--quiet"]
    status, out, err = run_cli(evaluate.main, argv, capsys)
    assert status == 0, err
    assert "test set (10,000 examples)" in out
