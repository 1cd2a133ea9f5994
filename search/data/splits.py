"""What the data wing hands up: a study's tensors (``Splits``) and the one error type it raises.

Torch is only named in annotations here, so the reading commands can import the error type
and the study wing can name ``Splits`` without loading PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.errors import UserError

if TYPE_CHECKING:
    import torch


class DataError(UserError):
    """MNIST is missing, corrupt or cannot be fetched; the message is one line for the user."""


@dataclass(frozen=True)
class Splits:
    """The tensors a study trains and validates on, and the md5 of the files they came from."""

    train_x: torch.Tensor  # (N, 784) float32 in [0, 1]; (N, 10) standardised for "synthetic"
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor  # (M, 784) float32 in [0, 1]; (M, 10) for "synthetic"
    val_y: torch.Tensor  # (M,) int64
    validation: str  # "holdout" or "test"
    checksums: dict[str, str]  # file name -> md5, for the files actually read
