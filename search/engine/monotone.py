"""Whether a trial over the training-accuracy limit can still end within it: measured, not assumed.

Constraint pruning stops a trial over the limit, and the edge sampler's frontier takes such a
trial as infeasible for good. That holds only if a run over the limit at some epoch ends over
it too. ``recoveries`` reads, off full-length histories (every epoch trained, as the quality
bench's grids train them), each run that was over a limit at an epoch and ended within it, and
by how much it fell. ``OVER_LIMIT_MARGIN`` is the largest such fall seen for each measure
(docs/search-quality.md#monotone, with the command that measures it): a trial is stopped as
infeasible only once it is further over the limit than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The largest fall, in accuracy, from an epoch over the limit to a last epoch within it, seen
# on the recorded full-length histories (tests/engine/histories.json), per measure, rounded up.
# The running accuracy (each batch scored before its update) never fell back there; the final
# weights' accuracy moves from epoch to epoch by more than its trend near the end.
OVER_LIMIT_MARGIN: dict[str, float] = {"running": 0.0, "final": 0.0035}


def over_for_good(accuracy: float, limit: float, measure: str) -> bool:
    """Whether a trial at ``accuracy`` (by ``measure``) is over ``limit`` by more than any
    recorded run ever came back from."""
    return accuracy > limit + OVER_LIMIT_MARGIN[measure]


@dataclass(frozen=True)
class Recovery:
    """A run over the limit at ``epoch`` (``accuracy``) that ended within it (``last``)."""

    run: int
    epoch: int
    accuracy: float
    last: float

    @property
    def fall(self) -> float:
        return self.accuracy - self.last


def recoveries(histories: Sequence[Sequence[float]], limit: float) -> list[Recovery]:
    """Every (run, epoch before the last) over ``limit`` whose run ends within it.

    ``histories``: each run's training accuracy per epoch, all of them full length.
    """
    found = []
    for run, accuracies in enumerate(histories):
        last = accuracies[-1]
        if last > limit:
            continue
        found += [
            Recovery(run, epoch, accuracy, last)
            for epoch, accuracy in enumerate(accuracies[:-1], start=1)
            if accuracy > limit
        ]
    return found


def over_counts(histories: Sequence[Sequence[float]], limit: float) -> tuple[int, int]:
    """(run-epochs before the last over ``limit``, of them in runs that end within it)."""
    over = sum(a > limit for accuracies in histories for a in accuracies[:-1])
    return over, len(recoveries(histories, limit))
