"""How long a study has left: the epochs its trials still have to run, at the pruning rate seen
so far, laid out on the pool's slots and timed by the measured seconds per pass.

Why not epochs left times seconds per epoch: a pass over the trial pool costs the same however
many of its slots are full, so time follows passes, not trial-epochs; and the tail of a study,
when the last few trials train in a pool that no longer fills, costs passes that a count of
epochs misses. On the one-trial path the pool has one slot and a pass is an epoch.

Why not the mean length of the finished trials: early in a study the trials that finished are
the short ones (stopped over the limit after two epochs), while the long ones still run, so
that mean falls far short of the truth, and the ETA further still (docs/workers.md).
``survival`` is the Kaplan-Meier estimate instead: running trials count as "ran at least this
far", so they weigh in from the first pass. Where no trial has been yet, nothing is assumed to
stop: the full recipe.

Pure arithmetic over what the study shows, no clock and no torch: ``tests/reporting/test_eta.py``
replays recorded studies through it.
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DRAWS = 200  # futures drawn per estimate, once per pass: cheap beside the pass itself


@dataclass(frozen=True)
class Seen:
    """One trial as the estimate sees it: the epochs it ran, and whether it has ended."""

    epochs: int
    ended: bool


def survival(trials: Sequence[Seen], epochs: int) -> list[float]:
    """``S[j]``, the chance that a trial runs at least ``j`` epochs, for ``j`` in 0..epochs.

    A trial that reached epoch ``j`` and went on, or still runs, is at risk at ``j`` without
    ending there; the share of those at risk that ended at ``j`` is the hazard there.
    """
    s = [1.0] * (epochs + 1)
    for j in range(1, epochs):
        at_risk = sum(t.epochs >= j for t in trials)
        ended = sum(t.ended and t.epochs == j for t in trials)
        hazard = ended / at_risk if at_risk else 0.0
        s[j + 1] = s[j] * (1 - hazard)
    return s


def length_sampler(s: Sequence[float], rng: random.Random) -> Callable[[int], int]:
    """Draws a trial's length, given that it has run ``done`` epochs and goes on, from ``s``."""
    epochs = len(s) - 1
    # S falls with j; bisect wants it rising: negate.
    falling = [-x for x in s]

    def draw(done: int) -> int:
        if done >= epochs:
            return epochs
        u = rng.random() * s[done + 1]  # uniform below the chance of reaching the next epoch
        # The largest j with S[j] > u: the trial reaches j but not j + 1.
        return max(done + 1, min(epochs, bisect.bisect_left(falling, -u) - 1))

    return draw


def passes_left(
    trials: Sequence[Seen], budget: int, s: Sequence[float], slots: int, draws: int
) -> float:
    """Expected pool passes until the last trial ends, over ``draws`` drawn futures: each
    running trial's length, then each queued trial into the slot that frees first.

    Drawn, not the mean lengths laid out once: the study ends with its longest tail, and the
    mean of a maximum is more than the maximum of means (laid out once, the passes left come
    out short on recorded studies: docs/workers.md).
    """
    draw = length_sampler(s, random.Random(0))  # the same state gives the same estimate
    running = [t.epochs for t in trials if not t.ended]
    queued = max(0, budget - len(trials))
    slots = max(slots, len(running))
    total = 0.0
    for _ in range(draws):
        free = [draw(done) - done for done in running] + [0] * (slots - len(running))
        heapq.heapify(free)
        for _ in range(queued):
            heapq.heappush(free, heapq.heappop(free) + draw(0))
        total += max(free, default=0)
    return total / draws


@dataclass(frozen=True)
class Forecast:
    """Where a study stands: the share of its expected epochs done, and passes still to go."""

    epochs_done: int
    epochs_expected: float
    passes: float

    @property
    def fraction(self) -> float:
        return self.epochs_done / self.epochs_expected if self.epochs_expected else 1.0


def epochs_left(s: Sequence[float], done: int) -> float:
    """Expected epochs still to come of a trial that has run ``done`` epochs and goes on."""
    if done >= len(s) - 1:
        return 0.0
    reach = s[done + 1]
    return sum(s[done + 1 :]) / reach if reach > 0 else 1.0


def forecast(
    trials: Sequence[Seen], budget: int, epochs: int, slots: int, draws: int = DRAWS
) -> Forecast:
    """The study's expected remaining work, from its trials so far (ended and running).

    ``slots`` is how many trials train at once: the pool's capacity (1 on the one-trial
    path), or more while other workers' trials run too.
    """
    s = survival(trials, epochs)
    running = sum(epochs_left(s, t.epochs) for t in trials if not t.ended)
    queued = max(0, budget - len(trials))
    done = sum(t.epochs for t in trials)
    expected = done + running + queued * epochs_left(s, 0)
    return Forecast(done, expected, passes_left(trials, budget, s, slots, draws))


def clock(seconds: float) -> str:
    """``1:05:09``, ``4:07`` or ``0:09``: hours only when there are some."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
