"""A tabular model as a search.Task: 20 features, 3 classes, a GELU MLP.

    python -m search.run --task docs/examples/tabular_task.py:task --trials 20 --max-train-acc 0.9
"""

import torch
from torch import nn

from search import Task


class TabularMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(20, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (batch, 3) class scores


def task() -> Task:
    """3,000 rows whose class is the nearest of 3 random centres, with label noise."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 20, generator=gen)
    centres = torch.randn(3, 20, generator=gen)
    y = torch.cdist(x, centres).argmin(dim=1)
    noisy = torch.rand(3000, generator=gen) < 0.1
    y[noisy] = torch.randint(0, 3, (int(noisy.sum()),), generator=gen)
    return Task(
        model=TabularMLP,
        train=(x[:2000], y[:2000]),
        val=(x[2000:2500], y[2000:2500]),
        test=(x[2500:], y[2500:]),
        name="tabular-mlp",
    )
