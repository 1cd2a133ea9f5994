"""One trial's training loop: epochs over preloaded tensors, the seed's recipe, per-epoch metrics.

The seed experiment iterates a torchvision ``DataLoader`` with a per-sample ``ToTensor``; here
the whole split already sits on the device as one tensor and batches are index slices of it,
which is the same arithmetic without the per-sample Python work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from models import SimpleNN, TabularNN
from search.config import StudyConfig
from search.data import synthetic
from search.data.splits import Splits
from search.data.task import is_reference, load_user_task
from search.recipe import Recipe
from search.training.seeds import batch_order

# Validation and test sets are scored in chunks this large: one matmul each, bounded memory.
EVAL_CHUNK = 10_000

# SGD gets momentum: plain SGD at the seed's lr of 1e-3 barely moves in 10 epochs, so it would
# lose every comparison for a reason that has nothing to do with weight decay. Momentum 0.9 is
# PyTorch's usual SGD recipe and, once its buffer builds up, takes steps up to 1 / (1 - 0.9)
# = 10 times larger, still far below Adam's.
SGD_MOMENTUM = 0.9


class DivergedError(RuntimeError):
    """Training produced a non-finite loss: the trial's hyperparameters don't train."""


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured.

    ``train_loss`` and ``train_accuracy`` are the running figures over the epoch, as the seed
    computes them: each batch is scored by the weights *before* its own update, so they lag
    behind what the end-of-epoch weights score on the training set, which is
    ``train_accuracy_final`` (one more forward pass over the training split). The two differ
    by far more than seed noise near the edge (docs/trials.md), so a constraint on "training
    accuracy" has to say which one it means: ``accuracy(measure)``.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    train_accuracy_final: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def accuracy(self, measure: str) -> float:
        """The training accuracy by ``measure``: "running" (the seed's) or "final"."""
        return self.train_accuracy_final if measure == "final" else self.train_accuracy


def device_problem(name: str) -> str | None:
    """The one-line error for a ``--device`` this machine lacks, or None: the one CUDA check
    of every command that trains or evaluates."""
    if name == "cuda" and not torch.cuda.is_available():
        return "--device cuda: no CUDA device is available here; use --device cpu"
    return None


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_one_cpu_thread(device: torch.device) -> None:
    """Train on one intra-op thread on the CPU.

    A 784-128-10 MLP's matmuls are too small to split well: a second thread gains little on
    an idle machine (docs/workers.md), and when anything else keeps the other core busy the
    threads wait on each other and an epoch takes far longer. Parallelism comes from training
    trials side by side instead.
    """
    if device.type == "cpu":
        torch.set_num_threads(1)


def build_model(task: str = "mnist") -> nn.Module:
    """The network of a task: the seed's ``SimpleNN`` for MNIST, ``TabularNN`` for the table,
    the model of a user's ``search.Task`` for a ``FILE.py:NAME`` reference."""
    if task == "mnist":
        return SimpleNN()
    if task == "synthetic":
        return TabularNN(synthetic.FEATURES, synthetic.HIDDEN, synthetic.CLASSES)
    if is_reference(task):
        return load_user_task(task).model()
    raise ValueError(f"unknown task {task!r}")


@overload
def init_model(
    seed: int, device: torch.device | str = ..., task: Literal["mnist"] = ...
) -> SimpleNN: ...
@overload
def init_model(seed: int, device: torch.device | str = ..., task: str = ...) -> nn.Module: ...
def init_model(seed: int, device: torch.device | str = "cpu", task: str = "mnist") -> nn.Module:
    """A freshly initialised model of ``task`` (PyTorch's default init), a function of ``seed``.

    Every trial's model is built here. Built on the CPU under a forked RNG, so the weights are
    the same on every device and the global RNG of the caller is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(task)
    return model.to(device)


def parameter_groups(
    model: nn.Module, weight_decay: float, decay_biases: bool = True
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: what weight decay applies to.

    ``decay_biases=True`` is PyTorch's default, one group that decays every parameter. With
    False, parameters with at most one dimension (biases, and the scales and shifts of any
    normalisation layer) go to a group without decay: shrinking a bias or a norm scale toward
    zero shifts or rescales activations rather than simplifying the function.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_biases:
        return [{"params": params, "weight_decay": weight_decay}]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The optimizer of a trial's ``recipe`` (``search.recipe``); the seed's is Adam.

    ``adam``: weight decay is the L2 term ``weight_decay * param`` added to the gradient before
    Adam's moments, so it is rescaled per parameter like the loss gradient is. ``adamw``: the
    decay is decoupled, ``param -= lr * weight_decay * param`` beside Adam's step, untouched by
    the moments. ``sgd``: SGD with momentum ``SGD_MOMENTUM``, decay added to the gradient.

    The fused kernels do the same arithmetic as the default ones in one pass over the
    parameters, which makes an epoch of this small network faster on the CPU (where an
    epoch's time goes: docs/speed.md).
    """
    groups = parameter_groups(model, recipe.weight_decay, recipe.decay_biases)
    lr = recipe.lr
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM, fused=True)
    raise ValueError(f"no optimizer is built for {recipe.optimizer!r}")


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def task_loss(task: str) -> Loss | None:
    """A user's Task's own loss, or None: cross-entropy, which the built-in tasks train with."""
    return load_user_task(task).loss if is_reference(task) else None


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss | None = None
) -> tuple[float, float]:
    """Mean loss (cross-entropy unless told) and accuracy (a fraction) of ``model`` on
    ``(x, y)``."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        logits = model(x[start : start + EVAL_CHUNK])  # (chunk, classes)
        target = y[start : start + EVAL_CHUNK]
        if loss is None:
            loss_sum += F.cross_entropy(logits, target, reduction="sum")
        else:
            loss_sum += loss(logits, target) * len(target)
        correct += (logits.argmax(dim=1) == target).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def train(
    model: nn.Module, data: Splits, recipe: Recipe, config: StudyConfig, seed: int
) -> Iterator[EpochMetrics]:
    """Train ``model`` with ``recipe`` for ``config.epochs`` epochs of ``config.batch_size``,
    yielding each epoch's metrics.

    A generator, so the caller (the objective) can report, prune or stop between epochs.

    Raises:
        DivergedError: the training loss of an epoch was NaN or infinite.
    """
    optim = make_optimizer(model, recipe)
    criterion = task_loss(config.task) or F.cross_entropy
    n = len(data.train_x)
    device = data.train_x.device
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = batch_order(n, seed, epoch).to(device)
        # Summed on the device: no host sync per batch.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            x, y = data.train_x[index], data.train_y[index]  # (B, 784) or (B, 10), (B,)
            logits = model(x)  # (B, classes)
            loss = criterion(logits, y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(index)
                correct += (logits.argmax(dim=1) == y).sum()
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise DivergedError(f"training loss is {train_loss} in epoch {epoch}")
        val_loss, val_accuracy = evaluate(model, data.val_x, data.val_y, task_loss(config.task))
        _, final_accuracy = evaluate(model, data.train_x, data.train_y)
        yield EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=correct.item() / n,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            seconds=time.perf_counter() - started,
            train_accuracy_final=final_accuracy,
        )
