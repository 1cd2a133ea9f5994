"""``python -m search.experiment``: the two seed experiments, run as their documents describe.

    python -m search.experiment mnist      # seeds/000_*: weight decay 0, 1e-3, 5e-3 on MNIST
    python -m search.experiment pipeline   # seeds/002_*: the pipeline trace, synthetic table

``mnist`` is the seed's script with its own slow path kept on purpose: torchvision's dataset
with a per-sample ``ToTensor``, a shuffled ``DataLoader``, the test set as validation and
Adam's L2 weight decay, so its numbers are the seed's recipe measured, not this project's
faster loop. It prints each epoch in the seed's format and then the table the seed's
"Results Interpretation" claims, measured, beside those claims.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.cli import (
    Parser,
    add_data_dir_flag,
    non_negative_float,
    positive_int,
    run_command,
    seed,
    subset,
)
from search.config import DEFAULTS, OPTIMIZERS, SEED_BATCH_SIZE, SEED_EPOCHS, SEED_LR

if TYPE_CHECKING:
    import torch

    from search.training.train import EpochMetrics

# PyTorch and the modules that train are imported inside the two experiments, after the flags
# are parsed: ``--help`` and a flag error answer at once.

# The seed's "before", "after" and bonus weight decays, and what it says they give.
SEED_WEIGHT_DECAYS: tuple[float, ...] = (0.0, 1e-3, 5e-3)
RUN_NAMES = {0.0: "before", 1e-3: "after", 5e-3: "bonus"}
# The seed's goal: validation accuracy at least 90% while training accuracy stays below 95%.
GOAL_VAL_ACC = 90.0
GOAL_TRAIN_ACC = 95.0

PIPELINE_EPOCHS = 5  # the seed trace's epoch table
PIPELINE_WEIGHT_DECAY = 1e-3  # the seed experiment's "after" value


@dataclass(frozen=True)
class SeedEpoch:
    """One epoch as the seed measures it: mean losses, accuracies in percent."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float

    def line(self) -> str:
        """The seed's own print line, character for character."""
        return (
            f"Epoch {self.epoch}: Train Loss={self.train_loss:.4f}, "
            f"Train Acc={self.train_acc:.2f}%, Val Loss={self.val_loss:.4f}, "
            f"Val Acc={self.val_acc:.2f}%"
        )

    def meets_goal(self) -> bool:
        return self.val_acc >= GOAL_VAL_ACC and self.train_acc < GOAL_TRAIN_ACC


# What the seed claims for its runs (its "Results Interpretation"); it gives no bonus numbers.
SEED_CLAIMS: dict[float, SeedEpoch] = {
    0.0: SeedEpoch(SEED_EPOCHS, train_loss=0.02, train_acc=99.0, val_loss=0.45, val_acc=85.0),
    1e-3: SeedEpoch(SEED_EPOCHS, train_loss=0.12, train_acc=93.0, val_loss=0.30, val_acc=91.0),
}


def weight_decay_list(text: str) -> tuple[float, ...]:
    """``--weight-decays``: comma-separated numbers, each 0 or more."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 <= v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated weight decays of 0 or more, e.g. 0,1e-3, got {text!r}"
        )
    return values


def build_parser() -> argparse.ArgumentParser:
    # Over 80 lines: two subcommands' flags one after another, in --help's order.
    parser = Parser(
        prog="python -m search.experiment",
        description="Run the seed experiments: the MNIST weight-decay comparison and the "
        "pipeline trace on the synthetic table.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{mnist,pipeline}")

    mnist = commands.add_parser(
        "mnist",
        help="the seed's MNIST experiment: before / after / bonus weight decay",
        description="The seed's script as written (SimpleNN, Adam lr 1e-3, batch 64, "
        "torchvision DataLoader, the test set as validation), once per weight decay.",
    )
    add_data_dir_flag(mnist)
    mnist.add_argument(
        "--weight-decays",
        type=weight_decay_list,
        default=SEED_WEIGHT_DECAYS,
        metavar="X,Y,...",
        help="one run per weight decay (default: "
        f"{','.join(f'{w:g}' for w in SEED_WEIGHT_DECAYS)}: the seed's before, after, bonus)",
    )
    mnist.add_argument(
        "--epochs",
        type=positive_int,
        default=SEED_EPOCHS,
        metavar="N",
        help="epochs per run (default: %(default)s)",
    )
    mnist.add_argument(
        "--seed",
        type=seed,
        default=DEFAULTS.seed,
        help="torch seed of every run: initial weights and shuffling (default: %(default)s)",
    )
    mnist.add_argument(
        "--subset",
        type=subset,
        default=None,
        metavar="N",
        help="train and validate on the first N images of each set, for quick runs (default: all)",
    )

    pipeline = commands.add_parser(
        "pipeline",
        help="the seed's pipeline trace on the synthetic 1,000-row table",
        description="Train the tabular network on the synthetic table and print each stage "
        "of the data flow with its shape, the epoch table and one row's prediction.",
    )
    pipeline.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=PIPELINE_WEIGHT_DECAY,
        metavar="X",
        help="weight decay of the optimizer (default: %(default)s)",
    )
    pipeline.add_argument(
        "--epochs",
        type=positive_int,
        default=PIPELINE_EPOCHS,
        metavar="N",
        help="epochs to train (default: %(default)s)",
    )
    pipeline.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=DEFAULTS.optimizer,
        help="as search.run's --optimizer (default: %(default)s)",
    )
    pipeline.add_argument(
        "--decay-biases",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.decay_biases,
        help="decay biases too, as PyTorch does by default (default: %(default)s)",
    )
    pipeline.add_argument(
        "--seed",
        type=seed,
        default=DEFAULTS.seed,
        help="seed of the initial weights and batch orders (default: %(default)s)",
    )
    return parser


def run_name(weight_decay: float) -> str:
    return RUN_NAMES.get(weight_decay, "")


def results_table(finals: Sequence[tuple[float, SeedEpoch]]) -> list[str]:
    """Each run's final epoch, with the seed's claim for it on the line below, if it has one."""
    lines = [
        f"{'run':<11}{'weight_decay':>12}{'train_loss':>12}{'train_acc':>11}"
        f"{'val_loss':>10}{'val_acc':>9}  goal",
    ]

    def row(name: str, weight_decay: str, e: SeedEpoch, claim: bool = False) -> str:
        # The seed's claims are round numbers; printing them to 4 places would invent digits.
        loss, acc = (".2f", ".0f") if claim else (".4f", ".2f")
        return (
            f"{name:<11}{weight_decay:>12}{e.train_loss:>12{loss}}{e.train_acc:>10{acc}}%"
            f"{e.val_loss:>10{loss}}{e.val_acc:>8{acc}}%  "
            f"{'met' if e.meets_goal() else 'not met'}"
        )

    for weight_decay, final in finals:
        lines.append(row(run_name(weight_decay), f"{weight_decay:g}", final))
        if weight_decay in SEED_CLAIMS:
            lines.append(row("  seed says", "", SEED_CLAIMS[weight_decay], claim=True))
    lines.append(
        f"goal (the seed's): validation accuracy >= {GOAL_VAL_ACC:g}% with training accuracy "
        f"< {GOAL_TRAIN_ACC:g}%; training accuracy is the running mean over the last epoch, "
        "as the seed computes it"
    )
    return lines


def run_mnist(args: argparse.Namespace) -> int:
    import torch

    from search.training.seed_script import seed_loaders, seed_run
    from search.training.train import use_one_cpu_thread

    use_one_cpu_thread(torch.device("cpu"))
    train_loader, val_loader = seed_loaders(args.data_dir, args.subset)
    print(
        f"MNIST, the seed's script: {len(train_loader.dataset)} training images, "  # type: ignore[arg-type]
        f"{len(val_loader.dataset)} test images as validation, "  # type: ignore[arg-type]
        f"Adam lr {SEED_LR:g}, batch {SEED_BATCH_SIZE}, {args.epochs} epochs, seed {args.seed}"
    )
    finals: list[tuple[float, SeedEpoch]] = []
    for weight_decay in args.weight_decays:
        name = run_name(weight_decay)
        print(f"\n== {name + ': ' if name else ''}weight_decay={weight_decay:g} ==", flush=True)
        started = time.perf_counter()
        for figures in seed_run(weight_decay, train_loader, val_loader, args.epochs, args.seed):
            epoch = SeedEpoch(*figures)
            print(epoch.line(), flush=True)
        finals.append((weight_decay, epoch))
        print(f"({time.perf_counter() - started:.1f}s)")
    print()
    print("\n".join(results_table(finals)))
    return 0


# --- The pipeline trace (seeds/002_*) ---------------------------------------------------------


def vector(values: torch.Tensor | Sequence[float], digits: int = 2) -> str:
    """A short vector in the seed's style: the first three values, ..., the last."""
    items = [f"{float(v):.{digits}f}" for v in values]
    if len(items) > 5:
        items = [*items[:3], "...", items[-1]]
    return "[" + ", ".join(items) + "]"


def rows_by_columns(rows: int, columns: int) -> str:
    return f"{rows} row{'s' if rows != 1 else ''} x {columns} columns"


def stage(number: int, name: str, shape_in: str, what: str, shape_out: str, example: str) -> str:
    """One stage of the seed's data flow: its shapes, what it does, and an example."""
    return f"{number} {name:<21}{shape_in} -> {shape_out}\n    {what}\n    {example}"


def run_pipeline(args: argparse.Namespace) -> int:
    # Over 80 lines: the trace prints its six stages in order, each a table row of the seed's.
    import torch

    from models import TabularNN
    from search.data import synthetic
    from search.study.progress import Steps
    from search.training.train import init_model, train, use_one_cpu_thread

    device = torch.device("cpu")
    use_one_cpu_thread(device)
    raw_x, raw_y = synthetic.generate()
    data = synthetic.load_synthetic(device=device)
    n_train, n_features = data.train_x.shape
    config = DEFAULTS.replace(
        task="synthetic",
        epochs=args.epochs,
        optimizer=args.optimizer,
        decay_biases=args.decay_biases,
    )
    model = init_model(args.seed, device, "synthetic")
    assert isinstance(model, TabularNN)
    history: list[EpochMetrics] = []
    with Steps(config.epochs, "training the tabular network") as steps:
        for metrics in train(model, data, args.weight_decay, config, args.seed):
            history.append(metrics)
            steps.step(f"val_accuracy {metrics.val_accuracy:.4f}")
    last = history[-1]

    # One validation row, followed from the raw table to its predicted probabilities.
    index = synthetic.TRAIN_ROWS  # the first validation row of the table
    row = data.val_x[:1]  # (1, 10)
    model.eval()
    with torch.no_grad():
        hidden = model.relu(model.fc1(row))  # (1, hidden)
        logits = model.fc2(hidden)  # (1, 2)
    probabilities = model.predict_proba(row)  # (1, 2)

    decay = f"weight decay {args.weight_decay:g} ({args.optimizer}"
    decay += ", biases decayed)" if args.decay_biases else ", biases not decayed)"
    print(f"Model pipeline - synthetic table, {decay}")
    print("\nData flow - 6 stages")
    stages = [
        stage(
            1,
            "Data in",
            rows_by_columns(len(raw_x), raw_x.shape[1]),
            f"raw features and binary labels, generated from seed {synthetic.DATA_SEED}",
            rows_by_columns(len(raw_x), raw_x.shape[1]),
            f"row {index}: {vector(raw_x[index])}, label {raw_y[index]}",
        ),
        stage(
            2,
            "Preprocessing",
            rows_by_columns(len(raw_x), raw_x.shape[1]),
            f"split {n_train} train / {len(data.val_x)} validation, then zero mean and unit "
            "variance per column with the training split's statistics",
            f"{n_train} + {len(data.val_x)} rows x {n_features} columns",
            f"row {index}: {vector(row[0])}",
        ),
        stage(
            3,
            "Feature engineering",
            rows_by_columns(n_train, n_features),
            "no features added",
            rows_by_columns(n_train, n_features),
            "the standardised features pass on unchanged",
        ),
        stage(
            4,
            "Model trains",
            rows_by_columns(n_train, n_features),
            f"feedforward network {n_features} -> {model.fc1.out_features} (ReLU) -> "
            f"{model.fc2.out_features}, {decay} in each optimizer step",
            f"{rows_by_columns(n_train, model.fc2.out_features)} (class scores)",
            f"row {index} logits: {vector(logits[0])}",
        ),
        stage(
            5,
            "Metrics",
            rows_by_columns(n_train, model.fc2.out_features),
            "cross-entropy loss and accuracy on the training data",
            "scalar loss and accuracy",
            f"loss {last.train_loss:.2f}, accuracy {last.train_accuracy:.2f} "
            f"(validation: loss {last.val_loss:.2f}, accuracy {last.val_accuracy:.2f})",
        ),
        stage(
            6,
            "Prediction",
            rows_by_columns(1, n_features),
            "class probabilities by softmax",
            f"{rows_by_columns(1, model.fc2.out_features)} (probabilities)",
            f"row {index}: predicted probabilities {vector(probabilities[0])}, "
            f"class {int(probabilities.argmax())}, label {raw_y[index]}",
        ),
    ]
    print("\n".join(stages))
    print("\nTraining trace - epoch by epoch")
    print("\n".join(epoch_table(history)))
    print(f"\nPrediction trace - 4 layers (row {index})")
    layers = [
        ("Input", row),
        ("Hidden (ReLU)", hidden),
        ("Output (Linear)", logits),
        ("Softmax", probabilities),
    ]
    for number, (name, values) in enumerate(layers, start=1):
        shape = str(tuple(values.shape))
        print(f"Layer {number}: {name:<16}{shape:<10}{vector(values[0])}")
    return 0


def epoch_table(history: Sequence[EpochMetrics]) -> list[str]:
    """The seed trace's table: loss and accuracy per epoch, on training and validation data."""
    lines = [f"{'epoch':>5}{'loss':>8}{'accuracy':>10}{'val_loss':>10}{'val_accuracy':>14}"]
    for m in history:
        lines.append(
            f"{m.epoch:>5}{m.train_loss:>8.2f}{m.train_accuracy:>10.2f}"
            f"{m.val_loss:>10.2f}{m.val_accuracy:>14.2f}"
        )
    return lines


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "mnist": run_mnist,
    "pipeline": run_pipeline,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    run_command(main)
