"""A small CNN on MNIST as a search.Task, its data read by torchvision.

    python -m search.data        # MNIST into data/, verified
    python -m search.run --task docs/examples/cnn_mnist.py:task --trials 20
"""

import torch
from torch import nn
from torchvision.datasets import MNIST

from search import Task


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (8, 14, 14)
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (16, 7, 7)
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )  # fmt: skip


def images(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    mnist = MNIST("data", train=train, download=False)
    return mnist.data.unsqueeze(1).float() / 255, mnist.targets  # (N, 1, 28, 28), (N,)


def task() -> Task:
    x, y = images(train=True)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    fit, held = order[:50_000], order[50_000:]  # validation held out of the training images
    return Task(
        model=small_cnn,
        train=(x[fit], y[fit]),
        val=(x[held], y[held]),
        test=images(train=False),
        name="mnist-cnn",
    )
