"""The hostile pass as tests: bad inputs to every command, each one line, its exit status, no
traceback, and the study and its folder as they were.

Most fail at argument validation, so they run in-process (``main`` as ``__main__`` runs it);
the few where a real process is the point (signals, start-up) run as subprocesses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution

from search import bench, dashboard, evaluate, experiment, export, report, run
from search.config import STUDIES_DIR, StudyConfig
from search.data import fetch
from search.engine.strategy import new_study
from search.study.storage import make_storage
from tests.helpers import REPO, run_cli, wait_until

SECRET = "s3cret-pw"
Main = Callable[[list[str] | None], int]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding one study in studies/ (the default place), the commands' cwd."""
    monkeypatch.chdir(tmp_path)
    STUDIES_DIR.mkdir()
    config = StudyConfig()
    study = new_study(make_storage(config.storage_url), config, {})
    study.add_trial(
        optuna.trial.create_trial(
            params={"weight_decay": 1e-3},
            distributions={"weight_decay": FloatDistribution(1e-6, 1e-1, log=True)},
            value=0.9,
            user_attrs={"val_accuracy": 0.9, "train_accuracy": 0.9},
        )
    )
    make_storage(config.storage_url).engine.dispose()
    (tmp_path / "a-file.txt").write_text("not a folder\n")
    return tmp_path


def snapshot(folder: Path) -> tuple[set[str], list[tuple[object, ...]]]:
    """The files under ``folder`` (less SQLite's transient -wal/-shm) and the study's trials."""
    files = {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if not p.name.endswith(("-wal", "-shm"))
    }
    study = optuna.load_study(
        study_name=StudyConfig().study_name, storage=StudyConfig().storage_url
    )
    trials = [(t.number, t.state, t.params, t.user_attrs) for t in study.trials]
    return files, trials


LONG = "a" * 300
BAD_PORT_URL = f"postgresql://u:{SECRET}@db.example:abc/wd"
OPEN_BRACKET_URL = f"postgresql://u:{SECRET}@[::1/wd"

# (command, argv, exit status, what the line says). Paths are relative to ``workdir``.
CASES: list[tuple[Main, list[str], int, str]] = [
    (run.main, ["--seed", "-1"], 2, "--seed: must be an integer from 0 to"),
    (run.main, ["--seed", "99999999999999999999999"], 2, "--seed: must be an integer"),
    (run.main, ["--seed", "x"], 2, "--seed: must be an integer"),
    (run.main, ["--study-name", "../escaped"], 2, "--study-name: a study name is"),
    (run.main, ["--study-name", ""], 2, "--study-name: a study name is"),
    (run.main, ["--study-name", LONG], 2, "at most 64 characters, got 300 characters"),
    (run.main, ["--study-name", ".hidden"], 2, "not starting with '.' or '-'"),
    (run.main, ["--study-name=-flag"], 2, "not starting with '.' or '-'"),
    (run.main, ["--study-name", "a/b"], 2, "--study-name: a study name is"),
    (run.main, ["--study-name", "=1+1"], 2, "--study-name: a study name is"),
    (run.main, ["--study-name", "tab\there"], 2, "--study-name: a study name is"),
    (run.main, ["--data-dir", "a-file.txt"], 2, "--data-dir: a-file.txt is a file"),
    (run.main, ["--artifacts", "a-file.txt"], 2, "--artifacts: a-file.txt is a file"),
    (run.main, ["--subset", "1"], 2, "--subset: must be at least 100 images"),
    (run.main, ["--subset", "0"], 2, "--subset: must be a positive integer"),
    (run.main, ["--storage", BAD_PORT_URL], 2, "is not a database URL"),
    (run.main, ["--storage", OPEN_BRACKET_URL], 2, "is not a database URL"),
    (run.main, ["--storage", "not a url"], 2, "is not a database URL"),
    (run.main, ["--storage", "sqlite:///no-such-dir/x.db"], 2, "no-such-dir does not exist"),
    (run.main, ["--storage", "sqlite:///a-file.txt"], 2, "is not a SQLite database"),
    (run.main, ["--wd-low", "1", "--wd-high", "0.1"], 2, "--wd-low must be below --wd-high"),
    (run.main, ["--trials", "0"], 2, "--trials: must be a positive integer"),
    (run.main, ["--max-train-acc", "2"], 2, "--max-train-acc: must be a fraction"),
    (run.main, ["--lr", "nan"], 2, "--lr: must be a positive number"),
    (run.main, ["--workers", "9"], 2, "one SQLite file carries at most 8 workers"),
    (run.main, ["--grace-period", "61"], 2, "must be at most 60 seconds"),
    (run.main, ["--heartbeat-interval", "30"], 2, "--grace-period must exceed"),
    (run.main, ["--task", "synthetic", "--validation", "test"], 2, "the synthetic task has"),
    (run.main, ["--optimizer", "lbfgs"], 2, "--optimizer: invalid choice"),
    (run.main, ["--epochs", "-3"], 2, "--epochs: must be a positive integer"),
    (export.main, ["--out", "studies"], 2, "--out studies: is a directory"),
    (export.main, ["--out", "no-such-dir/x.csv"], 2, "directory no-such-dir does not exist"),
    (export.main, ["--study-name", "=HYPERLINK(1)"], 2, "--study-name: a study name is"),
    (export.main, ["--study-name", "nosuch"], 2, "no study database at studies/nosuch.db"),
    (export.main, ["--storage", BAD_PORT_URL], 2, "is not a database URL"),
    (
        export.main,
        ["--storage", "sqlite:///studies/mnist-weight-decay.db", "--study-name", "x"],
        2,
        "no study named 'x'",
    ),  # fmt: skip
    (report.main, ["--out", "a-file.txt"], 2, "--out a-file.txt: is a file"),
    (report.main, ["--study-name", "../x"], 2, "--study-name: a study name is"),
    (dashboard.main, ["--port", "99999"], 2, "--port: must be a port from 0 to 65535"),
    (dashboard.main, ["--port", "-1"], 2, "--port: must be a port from 0 to 65535"),
    (dashboard.main, ["--port", "http"], 2, "--port: must be a port from 0 to 65535"),
    (dashboard.main, ["--storage", OPEN_BRACKET_URL], 2, "is not a database URL"),
    (evaluate.main, ["--trial", "3"], 2, "--trial needs --replay"),
    (evaluate.main, ["--trial", "-1", "--replay"], 2, "--trial: must be an integer of 0"),
    (evaluate.main, ["--data-dir", "a-file.txt"], 2, "--data-dir: a-file.txt is a file"),
    (evaluate.main, ["--study-name", ""], 2, "--study-name: a study name is"),
    (experiment.main, ["mnist", "--seed", "-1"], 2, "--seed: must be an integer"),
    (experiment.main, ["mnist", "--subset", "1"], 2, "--subset: must be at least 100"),
    (experiment.main, ["pipeline", "--seed", "2**40"], 2, "--seed: must be an integer"),
    (bench.main, ["--out", "studies"], 2, "--out studies: give a file path"),
    (bench.main, ["--steps", "0"], 2, "--steps: must be a positive integer"),
    (
        bench.main,
        ["quality", "--grid-from", "a-file.txt"],
        2,
        "--grid-from: a-file.txt: no grid in it",
    ),
    (bench.main, ["quality", "--simulate", "-1"], 2, "--simulate: must be an integer of 0"),
    (
        bench.main,
        ["quality", "--", "--search-space", "full"],
        2,
        "--search-space full: the grid optimum is one recipe's; measure each recipe on its own",
    ),
    (fetch.main, ["--data-dir", "a-file.txt"], 2, "--data-dir: a-file.txt is a file"),
]


@pytest.mark.parametrize(
    ("main", "argv", "status", "says"),
    CASES,
    ids=[f"{main.__module__.split('.')[-1]} {' '.join(argv)[:40]}" for main, argv, *_ in CASES],
)
def test_bad_input_is_one_line_and_changes_nothing(
    main: Main, argv: list[str], status: int, says: str, workdir: Path, capsys
) -> None:
    before = snapshot(workdir)
    got, out, err = run_cli(main, argv, capsys)
    assert got == status
    assert len(err.splitlines()) == 1 and says in err, err
    assert "Traceback" not in out + err and SECRET not in out + err
    assert snapshot(workdir) == before


def test_the_study_name_rule_leaves_room_for_a_confirmation_sibling() -> None:
    from search.flag_values import study_name

    longest = "a" * 64
    assert study_name(longest) == longest
    assert study_name(longest + "-confirm") == longest + "-confirm"
    assert study_name("mnist_wd.v2-a") == "mnist_wd.v2-a"


def test_new_study_that_fails_on_its_data_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"not mnist")  # corrupt: refused, not fetched
    status, _, err = run_cli(run.main, ["--data-dir", "data", "--device", "cpu"], capsys)
    assert status == 1 and len(err.splitlines()) == 1 and "is corrupt or not MNIST" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no studies/, no .db


def start_command(*argv: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
    )  # fmt: skip


@pytest.mark.parametrize("library", ["sqlalchemy", "torch"])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(library: str, tmp_path: Path) -> None:
    """SIGINT while the command imports SQLAlchemy (its module imports) or PyTorch (after its
    flags are parsed): one line, 130, nothing created. The command holds at the start of that
    import until the signal comes (tests/hold_import), so the signal lands there for sure."""
    # MNIST from the repo's data/: a fetch here would put a pip subprocess in the signal's way.
    data = str(REPO / "data")
    ready = tmp_path.parent / f"{tmp_path.name}-importing-{library}"
    command = subprocess.Popen(
        [sys.executable, "-m", "search.run", "--trials", "1", "--subset", "100",
         "--data-dir", data],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'hold_import'}{os.pathsep}{REPO}",
             "SEARCH_TEST_HOLD_IMPORT": library, "SEARCH_TEST_HOLD_READY": str(ready)},
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(ready.exists, command, timeout=300)
        command.send_signal(signal.SIGINT)
        _, err = command.communicate(timeout=300)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.communicate()
    assert command.returncode == 130, err
    assert len(err.splitlines()) == 1 and err.startswith("interrupted by SIGINT"), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["search.run", "--seed", "-1"],
        ["search.export", "--storage", BAD_PORT_URL],
        ["search.dashboard", "--port", "99999"],
        ["search.data", "--data-dir", "README.md"],
    ],
)
def test_bad_input_to_a_real_process_is_one_line_and_exit_2(argv: list[str]) -> None:
    command = start_command(*argv, cwd=REPO)
    out, err = command.communicate(timeout=120)
    assert command.returncode == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err and SECRET not in out + err
