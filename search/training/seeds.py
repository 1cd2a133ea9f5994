"""Seeds: everything random in a trial is a function of (study seed, trial number, epoch).

NumPy derives the seeds; PyTorch is imported only where a batch order is drawn, so the study
wing can seed its sampler (``derive_seed``) without loading PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def derive_seed(*keys: int) -> int:
    """A 31-bit seed from a tuple of integers, e.g. (study seed, trial number, epoch).

    NumPy's SeedSequence hashes the tuple, so neighbouring trials get unrelated streams and
    a trial's seed depends on nothing but its own keys (not on which worker or slot runs it).
    """
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] & 0x7FFF_FFFF)


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The seed of everything random in one trial: its initial weights and its batch orders."""
    return derive_seed(study_seed, trial_number)


def batch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch: a function of (trial seed, epoch) alone."""
    import torch  # here, not at the top: see the module's docstring

    generator = torch.Generator().manual_seed(derive_seed(seed, epoch))
    return torch.randperm(n, generator=generator)
