"""MNIST's IDX files -> tensors: the training and validation splits, and the official test set.

Data is loaded whole as tensors, scaled once (pixel / 255, what ``ToTensor`` gives): the MLP
trains for many epochs in many trials, and per-sample transforms would dominate its run time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from search.config import HOLDOUT_SEED, HOLDOUT_SIZE, VALIDATIONS
from search.data.fetch import (
    TEST_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_FILES,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    ensure_mnist,
    raw_dir,
)
from search.data.splits import Splits


def _read(data_dir: Path, images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
    raw = raw_dir(data_dir)
    return read_image_file(str(raw / images)), read_label_file(str(raw / labels))


def _inputs(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    # Move the uint8 bytes, a quarter of the floats, then scale as ToTensor does.
    return images.to(device).reshape(len(images), -1).to(torch.float32).div_(255)


def holdout_indices(
    n: int, size: int = HOLDOUT_SIZE, seed: int = HOLDOUT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into sorted (train, validation) indices, ``size`` for validation.

    A local generator keeps the split the same whatever the global RNG has been through.
    """
    if not 0 < size < n:
        raise ValueError(f"the holdout must be between 0 and {n} images, got {size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[size:].sort().values, order[:size].sort().values


def load_splits(
    data_dir: Path,
    validation: str = "holdout",
    subset: int | None = None,
    device: torch.device | str = "cpu",
) -> Splits:
    """Load the training and validation tensors of a study.

    Args:
        data_dir: the data directory; missing files are fetched, all are verified.
        validation: ``"holdout"``: 10,000 of the 60,000 training images, chosen with a fixed
            seed, validate and the other 50,000 train; the test set is not read at all.
            ``"test"``: all 60,000 train and the official test set validates, as in the
            seed experiment.
        subset: keep the first ``subset`` training images and at most as many validation
            images, for quick runs.
        device: where the tensors live.
    """
    if validation not in VALIDATIONS:
        raise ValueError(f"validation must be one of {', '.join(VALIDATIONS)}, got {validation!r}")
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be a positive number of images, got {subset}")

    if validation == "holdout":
        checksums = ensure_mnist(data_dir, TRAIN_FILES)
        images, labels = _read(data_dir, TRAIN_IMAGES, TRAIN_LABELS)
        train, val = holdout_indices(len(images))
        train_x, train_y, val_x, val_y = images[train], labels[train], images[val], labels[val]
    else:
        checksums = ensure_mnist(data_dir)
        train_x, train_y = _read(data_dir, TRAIN_IMAGES, TRAIN_LABELS)
        val_x, val_y = _read(data_dir, TEST_IMAGES, TEST_LABELS)
    if subset is not None:
        train_x, train_y = train_x[:subset], train_y[:subset]
        val_x, val_y = val_x[:subset], val_y[:subset]

    return Splits(
        train_x=_inputs(train_x, device),
        train_y=train_y.to(device),
        val_x=_inputs(val_x, device),
        val_y=val_y.to(device),
        validation=validation,
        checksums=checksums,
    )


def load_test(
    data_dir: Path, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official 10,000 test images ``(10000, 784)`` and labels ``(10000,)``, as in Splits."""
    ensure_mnist(data_dir, TEST_FILES)
    images, labels = _read(data_dir, TEST_IMAGES, TEST_LABELS)
    return _inputs(images, device), labels.to(device)
