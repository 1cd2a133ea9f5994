"""How far a long phase of a command is: a bar on a terminal, a line every few seconds elsewhere.

A phase that is quick on an idle machine can take far longer on a loaded one, and a command
that says nothing for a long while looks hung. ``Steps`` counts a phase's steps (paths timed, grid
runs, replayed epochs, studies) and shows done/total, elapsed time and an ETA from the rate
measured so far.

On a terminal it is a tqdm bar whose clock a ticker thread redraws every second. Elsewhere (a
pipe, a log file, CI) it prints at most one line per ``every_s`` seconds as steps finish, and
when a single step takes longer, the ticker prints a still-alive line so that no 10 s pass
without one; a phase that said anything also says when it is done. A phase over within
``every_s`` prints nothing: a log is not cluttered with the phases that were never slow.
``quiet`` prints nothing. Lines go to stderr unless told: stdout is for results.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from search.reporting.eta import clock

LINE_EVERY_S = 5.0  # off a terminal, at most one progress line this often
# Off a terminal, a still-alive line after this long without a line; the ticker looks every
# TICK_S, so no gap reaches 10 s.
ALIVE_AFTER_S = 8.0
TICK_S = 1.0


def plural(unit: str, count: int = 2) -> str:
    """``step`` -> ``steps``, ``study`` -> ``studies``: the unit as ``count`` of it reads."""
    if count == 1:
        return unit
    if unit.endswith("y") and unit[-2:-1] not in tuple("aeiou"):
        return unit[:-1] + "ies"
    return unit + "s"


class Steps:
    """The progress of one phase of ``total`` steps; a context manager that stops its ticker.

    Args:
        total: the steps the phase is expected to take; ``steps.total = n`` changes it later.
        what: what the phase does, the start of every line (``"timing the paths"``).
        unit: what a step is, singular (``"run"``, ``"epoch"``).
        quiet: print nothing at all (a command's ``--quiet``).
        out: where the bar or lines go; stderr unless told.
        every_s: off a terminal, the least time between two progress lines.
        alive_s: off a terminal, a still-alive line once this long passed without a line.
        tick_s: how often the ticker thread calls ``tick``; None starts no thread (tests call
            ``tick`` themselves).
        clock: seconds from any origin; tests pass a fake one.
    """

    def __init__(
        self,
        total: int,
        what: str,
        *,
        unit: str = "step",
        quiet: bool = False,
        out: TextIO | None = None,
        every_s: float = LINE_EVERY_S,
        alive_s: float = ALIVE_AFTER_S,
        tick_s: float | None = TICK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.unit = unit
        self.quiet = quiet
        self.out = out or sys.stderr
        self.every_s = every_s
        self.alive_s = alive_s
        self.clock = clock
        self.done = 0
        self.text = ""
        self._total = max(0, total)
        self.started = self.last_step = self.last_progress = self.last_word = clock()
        # The ticker thread and the caller print to the same stream.
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.closed = False
        self.announced = False  # a progress line was printed: the last step gets one too
        self.bar: tqdm | None = None
        self.ticker: threading.Thread | None = None
        if quiet:
            return
        if self.out.isatty():
            self.bar = tqdm(
                total=self._total,
                desc=what,
                file=self.out,
                unit=unit,
                leave=False,
                smoothing=0,  # the mean rate: steps can differ a lot in length
                dynamic_ncols=True,
                bar_format="{desc}: {n_fmt}/{total_fmt} "
                + plural(unit)
                + " |{bar}| {elapsed} elapsed, ETA {remaining}{postfix}",
            )
        if tick_s is not None:
            self.ticker = threading.Thread(
                target=self._tick_every, args=(tick_s,), name=f"steps: {what}", daemon=True
            )
            self.ticker.start()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, total: int) -> None:
        # A phase learns its size as it goes (a pruned trial, a second round of candidates).
        with self.lock:
            self._total = max(0, total)
            if self.bar is not None:
                self.bar.total = self._total
                self.bar.refresh()

    def eta(self, now: float) -> float | None:
        """Seconds still to go at the rate measured so far; None before the first step."""
        if self.done == 0:
            return None
        left = max(0, self._total - self.done)
        return (now - self.started) / self.done * left

    def line(self, now: float | None = None, text: str | None = None) -> str:
        """The progress line: ``what: done/total units, elapsed, ETA  text``."""
        now = self.clock() if now is None else now
        text = self.text if text is None else text
        total = max(self._total, self.done)
        eta = self.eta(now)
        if self.done >= total and self.done > 0:
            ending = "done"
        else:
            ending = "ETA " + ("?" if eta is None else clock(eta))
        line = (
            f"{self.what}: {self.done}/{total} {plural(self.unit, total)}, "
            f"{clock(now - self.started)} elapsed, {ending}"
        )
        return f"{line}  {text}" if text else line

    def alive_line(self, now: float) -> str:
        """The ticker's line when no step has finished for a while: the work goes on."""
        since = clock(now - self.last_step)
        if self.done < self._total:
            return self.line(
                now, f"(still working on {self.unit} {self.done + 1}, {since} so far)"
            )
        # Every step counted, yet the phase goes on: what follows its last step (a study
        # confirming its candidates after its last trial).
        line = self.line(now, "").removesuffix(", done")
        return f"{line}, finishing ({since} since the last {self.unit})"

    def step(self, text: str = "", n: int = 1) -> None:
        """``n`` more steps are done; ``text`` says what the last one was or gave."""
        with self.lock:
            before = self.done
            self.done += n
            self.text = text
            now = self.last_step = self.clock()
            if self.quiet or self.closed:
                return
            if self.bar is not None:
                self.bar.set_postfix_str(text, refresh=False)
                self.bar.update(n)
                return
            finishing = self.announced and before < self._total <= self.done
            if finishing or now - self.last_progress >= self.every_s:
                self._print(self.line(now), now)

    def say(self, line: str) -> None:
        """Print ``line`` above the bar (or as a line of its own), keeping the bar whole."""
        with self.lock:
            if self.quiet or self.closed:
                return
            if self.bar is not None:
                self.bar.write(line, file=self.out)
            else:
                print(line, file=self.out, flush=True)
            self.last_word = self.clock()

    def tick(self) -> None:
        """What the ticker thread does every ``tick_s``: redraw the bar's clock, or print a
        still-alive line off a terminal once ``alive_s`` passed without a line."""
        with self.lock:
            if self.quiet or self.closed:
                return
            if self.bar is not None:
                self.bar.refresh()
                return
            now = self.clock()
            if now - self.last_word >= self.alive_s:
                self._print(self.alive_line(now), now, progress=False)

    def close(self) -> None:
        """Stop the ticker and take the bar away; prints nothing (an interrupted phase ends
        without a last line)."""
        self.stopping.set()
        ticker = self.ticker
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join()
        with self.lock:
            self.closed = True
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def _tick_every(self, seconds: float) -> None:
        while not self.stopping.wait(seconds):
            self.tick()

    def _print(self, line: str, now: float, progress: bool = True) -> None:
        # Callers hold the lock. A still-alive line is no progress line: a step that ends
        # just after one still gets its own, with what it did.
        print(line, file=self.out, flush=True)
        self.last_word = now
        if progress:
            self.last_progress = now
        self.announced = True
