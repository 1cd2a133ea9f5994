"""The benchmark's timed paths (``python -m search.bench``): the seed's loop, the single-trial
path and the trial pool, each as a timer of ``steps`` optimizer steps after a warm-up, for any
recipe (task, optimizer, bias decay, or a full search space's mix of them).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from search.config import CUDA_PARALLEL_TRIALS, DEFAULTS, OPTIMIZERS, StudyConfig
from search.data.splits import Splits
from search.recipe import OptimizerName, Recipe
from search.training.pools import make_pool
from search.training.runs import EpochPool, train_runs
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


def mix(config: StudyConfig) -> list[Recipe]:
    """The recipes of the timed trials (at the first timed weight decay): the config's, or with
    ``--search-space full`` every optimizer and bias rule in turn, as a full study's trials mix
    them."""
    if config.search_space == "full":
        return [
            config.recipe(WEIGHT_DECAYS[0], cast(OptimizerName, optimizer), decay_biases)
            for optimizer, decay_biases in itertools.product(OPTIMIZERS, (True, False))
        ]
    return [config.recipe(WEIGHT_DECAYS[0])]


def timed_data(data: Splits, config: StudyConfig, steps: int) -> tuple[Splits, int]:
    """What ``steps`` steps train on, and in how many epochs.

    MNIST's 60,000 images hold every timing in one epoch of its first ``steps`` batches;
    the synthetic table's 800 rows are 13 batches, so it trains whole epochs, as many as make
    ``steps`` steps (rounded up: the caller scales the time back to ``steps``).
    """
    per_epoch = math.ceil(len(data.train_x) / config.batch_size)
    if steps * config.batch_size <= len(data.train_x) or per_epoch == 0:
        return first_images(data, steps * config.batch_size), 1
    return data, math.ceil(steps / per_epoch)


def trained_steps(data: Splits, config: StudyConfig, epochs: int) -> int:
    return epochs * math.ceil(len(data.train_x) / config.batch_size)


def single_path(data: Splits, config: StudyConfig, warmup: int) -> Callable[[int], float]:
    """``search.training.train.train`` over ``steps`` steps, as the objective runs one trial;
    a mixed recipe's steps are shared among its combinations, one trial each."""
    seed = trial_seed(config.seed, 0)
    recipes = mix(config)

    def run_epochs(images: Splits, epochs: int, recipe: Recipe) -> None:
        model = init_model(seed, images.train_x.device, config.task)
        for _ in train(model, images, recipe, config.replace(epochs=epochs), seed):
            pass

    def run(steps: int) -> float:
        share = max(1, steps // len(recipes))
        images, epochs = timed_data(data, config, warmup)
        run_epochs(images, epochs, recipes[0])
        images, epochs = timed_data(data, config, share)
        synchronize(data.train_x.device)
        started = time.perf_counter()
        for recipe in recipes:
            run_epochs(images, epochs, recipe)
        synchronize(data.train_x.device)
        seconds = time.perf_counter() - started
        return seconds * steps / (len(recipes) * trained_steps(images, config, epochs))

    return run


def pool_path(
    data: Splits, config: StudyConfig, k: int, warmup: int, generic: bool | None = None
) -> Callable[[int], float]:
    """A pool of trials 0..k-1 side by side over ``steps`` steps, each slot with its recipe
    (a mixed recipe's combinations in turn); ``generic`` as ``make_pool`` takes it."""
    recipes = mix(config)

    def fill(images: Splits) -> EpochPool:
        pool = make_pool(images, config, k, generic)
        for number in range(k):
            recipe = recipes[number % len(recipes)]
            weight_decay = WEIGHT_DECAYS[number % len(WEIGHT_DECAYS)]
            pool.add(
                number, trial_seed(config.seed, number), recipe.replace(weight_decay=weight_decay)
            )
        return pool

    def run_epochs(images: Splits, epochs: int) -> None:
        train_runs(fill(images), (), epochs)

    def run(steps: int) -> float:
        run_epochs(*timed_data(data, config, warmup))
        images, epochs = timed_data(data, config, steps)
        pool = fill(images)
        synchronize(data.train_x.device)
        started = time.perf_counter()
        train_runs(pool, (), epochs)  # filled first: the timing is the training alone
        synchronize(data.train_x.device)
        seconds = time.perf_counter() - started
        return seconds * steps / trained_steps(images, config, epochs)

    return run
