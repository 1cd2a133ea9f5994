"""search.dashboard: optuna-dashboard on a real study, checked over HTTP and in Chromium."""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note

from search import dashboard
from search.config import StudyConfig
from search.dashboard import is_loopback, make_dashboard_server
from search.data.splits import Splits
from search.engine.drive import run_trials
from search.engine.objective import Objective
from search.engine.strategy import new_study
from search.study.artifacts import artifact_store
from search.study.history import trial_history
from search.study.notes import history_note
from search.study.storage import make_storage
from tests.helpers import REPO, run_cli

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# Headless, and nothing that reaches for the network or a profile of its own.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-quic",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2000",
)
PAGE_TIMEOUT_S = 60  # a cold Chromium on a busy 2-core machine renders the page in seconds


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> str:
    """A finished study with stored weights: #0 pruned as infeasible, #1 and #2 complete."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'study.db'}"
    config = StudyConfig(storage=url, epochs=3, subset=2000, max_train_acc=0.83, device="cpu")
    study = new_study(make_storage(url), config, {})
    for weight_decay in (1e-6, 1e-1, 5e-2):
        study.enqueue_trial({"weight_decay": weight_decay})
    objective = Objective(config, tiny_splits, artifact_store(url, create=True))
    run_trials(study, objective, config.replace(trials=3))
    assert [t.state for t in study.trials] == [
        TrialState.PRUNED,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    return url


@pytest.fixture
def study(url: str) -> optuna.Study:
    return optuna.load_study(study_name=StudyConfig().study_name, storage=url)


def test_history_note_lists_the_constraint_and_every_epoch() -> None:
    keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
    rows = [
        dict(zip(keys, (1, 0.9, 0.7, 0.5, 0.8, 0.2), strict=True)),
        dict(zip(keys, (2, 0.4, 0.86, 0.4, 0.85, 0.1), strict=True)),
    ]
    note = history_note(rows, 1e-6, 0.03, 0.83, "infeasible: over the limit at epoch 2")
    lines = note.splitlines()
    assert lines[0] == "**pruned: infeasible: over the limit at epoch 2**, weight_decay = 1e-06"
    assert "`train_accuracy`: +0.0300" in note and "**infeasible**" in note
    assert lines[-2:] == [
        "| 1 | 0.9000 | 0.7000 |  | 0.5000 | 0.8000 | 0.20 |",  # no final weights' accuracy:
        "| 2 | 0.4000 | 0.8600 |  | 0.4000 | 0.8500 | 0.10 |",  # a study from before it
    ]


def test_every_finished_trial_has_its_history_note(study: optuna.Study) -> None:
    for trial in study.trials:
        note = get_note(optuna.Trial(study, trial._trial_id))
        assert note.count("\n| ") == len(trial_history(trial)) + 1  # + the rule row
        assert ("**complete**" in note) == (trial.state == TrialState.COMPLETE)


@pytest.fixture
def server(url: str) -> Iterator[str]:
    """The dashboard's WSGI server in a thread on a free port; yields its base URL."""
    httpd = make_dashboard_server(make_storage(url), "127.0.0.1", 0, artifact_store(url))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_dashboard_serves_each_complete_trials_weights(
    study: optuna.Study, url: str, server: str
) -> None:
    storage = make_storage(url)
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.trials:
        if trial.state != TrialState.COMPLETE:
            assert "model_artifact_id" not in trial.user_attrs
            continue
        artifact_id = trial.user_attrs["model_artifact_id"]
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        with urllib.request.urlopen(
            f"{server}/artifacts/{study_id}/{trial_id}/{artifact_id}"
        ) as r:
            served = r.read()
        stored = Path(url.removeprefix("sqlite:///")).parent / "artifacts" / artifact_id
        assert served == stored.read_bytes() and len(served) > 100_000  # 784*128 floats and more


def test_dashboard_of_a_missing_study_is_one_line(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'nothing.db'}"
    status, out, err = run_cli(dashboard.main, ["--storage", url, "--port", "0"], capsys)
    assert status == 2 and out == "" and "no study database" in err
    assert not (tmp_path / "nothing.db").exists()


def test_dashboard_on_a_busy_port_is_one_line(url: str, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, out, err = run_cli(dashboard.main, ["--storage", url, "--port", str(port)], capsys)
    assert status == 2 and out == ""
    assert f"--port {port}: can't listen there" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("lab", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture
def dashboard_process(url: str) -> Iterator[str]:
    """``python -m search.dashboard --port 0`` as a user runs it; yields the URL it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "search.dashboard", "--storage", url, "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    try:
        while True:
            line = lines.get(timeout=PAGE_TIMEOUT_S)
            if line.startswith("dashboard: "):
                break
        yield line.removeprefix("dashboard: ").strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
def test_dashboard_shows_the_study_and_its_trials_in_chromium(
    study: optuna.Study, dashboard_process: str, tmp_path: Path
) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert dashboard_process.startswith("http://127.0.0.1:")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:

        def page_shows(*texts: str):
            return lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts)

        # The study page: its name, and its best feasible trial in the note's place.
        driver.get(dashboard_process)
        WebDriverWait(driver, PAGE_TIMEOUT_S).until(page_shows(study.study_name, "History"))
        driver.save_screenshot(str(tmp_path / "study.png"))
        # The trial list, opened on the best trial: state, note with constraint and epochs,
        # and its weights under Artifacts.
        best = study.best_trial.number
        driver.get(f"{dashboard_process}/trials?numbers={best}")
        model = f"trial-{best}-model.pt"
        shown = ["3 Trials", "Trial 0", "Trial 1", "Trial 2", "Pruned", "Complete"]
        shown += ["Constraint train_accuracy", "val accuracy", "Artifacts", model]
        WebDriverWait(driver, PAGE_TIMEOUT_S).until(page_shows(*shown))
        assert driver.save_screenshot(str(tmp_path / "dashboard.png"))
    finally:
        driver.quit()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
