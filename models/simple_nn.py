"""The MNIST network of the seed experiment (../shared/seeds/000_*.txt)."""

from __future__ import annotations

import torch
from torch import nn


class SimpleNN(nn.Module):
    """784-128-10 MLP, exactly the seed's: Flatten, Linear, ReLU, Linear.

    Attribute names match the seed's, so its state_dicts load into this module and back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(28 * 28, 128)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)  # (B, 784), from (B, 784) or (B, 1, 28, 28)
        x = self.relu(self.fc1(x))  # (B, 128)
        return self.fc2(x)  # (B, 10) logits
