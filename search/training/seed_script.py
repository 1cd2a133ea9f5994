"""The seed's MNIST script as written (``python -m search.experiment mnist``): torchvision's
dataset with a per-sample ``ToTensor``, a shuffled ``DataLoader``, the test set as validation
and Adam's L2 weight decay; the slow path kept on purpose, so its numbers are the seed's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms
from tqdm import tqdm

from models import SimpleNN
from search.config import SEED_BATCH_SIZE, SEED_LR
from search.data.fetch import ensure_mnist

# One epoch as the seed measures it: (epoch, train loss, train acc %, val loss, val acc %).
EpochFigures = tuple[int, float, float, float, float]


def seed_loaders(data_dir: Path, subset: int | None = None) -> tuple[DataLoader, DataLoader]:
    """The seed's loaders: torchvision MNIST with ``ToTensor``, batch 64, training shuffled."""
    ensure_mnist(data_dir)
    transform = transforms.ToTensor()
    train_dataset: Dataset = datasets.MNIST(
        root=str(data_dir), train=True, download=False, transform=transform
    )
    val_dataset: Dataset = datasets.MNIST(
        root=str(data_dir), train=False, download=False, transform=transform
    )
    if subset is not None:
        train_dataset = Subset(train_dataset, range(subset))
        val_dataset = Subset(val_dataset, range(subset))
    train_loader = DataLoader(train_dataset, batch_size=SEED_BATCH_SIZE, shuffle=True)
    val_loader = DataLoader(val_dataset, batch_size=SEED_BATCH_SIZE)
    return train_loader, val_loader


def seed_train(
    model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: optim.Optimizer
) -> tuple[float, float]:
    """The seed's ``train()``: one epoch; running mean loss and accuracy in percent."""
    model.train()
    total_loss = 0.0
    correct = 0
    # A bar over the epoch's batches on a terminal only (tqdm's disable=None: not a TTY, no
    # bar): an epoch of the slow path is long (the seed's loop in docs/speed.md).
    batches = tqdm(loader, desc="training", unit="batch", leave=False, disable=None)
    for data, target in batches:
        optimizer.zero_grad()
        output = model(data)  # (B, 10) logits, from (B, 1, 28, 28)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * data.size(0)
        pred = output.argmax(dim=1)
        correct += pred.eq(target).sum().item()
    size = len(loader.dataset)  # type: ignore[arg-type]
    return total_loss / size, 100.0 * correct / size


@torch.no_grad()
def seed_validate(
    model: nn.Module, loader: DataLoader, criterion: nn.Module
) -> tuple[float, float]:
    """The seed's ``validate()``: mean loss and accuracy in percent."""
    model.eval()
    total_loss = 0.0
    correct = 0
    for data, target in loader:
        output = model(data)
        loss = criterion(output, target)
        total_loss += loss.item() * data.size(0)
        pred = output.argmax(dim=1)
        correct += pred.eq(target).sum().item()
    size = len(loader.dataset)  # type: ignore[arg-type]
    return total_loss / size, 100.0 * correct / size


def seed_run(
    weight_decay: float, train_loader: DataLoader, val_loader: DataLoader, epochs: int, seed: int
) -> Iterator[EpochFigures]:
    """One run of the seed's script with ``weight_decay``; yields each epoch.

    Seeding before the model is built fixes both the initial weights and every epoch's
    shuffle (the loader draws its order from the global RNG), so the runs differ only in
    their weight decay.
    """
    torch.manual_seed(seed)
    model = SimpleNN()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=SEED_LR, weight_decay=weight_decay)
    for epoch in range(epochs):
        train_loss, train_acc = seed_train(model, train_loader, criterion, optimizer)
        val_loss, val_acc = seed_validate(model, val_loader, criterion)
        yield epoch + 1, train_loss, train_acc, val_loss, val_acc
