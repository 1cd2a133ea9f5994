"""search.run as a user meets it: resume up to the budget, progress, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note

from search import run
from search.config import StudyConfig
from tests.helpers import REPO, run_cli


def flags(config: StudyConfig) -> list[str]:
    return [
        "--storage", config.storage_url,
        "--epochs", str(config.epochs),
        "--subset", str(config.subset),
        "--data-dir", str(config.data_dir),
        "--device", "cpu",
    ]  # fmt: skip


def load(config: StudyConfig) -> optuna.Study:
    return optuna.load_study(study_name=config.study_name, storage=config.storage_url)


def test_run_resumes_up_to_the_budget(tiny_config: StudyConfig, capsys) -> None:
    status, out, _ = run_cli(run.main, ["--trials", "2", *flags(tiny_config)], capsys)
    assert status == 0
    assert out.count("weight_decay=") >= 2 and "2 of 2 trials finished" in out
    first = [(t.number, t.params, t.datetime_start) for t in load(tiny_config).trials]

    status, out, _ = run_cli(run.main, ["--trials", "4", *flags(tiny_config)], capsys)
    assert status == 0 and "2 of 4 trials finished" in out
    study = load(tiny_config)
    assert len(study.trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    # The first run's trials are kept as they were, not re-run.
    assert [(t.number, t.params, t.datetime_start) for t in study.trials[:2]] == first

    status, out, _ = run_cli(run.main, ["--trials", "4", *flags(tiny_config)], capsys)
    assert status == 0 and "already holds 4 finished trials" in out
    assert len(load(tiny_config).trials) == 4


def test_run_resumed_does_not_repeat_the_first_runs_proposals(
    tiny_config: StudyConfig, capsys
) -> None:
    argv = ["--sampler", "random", *flags(tiny_config)]
    assert run_cli(run.main, ["--trials", "2", *argv], capsys)[0] == 0
    assert run_cli(run.main, ["--trials", "4", *argv], capsys)[0] == 0
    decays = [t.params["weight_decay"] for t in load(tiny_config).trials]
    assert len(decays) == 4 and len(set(decays)) == 4


def test_run_records_the_study_config(tiny_config: StudyConfig, capsys) -> None:
    argv = ["--trials", "1", "--validation", "test", "--seed", "3", *flags(tiny_config)]
    status, _, err = run_cli(run.main, argv, capsys)
    assert status == 0 and "official test set" in err
    attrs = load(tiny_config).user_attrs
    assert attrs["config"] == tiny_config.replace(validation="test", seed=3).recorded()
    assert attrs["config"]["validation"] == "test" and attrs["config"]["batch_size"] == 64
    assert len(attrs["data_checksums"]) == 4  # test mode reads the test files too
    assert attrs["train_size"] == attrs["val_size"] == tiny_config.subset


def test_run_says_plainly_when_no_trial_is_feasible(tiny_config: StudyConfig, capsys) -> None:
    argv = ["--trials", "1", "--max-train-acc", "0.05", *flags(tiny_config)]
    status, out, _ = run_cli(run.main, argv, capsys)
    assert status == 0
    assert "no trial was feasible (running training accuracy at or under 0.05)\n" in out
    assert (
        "every trial went over the training-accuracy limit 0.05 up to --wd-high 0.1: the edge "
        "lies above the range; raise --wd-high (in a new study: a study keeps its range)"
    ) in out


def test_run_says_when_the_best_trial_sits_at_the_low_end_of_the_range(
    tiny_config: StudyConfig, capsys
) -> None:
    """A limit no trial reaches: the answer is where the range stops, and the run says so."""
    argv = ["--trials", "3", "--max-train-acc", "0.99", "--parallel-trials", "3"]
    status, out, _ = run_cli(run.main, [*argv, *flags(tiny_config)], capsys)
    assert status == 0
    study = load(tiny_config)
    lowest = min(study.trials, key=lambda t: t.params["weight_decay"])
    best = study.best_trial.number
    if best == lowest.number:
        expected = f"no trial went over the limit 0.99 and the best, #{best}, is the lowest"
    else:
        expected = f"the constraint never bound, so #{best} is the range's optimum"
    assert expected in out and "lower --wd-low" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trials", "0"], "--trials: must be a positive integer, got '0'"),
        (["--trials", "ten"], "--trials: must be a positive integer, got 'ten'"),
        (["--wd-low", "1e-2", "--wd-high", "1e-3"], "--wd-low must be below --wd-high"),
        (["--wd-low", "-1"], "--wd-low: must be a positive number, got '-1'"),
        (["--wd-high", "0"], "--wd-high: must be a positive number"),
        (["--max-train-acc", "95"], "--max-train-acc: must be a fraction in (0, 1]"),
        (["--sampler", "cmaes"], "--sampler: invalid choice: 'cmaes'"),
        (["--pruner", "asha"], "--pruner: invalid choice: 'asha'"),
        (["--storage", "not a url"], "--storage: not a url is not a database URL (Could not"),
        (["--storage", "nosuchdb://x/y"], "--storage nosuchdb://x/y: Can't load plugin"),
        (["--storage", "sqlite:////no/such/dir/s.db"], "directory /no/such/dir does not exist"),
    ],
)
def test_run_bad_flags_fail_with_one_line(argv: list[str], message: str, capsys) -> None:
    status, out, err = run_cli(run.main, argv, capsys)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_run_refuses_a_study_with_the_wrong_direction(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(storage=url, study_name="mnist-weight-decay", direction="minimize")
    status, _, err = run_cli(run.main, ["--storage", url], capsys)
    assert status == 2 and "is not a single maximized objective" in err
    assert "--study-name" in err
    study = optuna.load_study(study_name="mnist-weight-decay", storage=url)
    assert study.trials == [] and study.user_attrs == {}  # untouched


def test_run_refuses_to_resume_with_other_settings(tiny_config: StudyConfig, capsys) -> None:
    assert run_cli(run.main, ["--trials", "1", *flags(tiny_config)], capsys)[0] == 0
    argv = ["--trials", "3", *flags(tiny_config.replace(epochs=3))]
    status, _, err = run_cli(run.main, argv, capsys)
    assert status == 2
    assert "was created with --epochs 2 (got 3)" in err and "--study-name" in err
    assert len(load(tiny_config).trials) == 1


def test_run_masks_the_storage_password(capsys) -> None:
    url = "postgresql+nosuchdriver://alice:s3cret@127.0.0.1:1/db"
    status, out, err = run_cli(run.main, ["--storage", url], capsys)
    assert status == 2
    assert "s3cret" not in out + err and "alice:***@127.0.0.1" in err


@pytest.mark.slow
def test_cli_end_to_end_on_real_mnist(tmp_path: Path, mnist_dir: Path) -> None:
    """The real commands in real processes, on full MNIST: a tiny study, then its export."""
    url = f"sqlite:///{tmp_path / 'e2e.db'}"

    def command(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", module, *argv],
            cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    study = command(
        "search.run", "--trials", "2", "--epochs", "1", "--storage", url,
        "--data-dir", str(mnist_dir), "--max-train-acc", "0.99",
    )  # fmt: skip
    assert study.returncode == 0, study.stderr
    assert "best feasible trial #" in study.stdout
    out = tmp_path / "best.csv"
    exported = command("search.export", "--storage", url, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    row = pd.read_csv(out).iloc[0]
    trial = optuna.load_study(study_name="mnist-weight-decay", storage=url).best_trial
    assert row["trial"] == trial.number and row["val_accuracy"] == trial.value
    # One epoch on 50,000 images: far better than chance, short of the seed's final figures.
    assert 0.85 < row["val_accuracy"] < 0.99 and row["epochs"] == 1
    bad = command("search.run", "--trials", "-3")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_run_resumes_by_name_with_the_stored_settings(tiny_config: StudyConfig, capsys) -> None:
    argv = ["--trials", "1", "--sampler", "random", "--lr", "0.002", *flags(tiny_config)]
    assert run_cli(run.main, argv, capsys)[0] == 0
    # Only where the study is and the larger budget: everything else comes from the study.
    by_name = ["--storage", tiny_config.storage_url, "--data-dir", str(tiny_config.data_dir)]
    status, out, _ = run_cli(run.main, [*by_name, "--trials", "2"], capsys)
    assert status == 0 and "1 of 2 trials finished" in out and "2 of 2 trials finished" in out
    study = load(tiny_config)
    assert len(study.trials) == 2
    assert study.user_attrs["config"]["lr"] == 0.002 and study.user_attrs["config"]["epochs"] == 2
    assert study.user_attrs["run_settings"]["trials"] == 2
    assert study.user_attrs["run_settings"]["sampler"] == "random"
    assert len(study.trials[1].intermediate_values) <= 2  # trained with the stored --epochs 2
    # Without --trials, the stored budget: nothing left to run.
    status, out, _ = run_cli(run.main, by_name, capsys)
    assert status == 0 and "already holds 2 finished trials" in out


def test_run_refuses_every_contradicting_flag_in_one_line(
    tiny_config: StudyConfig, capsys
) -> None:
    assert run_cli(run.main, ["--trials", "1", *flags(tiny_config)], capsys)[0] == 0
    argv = ["--epochs", "3", "--lr", "0.01", "--subset", "500", "--seed", "0"]
    status, out, err = run_cli(run.main, ["--storage", tiny_config.storage_url, *argv], capsys)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "--epochs 2 (got 3), --lr 0.001 (got 0.01), --subset 2000 (got 500)" in err
    assert "--seed" not in err  # given, but as stored
    assert len(load(tiny_config).trials) == 1


def test_run_prints_counted_lines_off_a_terminal(tiny_config: StudyConfig, capsys) -> None:
    status, out, _ = run_cli(run.main, ["--trials", "2", *flags(tiny_config)], capsys)
    assert status == 0
    assert "[1/2] trial" in out and "[2/2] trial" in out
    assert "feasible trial yet" in out or "best #" in out
    status, out, _ = run_cli(run.main, ["--trials", "3", "--quiet", *flags(tiny_config)], capsys)
    assert status == 0 and "[3/3]" not in out and "3 of 3 trials finished" in out


def test_resume_that_trains_nothing_says_so_and_names_the_confirmation(
    tiny_config: StudyConfig, capsys
) -> None:
    argv = [
        "--trials",
        "2",
        "--confirm-seeds",
        "1",
        "--max-train-acc",
        "0.99",
        *flags(tiny_config),
    ]
    status, out, _ = run_cli(run.main, argv, capsys)
    assert status == 0 and "2 of 2 trials finished, 2 by this run" in out
    counts = out.split("\ntrials: ")[1].splitlines()[0]  # "2 feasible, 0 infeasible, ..."
    assert sum(int(part.split()[0]) for part in counts.split(", ")) == 2
    assert "1 run trained now in" in out or "2 runs trained now in" in out
    status, out, _ = run_cli(run.main, argv, capsys)
    assert status == 0 and "none by this run (the budget was met already)" in out
    assert "trained now" not in out
    assert "reused from the confirmation of " in out and " after 2 trials, which trained" in out
    note = get_note(load(tiny_config))  # the dashboard's note says the same
    assert "trained now" not in note and "by the confirmation of " in note
