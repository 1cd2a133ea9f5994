"""``python -m search.experiment``: the seed's MNIST script and its pipeline trace, run small."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from search import experiment
from search.experiment import SEED_CLAIMS, SeedEpoch, results_table
from tests.helpers import run_cli

# The seed's print line: f'Epoch {epoch+1}: Train Loss={train_loss:.4f}, Train Acc=...'
SEED_LINE = re.compile(
    r"^Epoch (\d+): Train Loss=\d+\.\d{4}, Train Acc=\d+\.\d{2}%, "
    r"Val Loss=\d+\.\d{4}, Val Acc=\d+\.\d{2}%$"
)


def epoch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("Epoch ")]


def test_experiment_mnist_prints_the_seeds_lines_and_the_table(
    mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["mnist", "--data-dir", str(mnist_dir), "--subset", "1000", "--epochs", "1"]
    status, out, _ = run_cli(experiment.main, argv, capsys)
    assert status == 0
    assert "1000 training images, 1000 test images as validation" in out
    lines = epoch_lines(out)
    assert len(lines) == 3  # one epoch for each of before, after, bonus
    assert all(SEED_LINE.match(line) for line in lines), lines
    for header in ("== before: weight_decay=0 ==", "== after: weight_decay=0.001 =="):
        assert header in out
    table = out[out.index("run ") :].splitlines()
    assert [row.split()[0] for row in table[1:6]] == ["before", "seed", "after", "seed", "bonus"]
    assert table[2].split()[2:] == ["0.02", "99%", "0.45", "85%", "not", "met"]
    assert table[4].split()[2:] == ["0.12", "93%", "0.30", "91%", "met"]


def test_experiment_mnist_is_reproducible_from_its_seed(
    mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["mnist", "--data-dir", str(mnist_dir), "--subset", "300", "--weight-decays", "0"]
    argv += ["--epochs", "2"]
    first = epoch_lines(run_cli(experiment.main, argv, capsys)[1])
    again = epoch_lines(run_cli(experiment.main, argv, capsys)[1])
    other = epoch_lines(run_cli(experiment.main, [*argv, "--seed", "1"], capsys)[1])
    assert len(first) == 2
    assert first == again
    assert first != other


def test_results_table_judges_the_seeds_goal() -> None:
    finals = [
        (0.0, SeedEpoch(10, 0.05, 98.5, 0.08, 97.6)),
        (1e-3, SeedEpoch(10, 0.2, 94.9, 0.25, 93.0)),
        (5e-3, SeedEpoch(10, 0.3, 95.0, 0.30, 92.0)),  # training must stay *below* 95%
    ]
    rows = results_table(finals)
    assert rows[1].startswith("before") and rows[1].endswith("not met")
    assert rows[3].startswith("after") and rows[3].endswith("  met")
    assert rows[5].startswith("bonus") and rows[5].endswith("not met")
    assert SEED_CLAIMS[1e-3].meets_goal() and not SEED_CLAIMS[0.0].meets_goal()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mnist", "--weight-decays", "0,-1e-3"], "--weight-decays: must be comma-separated"),
        (["mnist", "--weight-decays", "a"], "weight decays of 0 or more, e.g. 0,1e-3, got 'a'"),
        (["mnist", "--subset", "0"], "--subset: must be a positive integer, got '0'"),
        (["pipeline", "--weight-decay", "-1"], "--weight-decay: must be a number of 0 or more"),
        (["pipeline", "--optimizer", "lamb"], "--optimizer: invalid choice: 'lamb'"),
        ([], "the following arguments are required"),
    ],
)
def test_experiment_rejects_bad_flags_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(experiment.main, argv, capsys)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_experiment_pipeline_prints_the_seeds_trace(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(experiment.main, ["pipeline"], capsys)
    assert status == 0
    stages = [
        "1 Data in              1000 rows x 10 columns -> 1000 rows x 10 columns",
        "2 Preprocessing        1000 rows x 10 columns -> 800 + 200 rows x 10 columns",
        "3 Feature engineering  800 rows x 10 columns -> 800 rows x 10 columns",
        "4 Model trains         800 rows x 10 columns -> 800 rows x 2 columns (class scores)",
        "5 Metrics              800 rows x 2 columns -> scalar loss and accuracy",
        "6 Prediction           1 row x 10 columns -> 1 row x 2 columns (probabilities)",
    ]
    for line in stages:
        assert line in out.splitlines()
    trace = out[out.index("Training trace") :].splitlines()
    assert trace[1].split() == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    epochs = [row.split() for row in trace[2:7]]
    assert [row[0] for row in epochs] == ["1", "2", "3", "4", "5"]
    assert float(epochs[-1][1]) < float(epochs[0][1])  # the training loss falls
    (probabilities,) = re.findall(r"predicted probabilities \[([\d.]+), ([\d.]+)\]", out)
    assert sum(map(float, probabilities)) == pytest.approx(1.0, abs=0.011)
    assert "Layer 4: Softmax         (1, 2)" in out


def training_trace(out: str) -> list[str]:
    return out[out.index("Training trace") : out.index("Prediction trace")].strip().splitlines()


def test_experiment_pipeline_weight_decay_flag_reaches_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["pipeline", "--epochs", "2"]
    _, default, _ = run_cli(experiment.main, argv, capsys)
    _, heavy, _ = run_cli(experiment.main, [*argv, "--weight-decay", "1"], capsys)
    assert "weight decay 1 (adam, biases decayed)" in heavy
    assert len(training_trace(heavy)) == 4  # title, header, epochs 1 and 2
    assert training_trace(default)[:2] == training_trace(heavy)[:2]
    assert training_trace(default)[2:] != training_trace(heavy)[2:]
