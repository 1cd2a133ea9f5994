"""The benchmark's timed paths (``python -m search.bench``): the seed's loop, the single-trial
path and the trial pool, each as a timer of ``steps`` optimizer steps after a warm-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from search.config import CUDA_PARALLEL_TRIALS, DEFAULTS, StudyConfig
from search.data.splits import Splits
from search.training.pool import TrialPool
from search.training.seeds import trial_seed
from search.training.train import init_model, train

GEMM_SIZE = {"cpu": 2048, "cuda": 8192}

# The weight decays of the benchmark's trials: log-spaced over the default search range.
WEIGHT_DECAYS = np.geomspace(DEFAULTS.wd_low, DEFAULTS.wd_high, CUDA_PARALLEL_TRIALS).tolist()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_flops(device: torch.device) -> float:
    """The best FLOP/s of a large float32 matmul on ``device``: what the hardware can do."""
    size = GEMM_SIZE[device.type]
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = math.inf
    for _ in range(6):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def seed_loop(data_dir: Path, device: torch.device, warmup: int) -> Callable[[int], float]:
    """The seed's training loop, as it is written; returns a timer of ``steps`` steps."""
    dataset = datasets.MNIST(root=data_dir, train=True, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=DEFAULTS.batch_size, shuffle=True)
    model = init_model(trial_seed(DEFAULTS.seed, 0), device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=DEFAULTS.lr, weight_decay=WEIGHT_DECAYS[0])

    def run(steps: int) -> float:
        batches = iter(loader)
        model.train()
        total_loss, correct = 0.0, 0
        for step in range(warmup + steps):
            if step == warmup:
                synchronize(device)
                started = time.perf_counter()
            data, target = next(batches)
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = criterion(output, target)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * data.size(0)  # the seed syncs on these every step
            correct += output.argmax(dim=1).eq(target).sum().item()
        synchronize(device)
        return time.perf_counter() - started

    return run


def first_images(data: Splits, count: int) -> Splits:
    """The first ``count`` training images; validation on 64 of them (it isn't timed)."""
    x, y = data.train_x[:count], data.train_y[:count]
    return Splits(x, y, x[:64], y[:64], data.validation, data.checksums)


def single_path(data: Splits, config: StudyConfig, warmup: int) -> Callable[[int], float]:
    """``search.training.train.train``: one epoch of ``steps`` steps, as the objective runs it."""
    seed = trial_seed(config.seed, 0)

    def epoch(images: Splits) -> None:
        for _ in train(
            init_model(seed, images.train_x.device), images, WEIGHT_DECAYS[0], config, seed
        ):
            pass

    def run(steps: int) -> float:
        epoch(first_images(data, warmup * config.batch_size))
        images = first_images(data, steps * config.batch_size)
        synchronize(data.train_x.device)
        started = time.perf_counter()
        epoch(images)
        synchronize(data.train_x.device)
        return time.perf_counter() - started

    return run


def pool_path(data: Splits, config: StudyConfig, k: int, warmup: int) -> Callable[[int], float]:
    """One pool epoch of ``steps`` steps with trials 0..k-1 side by side."""

    def fill(images: Splits) -> TrialPool:
        pool = TrialPool(images, config, k)
        for number in range(k):
            pool.add(
                number, trial_seed(config.seed, number), WEIGHT_DECAYS[number % len(WEIGHT_DECAYS)]
            )
        return pool

    def run(steps: int) -> float:
        fill(first_images(data, warmup * config.batch_size)).train_epoch()
        pool = fill(first_images(data, steps * config.batch_size))
        synchronize(data.train_x.device)
        started = time.perf_counter()
        pool.train_epoch()
        synchronize(data.train_x.device)
        return time.perf_counter() - started

    return run
