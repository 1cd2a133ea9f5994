"""A grid of (weight decay, seed) runs trained through the trial pool: the quality benchmark's
ground truth, and the measured curves its study simulator replays, trained with the very
arithmetic the studies' trials use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from search.config import StudyConfig
from search.data.splits import Splits
from search.training.pool import TrialPool
from search.training.train import DivergedError, EpochMetrics


def train_grid_histories(
    data: Splits,
    config: StudyConfig,
    points: Sequence[tuple[float, int]],
    capacity: int,
    done: Callable[[int], None] | None = None,
) -> list[list[EpochMetrics] | None]:
    """Every epoch's metrics of each (weight decay, seed) in ``points``, None if it diverged.

    Trained ``capacity`` at a time, every run for ``config.epochs`` epochs with no pruning.

    Args:
        done: called with the number of points finished after each pool of them.
    """
    results: list[list[EpochMetrics] | None] = []
    for start in range(0, len(points), capacity):
        chunk = points[start : start + capacity]
        pool = TrialPool(data, config, capacity)
        for key, (weight_decay, seed) in enumerate(chunk):
            pool.add(key, seed, weight_decay)
        histories: dict[int, list[EpochMetrics] | None] = {key: [] for key in range(len(chunk))}
        for _ in range(config.epochs):
            if not len(pool):
                break
            for key, result in pool.train_epoch().items():
                history = histories[key]
                if isinstance(result, DivergedError):
                    histories[key] = None
                    pool.remove(key)
                elif history is not None:
                    history.append(result)
        results += [histories[key] for key in range(len(chunk))]
        if done is not None:
            done(len(results))
    return results


def train_grid(
    data: Splits,
    config: StudyConfig,
    points: Sequence[tuple[float, int]],
    capacity: int,
    done: Callable[[int], None] | None = None,
) -> list[EpochMetrics | None]:
    """The last epoch's metrics of each point of ``train_grid_histories``, None if it diverged."""
    histories = train_grid_histories(data, config, points, capacity, done)
    return [None if history is None else history[-1] for history in histories]
