"""The feedforward network of the seed pipeline trace (../shared/seeds/002_*.txt)."""

from __future__ import annotations

import torch
from torch import nn


class TabularNN(nn.Module):
    """features -> hidden -> classes: Linear, ReLU, Linear, returning logits.

    Softmax is not part of ``forward``: ``nn.CrossEntropyLoss`` applies log-softmax itself, and
    a second softmax before it would squash the gradients. ``predict_proba`` is the softmax
    layer of the seed's prediction trace, for when probabilities are what a caller wants.
    """

    def __init__(self, in_features: int = 10, hidden: int = 256, classes: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(x))  # (B, hidden), from (B, in_features)
        return self.fc2(x)  # (B, classes) logits

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, classes)``, each row summing to 1."""
        return torch.softmax(self(x), dim=1)
