"""Helpers the tests import: run a command's main in-process as its ``__main__`` would, or
start it as a real process and watch its study from outside."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from search.cli import run_command
from search.config import StudyConfig
from search.data.splits import Splits
from search.engine.drive import run_trials
from search.engine.objective import Objective
from search.engine.strategy import new_study
from search.study.storage import make_storage

REPO = Path(__file__).resolve().parent.parent
STUDY = "mnist-weight-decay"
# Trials that run every epoch: nothing prunes them, so a signal finds them mid-trial.
UNPRUNED = ["--pruner", "none", "--max-train-acc", "1"]


def run_cli(
    main: Callable[[list[str] | None], int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run a command's ``main`` as its ``__main__`` would; returns (exit status, out, err)."""
    old = sys.argv
    sys.argv = ["prog", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_command(main)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def enqueued_study(
    config: StudyConfig, splits: Splits, weight_decays: list[float]
) -> optuna.Study:
    """Run one trial per listed weight decay, one at a time, in order (enqueued, so the sampler
    can't pick others): a small study whose trials a test knows in advance."""
    study = new_study(make_storage(config.storage_url), config, {})
    for weight_decay in weight_decays:
        study.enqueue_trial({"weight_decay": weight_decay})
    run_trials(study, Objective(config, splits), config.replace(trials=len(weight_decays)))
    return study


def tiny(mnist_dir: Path, tmp_path: Path, epochs: int, parallel: int = 1) -> list[str]:
    """Flags of a study on 500 images: a few hundredths of a second per epoch.

    One trial at a time per worker unless told (``parallel``): trial counts then follow from
    the number of workers alone.
    """
    return [
        "--epochs", str(epochs), "--subset", "500", "--data-dir", str(mnist_dir),
        "--device", "cpu", "--artifacts", str(tmp_path / "artifacts"),
        "--parallel-trials", str(parallel),
    ]  # fmt: skip


def start(*argv: str, stderr_to: Path | None = None) -> subprocess.Popen[str]:
    """``python -m search.run`` in its own process group, as a terminal would run it.

    Its standard error goes to ``stderr_to`` where given, so a test can wait on a line the
    command has printed while it still runs.
    """
    stderr = subprocess.PIPE if stderr_to is None else stderr_to.open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "search.run", *argv],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
            start_new_session=True,
        )  # fmt: skip
    finally:
        if stderr_to is not None:
            stderr.close()  # type: ignore[union-attr]  # the child holds its own copy


def start_held(hold: Path, *argv: str) -> subprocess.Popen[str]:
    """``start``, with every trial holding after its first epoch until ``hold`` is removed
    (tests/held_run.py): a kill or a signal then finds them mid-training however fast the
    machine, and the test lets them go on by removing ``hold``."""
    hold.touch()
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "held_run.py"), *argv],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SEARCH_TEST_HOLD": str(hold)}, start_new_session=True,
    )  # fmt: skip


def trials(url: str) -> list[FrozenTrial]:
    """The study's trials as another process sees them now (none before it exists)."""
    try:
        return optuna.load_study(study_name=STUDY, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def wait_until(
    condition: Callable[[], bool], process: subprocess.Popen[str], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the command ended ({process.returncode}) first: {err}")
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.1)


def training(url: str, count: int) -> Callable[[], bool]:
    """True once ``count`` trials are running and have each reported an epoch."""
    return lambda: (
        sum(t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in trials(url))
        >= count
    )


def worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def states(study_trials: list[FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study_trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


# A grace period no pause of a busy machine reaches, and how far back ``age_heartbeats`` sets
# the clock of every beat: past it. Heartbeat tests then wait on database states, never on
# SQLite's whole-second clock.
GRACE_S = 60
AGED_S = 2 * GRACE_S


def age_heartbeats(
    storage: optuna.storages.RDBStorage,
    seconds: float = AGED_S,
    numbers: Collection[int] | None = None,
) -> None:
    """The last heartbeat of every trial in ``storage``'s database (or of the trials
    ``numbers``) moved ``seconds`` back: what the database holds after that long without a
    beat, without waiting for it."""
    import datetime

    import sqlalchemy

    query = (
        "SELECT h.trial_heartbeat_id, h.heartbeat, t.number FROM trial_heartbeats h "
        "JOIN trials t ON t.trial_id = h.trial_id"
    )
    with storage.engine.begin() as connection:
        rows = connection.execute(sqlalchemy.text(query)).all()
        for heartbeat_id, beat, number in rows:
            if numbers is not None and number not in numbers:
                continue
            if isinstance(beat, str):  # SQLite hands a DATETIME back as text
                beat = datetime.datetime.fromisoformat(beat)
            connection.execute(
                sqlalchemy.text(
                    "UPDATE trial_heartbeats SET heartbeat = :beat WHERE trial_heartbeat_id = :id"
                ),
                {"beat": beat - datetime.timedelta(seconds=seconds), "id": heartbeat_id},
            )


def age_heartbeats_at(url: str, numbers: Collection[int] | None = None) -> None:
    """``age_heartbeats`` on the study database at ``url``, from outside its processes."""
    storage = optuna.storages.RDBStorage(url)
    try:
        age_heartbeats(storage, numbers=numbers)
    finally:
        storage.engine.dispose()


def wait_dead(pid: int) -> None:
    """Wait until process ``pid`` is gone or a zombie: a killed worker's heartbeat thread can
    beat no more (``os.kill`` returns before the process has died)."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.01)
    pytest.fail(f"process {pid} still alive 60 s after SIGKILL")


def held_trials(hold: Path) -> dict[int, int]:
    """Which trial each process of a ``start_held`` run holds: pid to trial number, as
    tests/held_run.py writes them beside ``hold``."""
    return {
        int(path.name.rsplit(".", 1)[1]): int(path.read_text())
        for path in hold.parent.glob(f"{hold.name}.*")
        if path.read_text()
    }
