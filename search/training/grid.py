"""A grid of (weight decay, seed) runs trained through the trial pool: the quality benchmark's
ground truth, and the measured curves its study simulator replays, trained with the very
arithmetic the studies' trials use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from search.config import StudyConfig
from search.data.splits import Splits
from search.training.pools import make_pool
from search.training.runs import EpochPool, Result, Run, train_runs
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
        runs = [Run(key, seed, config.recipe(wd)) for key, (wd, seed) in enumerate(chunk)]
        histories = train_chunk(
            make_pool(data, config, capacity), runs, config.epochs, trained, done
        )
        trained += len(chunk) * config.epochs
        results += [histories[key] for key in range(len(chunk))]
        if done is not None:
            done(trained)
    return results


def train_chunk(
    pool: EpochPool,
    runs: list[Run],
    epochs: int,
    trained: int,
    done: Callable[[int], None] | None,
) -> dict[int, list[EpochMetrics] | None]:
    """One pool's runs for ``epochs`` epochs: each key's history, None if it diverged."""
    histories: dict[int, list[EpochMetrics] | None] = {run.key: [] for run in runs}

    def record(key: int, result: Result) -> None:
        history = histories[key]
        if isinstance(result, DivergedError):
            histories[key] = None
        elif history is not None:
            history.append(result)

    def passed(epoch: int, _: int) -> None:
        if done is not None:
            done(trained + epoch * len(runs))

    train_runs(pool, runs, epochs, record, passed)
    return histories
