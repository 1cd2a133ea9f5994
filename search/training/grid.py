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
        done: called after every pass over a pool with the run-epochs trained so far (of
            ``len(points) * config.epochs``; a diverged run's are counted as trained): a
            grid of 16 runs is one pool, so counting runs would say nothing until it ends.
    """
    results: list[list[EpochMetrics] | None] = []
    trained = 0
    for start in range(0, len(points), capacity):
        chunk = points[start : start + capacity]
        pool = TrialPool(data, config, capacity)
        for key, (weight_decay, seed) in enumerate(chunk):
            pool.add(key, seed, config.recipe(weight_decay))
        histories: dict[int, list[EpochMetrics] | None] = {key: [] for key in range(len(chunk))}
        for epoch in range(1, config.epochs + 1):
            if not len(pool):
                break
            for key, result in pool.train_epoch().items():
                history = histories[key]
                if isinstance(result, DivergedError):
                    histories[key] = None
                    pool.remove(key)
                elif history is not None:
                    history.append(result)
            if done is not None:
                done(trained + epoch * len(chunk))
        trained += len(chunk) * config.epochs
        results += [histories[key] for key in range(len(chunk))]
        if done is not None:
            done(trained)
    return results
