"""One trial's training loop: epochs over preloaded tensors, the seed's recipe, per-epoch metrics.

The seed experiment iterates a torchvision ``DataLoader`` with a per-sample ``ToTensor``; here
the whole split already sits on the device as one tensor and batches are index slices of it,
which is the same arithmetic without the per-sample Python work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import SimpleNN
from search.config import StudyConfig
from search.data import Splits

# Validation and test sets are scored in chunks this large: one matmul each, bounded memory.
EVAL_CHUNK = 10_000


class DivergedError(RuntimeError):
    """Training produced a non-finite loss: the trial's hyperparameters don't train."""


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured.

    ``train_loss`` and ``train_accuracy`` are the running figures over the epoch, as the seed
    computes them: each batch is scored by the weights *before* its own update, so they lag
    behind what the end-of-epoch weights would score on the training set.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_one_cpu_thread(device: torch.device) -> None:
    """Train on one intra-op thread on the CPU.

    A 784-128-10 MLP's matmuls are too small to split well: a second thread gains about 20%
    on an idle machine, but when anything else keeps the other core busy the threads wait on
    each other and an epoch takes ten times longer (measured here: 0.54 s vs 0.44 s idle,
    over 5 s under load). Parallelism comes from training trials side by side instead.
    """
    if device.type == "cpu":
        torch.set_num_threads(1)


def derive_seed(*keys: int) -> int:
    """A 31-bit seed from a tuple of integers, e.g. (study seed, trial number, epoch).

    NumPy's SeedSequence hashes the tuple, so neighbouring trials get unrelated streams and
    a trial's seed depends on nothing but its own keys (not on which worker or slot runs it).
    """
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] & 0x7FFF_FFFF)


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The seed of everything random in one trial: its initial weights and its batch orders."""
    return derive_seed(study_seed, trial_number)


def init_model(seed: int, device: torch.device | str = "cpu") -> SimpleNN:
    """A freshly initialised ``SimpleNN`` (PyTorch's default init) that depends only on ``seed``.

    Built on the CPU under a forked RNG, so the weights are the same on every device and the
    global RNG of the caller is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SimpleNN()
    return model.to(device)


def batch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch: a function of (trial seed, epoch) alone."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


def make_optimizer(model: nn.Module, weight_decay: float, lr: float) -> torch.optim.Optimizer:
    """Adam as the seed uses it: weight decay is PyTorch's L2 term added to every gradient.

    The fused kernel does the same arithmetic as the default one in one pass over the
    parameters, about 20% faster per epoch for this small network on the CPU.
    """
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) of ``model`` on ``(x, y)``."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        logits = model(x[start : start + EVAL_CHUNK])  # (chunk, 10)
        target = y[start : start + EVAL_CHUNK]
        loss_sum += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(dim=1) == target).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def train(
    model: nn.Module,
    data: Splits,
    weight_decay: float,
    config: StudyConfig,
    seed: int,
) -> Iterator[EpochMetrics]:
    """Train ``model`` for ``config.epochs`` epochs, yielding each epoch's metrics.

    A generator, so the caller (the objective) can report, prune or stop between epochs.

    Raises:
        DivergedError: the training loss of an epoch was NaN or infinite.
    """
    optimizer = make_optimizer(model, weight_decay, config.lr)
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
            x, y = data.train_x[index], data.train_y[index]  # (B, 784), (B,)
            logits = model(x)  # (B, 10)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(index)
                correct += (logits.argmax(dim=1) == y).sum()
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise DivergedError(f"training loss is {train_loss} in epoch {epoch}")
        val_loss, val_accuracy = evaluate(model, data.val_x, data.val_y)
        yield EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=correct.item() / n,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            seconds=time.perf_counter() - started,
        )
