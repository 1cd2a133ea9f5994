"""A grid of (weight decay, seed) runs trained through the trial pool: the quality benchmark's
ground truth, measured with the very arithmetic the studies' trials use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from search.config import StudyConfig
from search.data.splits import Splits
from search.training.pool import TrialPool
from search.training.train import DivergedError, EpochMetrics


def train_grid(
    data: Splits,
    config: StudyConfig,
    points: Sequence[tuple[float, int]],
    capacity: int,
    done: Callable[[int], None] | None = None,
) -> list[EpochMetrics | None]:
    """The last epoch's metrics of each (weight decay, seed) in ``points``, None if it diverged.

    Trained ``capacity`` at a time, every run for ``config.epochs`` epochs with no pruning.

    Args:
        done: called with the number of points finished after each pool of them.
    """
    results: list[EpochMetrics | None] = []
    for start in range(0, len(points), capacity):
        chunk = points[start : start + capacity]
        pool = TrialPool(data, config, capacity)
        for key, (weight_decay, seed) in enumerate(chunk):
            pool.add(key, seed, weight_decay)
        last: dict[int, EpochMetrics | None] = dict.fromkeys(range(len(chunk)))
        for _ in range(config.epochs):
            if not len(pool):
                break
            for key, result in pool.train_epoch().items():
                if isinstance(result, DivergedError):
                    last[key] = None
                    pool.remove(key)
                else:
                    last[key] = result
        results += [last[key] for key in range(len(chunk))]
        if done is not None:
            done(len(results))
    return results
