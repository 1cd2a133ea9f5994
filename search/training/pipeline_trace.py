"""The seed pipeline's trace (``../shared/seeds/002_*``): the tabular network trained on the
synthetic table, followed stage by stage and layer by layer, as the seed document prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from models import TabularNN
from search.config import DEFAULTS, OptimizerName
from search.data import synthetic
from search.training.train import EpochMetrics, init_model, train, use_one_cpu_thread


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


def trace_pipeline(
    weight_decay: float,
    epochs: int,
    optimizer: OptimizerName,
    decay_biases: bool,
    seed: int,
    on_epoch: Callable[[EpochMetrics], None] = lambda metrics: None,
) -> list[str]:
    """Train the tabular network on the synthetic table and trace it as the seed does: the
    data flow's six stages, the epoch table, one row through the layers; the lines to print.
    """
    # Over 60 lines: the trace's six stages in order, each a table row of the seed's.
    device = torch.device("cpu")
    use_one_cpu_thread(device)
    raw_x, raw_y = synthetic.generate()
    data = synthetic.load_synthetic(device=device)
    n_train, n_features = data.train_x.shape
    config = DEFAULTS.replace(
        task="synthetic",
        epochs=epochs,
        optimizer=optimizer,
        decay_biases=decay_biases,
    )
    model = init_model(seed, device, "synthetic")
    assert isinstance(model, TabularNN)
    history: list[EpochMetrics] = []
    for metrics in train(model, data, config.recipe(weight_decay), config, seed):
        history.append(metrics)
        on_epoch(metrics)
    last = history[-1]

    # One validation row, followed from the raw table to its predicted probabilities.
    index = synthetic.TRAIN_ROWS  # the first validation row of the table
    row = data.val_x[:1]  # (1, 10)
    model.eval()
    with torch.no_grad():
        hidden = model.relu(model.fc1(row))  # (1, hidden)
        logits = model.fc2(hidden)  # (1, 2)
    probabilities = model.predict_proba(row)  # (1, 2)

    decay = f"weight decay {weight_decay:g} ({optimizer}"
    decay += ", biases decayed)" if decay_biases else ", biases not decayed)"
    lines = [f"Model pipeline - synthetic table, {decay}", "\nData flow - 6 stages"]
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
    lines += [*stages, "\nTraining trace - epoch by epoch", *epoch_table(history)]
    lines.append(f"\nPrediction trace - 4 layers (row {index})")
    layers = [
        ("Input", row),
        ("Hidden (ReLU)", hidden),
        ("Output (Linear)", logits),
        ("Softmax", probabilities),
    ]
    for number, (name, values) in enumerate(layers, start=1):
        shape = str(tuple(values.shape))
        lines.append(f"Layer {number}: {name:<16}{shape:<10}{vector(values[0])}")
    return lines


def epoch_table(history: Sequence[EpochMetrics]) -> list[str]:
    """The seed trace's table: loss and accuracy per epoch, on training and validation data."""
    lines = [f"{'epoch':>5}{'loss':>8}{'accuracy':>10}{'val_loss':>10}{'val_accuracy':>14}"]
    for m in history:
        lines.append(
            f"{m.epoch:>5}{m.train_loss:>8.2f}{m.train_accuracy:>10.2f}"
            f"{m.val_loss:>10.2f}{m.val_accuracy:>14.2f}"
        )
    return lines
