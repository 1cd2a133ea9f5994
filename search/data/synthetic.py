"""The seed pipeline's task (../shared/seeds/002_*.txt): 1,000 rows, 10 features, a binary label.

The table is generated from a fixed seed, not downloaded, and built so that weight decay has
something to do: the label depends on only a few of the features (linearly and through one
product of two of them), the other features are pure noise, and a tenth of the labels are
flipped. A network with a wide hidden layer can then memorise the 800 training rows, noise
included, if nothing stops it; weight decay is what stops it (see
docs/reproducibility.md for the numbers).

The result is a ``search.data.splits.Splits`` like MNIST's, so the training loop, the objective and
the export use it unchanged.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from search.data.splits import Splits

ROWS = 1000
FEATURES = 10
CLASSES = 2
TRAIN_ROWS = 800  # the other 200 validate
INFORMATIVE = 4  # the first 4 columns carry the signal, the other 6 are noise
INTERACTION = 1.5  # weight of the product of columns 0 and 1 in the label's logit
LABEL_NOISE = 0.1  # fraction of labels flipped
HIDDEN = 256  # wide enough to memorise 800 rows, so there is overfitting to prevent
# Fixed, like the MNIST holdout seed: every study sees the same table, whatever its --seed.
DATA_SEED = 0


def generate(seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The raw table: features ``(1000, 10)`` float32 and labels ``(1000,)`` int64 in {0, 1}.

    Each column has its own offset and scale, as raw measurements do, so that standardising
    is a step that matters rather than a no-op.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((ROWS, FEATURES))
    weights = rng.standard_normal(INFORMATIVE)
    logit = z[:, :INFORMATIVE] @ weights + INTERACTION * z[:, 0] * z[:, 1]
    labels = (logit > 0).astype(np.int64)
    flipped = rng.random(ROWS) < LABEL_NOISE
    labels = np.where(flipped, 1 - labels, labels)
    scale = rng.uniform(0.5, 3.0, FEATURES)
    offset = rng.uniform(-2.0, 2.0, FEATURES)
    return (z * scale + offset).astype(np.float32), labels


def standardise(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean and unit variance per column, with statistics of the training rows only.

    The validation rows are scaled with the training split's mean and standard deviation:
    statistics computed on them would leak the validation set into the preprocessing.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    return (train - mean) / std, (val - mean) / std


def checksums(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, str]:
    """What identifies the table in a study, in place of MNIST's file md5s."""
    digest = hashlib.md5(usedforsecurity=False)
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    recipe = (
        f"seed={seed} rows={ROWS} features={FEATURES} informative={INFORMATIVE} "
        f"interaction={INTERACTION} label_noise={LABEL_NOISE}"
    )
    return {"synthetic": recipe, "table_md5": digest.hexdigest()}


def load_synthetic(
    subset: int | None = None, device: torch.device | str = "cpu", seed: int = DATA_SEED
) -> Splits:
    """The synthetic task as a study's splits: 800 standardised training rows, 200 validation.

    Args:
        subset: keep the first ``subset`` training rows and at most as many validation rows,
            as ``--subset`` does for MNIST; the standardisation uses the rows kept.
        device: where the tensors live.
        seed: the table's generator seed.
    """
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be a positive number of rows, got {subset}")
    x, y = generate(seed)
    train_x, train_y = x[:TRAIN_ROWS][:subset], y[:TRAIN_ROWS][:subset]
    val_x, val_y = x[TRAIN_ROWS:][:subset], y[TRAIN_ROWS:][:subset]
    train_x, val_x = standardise(train_x, val_x)
    return Splits(
        train_x=torch.from_numpy(train_x).to(device),  # (800, 10)
        train_y=torch.from_numpy(train_y).to(device),  # (800,)
        val_x=torch.from_numpy(val_x).to(device),  # (200, 10)
        val_y=torch.from_numpy(val_y).to(device),  # (200,)
        validation="holdout",
        checksums=checksums(x, y, seed),
    )
