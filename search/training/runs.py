"""Driving runs through epochs side by side: the one loop of the search, the seed
confirmation, replays, grids and the timing bench.

A pass trains one epoch of every member of a pool (``TrialPool.train_epoch``) and tells the
caller each member's result in key order, so the caller records it and may take members out
or put new ones in before the next pass. ``train_pass`` is the search's unit (its trials come
and go between passes, ``search.engine.drive``); ``train_runs`` drives a fixed set of runs for
N epochs, a diverged run leaving the pool once its result is told. Pure training, no Optuna.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from search.recipe import Recipe
from search.training.train import DivergedError, EpochMetrics

Result = EpochMetrics | DivergedError


class EpochPool(Protocol):
    """What a driver needs of a pool: ``search.training.pool.TrialPool``, which trains, or the
    study simulator's curves (``search.benchmarks.simulate``), which replay measured ones."""

    capacity: int

    def __len__(self) -> int: ...

    def add(self, key: int, seed: int, recipe: Recipe, slot: int | None = None) -> None: ...

    def remove(self, key: int) -> None: ...

    def slot(self, key: int) -> int: ...

    def train_epoch(self, on_step: Callable[[], None] | None = None) -> dict[int, Result]: ...

    def state_dict(self, key: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Run:
    """One run to train: the caller's key for it, its seed, its recipe, and the slot it
    takes (None: the first free one; a replay puts a trial back where it trained)."""

    key: int
    seed: int
    recipe: Recipe
    slot: int | None = None


def train_pass(
    pool: EpochPool,
    on_result: Callable[[int, Result], None],
    on_step: Callable[[], None] | None = None,
    on_trained: Callable[[], None] | None = None,
) -> int:
    """One epoch of every member; returns how many trained.

    ``on_result`` is told each member's result in key order (in the search, each told trial
    reaches the sampler before the trial asked to replace it); it owns what happens to the
    member. ``on_step`` is called every optimizer step (a heartbeat), ``on_trained`` once the
    epoch is trained, before any result is told (an ETA counts passes: a pass costs the same
    however many slots are full).
    """
    trained = len(pool)
    results = pool.train_epoch(on_step=on_step)
    if on_trained is not None:
        on_trained()
    for key, result in sorted(results.items()):
        on_result(key, result)
    return trained


def train_runs(
    pool: EpochPool,
    runs: Sequence[Run],
    epochs: int,
    on_result: Callable[[int, Result], None] | None = None,
    on_pass: Callable[[int, int], None] | None = None,
) -> None:
    """Add ``runs`` to ``pool`` and train every member for ``epochs`` epochs side by side.

    A run whose training diverged is told its ``DivergedError`` and leaves the pool; the
    rest go on. ``on_pass`` is told each epoch number and how many members it trained.
    """
    for run in runs:
        pool.add(run.key, run.seed, run.recipe, run.slot)

    def told(key: int, result: Result) -> None:
        if on_result is not None:
            on_result(key, result)
        if isinstance(result, DivergedError):
            pool.remove(key)

    for epoch in range(1, epochs + 1):
        if not len(pool):
            break  # every run diverged
        trained = train_pass(pool, told)
        if on_pass is not None:
            on_pass(epoch, trained)
