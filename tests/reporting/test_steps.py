"""The progress of a long phase (``search.reporting.steps``): which lines it prints and when,
on a fake clock, so that nothing here waits or depends on the machine's speed."""

from __future__ import annotations

import io

import pytest

from search.reporting.steps import Steps, plural


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0  # any origin: Steps counts from its start

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def piped(total: int, clock: FakeClock) -> tuple[Steps, io.StringIO]:
    """A ``Steps`` writing to a pipe-like buffer, with no ticker thread: tests call ``tick``."""
    out = io.StringIO()
    steps = Steps(total, "replaying trial 3", unit="epoch", out=out, tick_s=None, clock=clock)
    return steps, out


def test_steps_prints_one_line_per_five_steps_of_a_second_each() -> None:
    clock = FakeClock()
    steps, out = piped(20, clock)
    with steps:
        for epoch in range(1, 21):
            clock.now += 1
            steps.step(f"epoch {epoch}")
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "replaying trial 3: 5/20 epochs",
        "replaying trial 3: 10/20 epochs",
        "replaying trial 3: 15/20 epochs",
        "replaying trial 3: 20/20 epochs",
    ]
    assert lines[0] == "replaying trial 3: 5/20 epochs, 0:05 elapsed, ETA 0:15  epoch 5"
    assert lines[-1] == "replaying trial 3: 20/20 epochs, 0:20 elapsed, done  epoch 20"


def test_steps_eta_is_the_steps_left_at_the_measured_rate() -> None:
    clock = FakeClock()
    steps, out = piped(20, clock)
    for _ in range(5):
        clock.now += 12  # 12 s a step: 15 steps left take 3 minutes
        steps.step()
    assert out.getvalue().splitlines()[-1] == (
        "replaying trial 3: 5/20 epochs, 1:00 elapsed, ETA 3:00"
    )
    assert steps.eta(clock.now) == 180.0
    clock.now += 3600
    assert "1:01:00 elapsed" in steps.line()


def test_steps_over_within_every_s_print_nothing() -> None:
    # A phase that was never slow leaves no trace in a log (evaluate's scoring, on most days).
    clock = FakeClock()
    steps, out = piped(3, clock)
    with steps:
        for _ in range(3):
            clock.now += 1
            steps.step("fast")
    assert out.getvalue() == ""


def test_steps_the_last_step_has_its_line_once_the_phase_said_something() -> None:
    clock = FakeClock()
    steps, out = piped(3, clock)
    clock.now += 6
    steps.step("slow")  # 6 s: a line
    clock.now += 1
    steps.step()  # 1 s later: too soon for another
    clock.now += 1
    steps.step("last")  # but the last step is said
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "replaying trial 3: 1/3 epochs",
        "replaying trial 3: 3/3 epochs",
    ]
    assert out.getvalue().splitlines()[-1].endswith("done  last")


def test_steps_quiet_prints_nothing_at_all() -> None:
    clock = FakeClock()
    out = io.StringIO()
    steps = Steps(4, "grid", quiet=True, out=out, tick_s=None, clock=clock)
    with steps:
        for _ in range(4):
            clock.now += 30
            steps.step("x")
            steps.tick()
        steps.say("a line")
    assert out.getvalue() == ""
    assert steps.done == 4  # it still counts


def test_steps_ticker_says_it_is_alive_when_one_step_takes_long() -> None:
    clock = FakeClock()
    steps, out = piped(4, clock)
    clock.now += 7.9
    steps.tick()
    assert out.getvalue() == ""  # not yet: under 8 s without a line
    clock.now += 0.1
    steps.tick()
    assert out.getvalue().splitlines() == [
        "replaying trial 3: 0/4 epochs, 0:08 elapsed, ETA ?  "
        "(still working on epoch 1, 0:08 so far)"
    ]
    steps.tick()  # at the same moment: no second line
    clock.now += 8
    steps.tick()
    assert out.getvalue().splitlines()[-1].endswith("(still working on epoch 1, 0:16 so far)")


def test_steps_alive_line_counts_from_the_last_step() -> None:
    clock = FakeClock()
    steps, out = piped(4, clock)
    clock.now += 5
    steps.step("epoch 1")  # printed (5 s)
    clock.now += 8
    steps.tick()
    assert out.getvalue().splitlines()[-1] == (
        "replaying trial 3: 1/4 epochs, 0:13 elapsed, ETA 0:39  "
        "(still working on epoch 2, 0:08 so far)"
    )


def test_steps_alive_line_after_the_last_step_says_the_phase_is_finishing() -> None:
    # A study's trials are all counted, and it goes on to confirm its candidates.
    clock = FakeClock()
    steps, out = piped(2, clock)
    clock.now += 10
    steps.step(n=2)
    clock.now += 9
    steps.tick()
    assert out.getvalue().splitlines()[-1] == (
        "replaying trial 3: 2/2 epochs, 0:19 elapsed, finishing (0:09 since the last epoch)"
    )


def test_steps_say_prints_its_line_and_counts_as_a_word() -> None:
    clock = FakeClock()
    steps, out = piped(4, clock)
    clock.now += 6
    steps.say("  a relayed line")
    clock.now += 7
    steps.tick()  # 7 s since the said line: no still-alive line yet
    assert out.getvalue() == "  a relayed line\n"
    clock.now += 1
    steps.tick()
    assert out.getvalue().count("still working") == 1


def test_steps_total_can_change_while_it_runs() -> None:
    clock = FakeClock()
    steps, out = piped(2, clock)
    clock.now += 5
    steps.step()
    steps.total = 4  # a second round of candidates
    clock.now += 5
    steps.step()
    assert (
        out.getvalue()
        .splitlines()[-1]
        .startswith("replaying trial 3: 2/4 epochs, 0:10 elapsed, ETA 0:10")
    )
    clock.now += 5
    steps.step(n=2)
    assert out.getvalue().splitlines()[-1].endswith("done")


def test_steps_more_steps_than_expected_show_the_count_done() -> None:
    clock = FakeClock()
    steps, _ = piped(1, clock)
    steps.step(n=3)
    assert steps.line().startswith("replaying trial 3: 3/3 epochs")


def test_steps_draws_a_bar_on_a_terminal_with_count_eta_and_said_lines() -> None:
    out = Terminal()
    with Steps(10, "timing the paths", unit="run", out=out, tick_s=None) as steps:
        steps.step("(a) seed loop, round 1/3: 2.1 s", n=3)
        steps.say("a line above the bar")
        steps.tick()  # redraws the clock
    screen = out.getvalue()
    assert "timing the paths: 3/10 runs" in screen and "ETA" in screen
    assert "(a) seed loop, round 1/3: 2.1 s" in screen
    assert "a line above the bar\n" in screen


def test_steps_stops_its_ticker_thread_on_exit() -> None:
    with Steps(3, "grid", out=io.StringIO(), tick_s=0.01) as steps:
        ticker = steps.ticker
        assert ticker is not None and ticker.is_alive()
    assert not ticker.is_alive()
    steps.step()  # after the end: counted, never printed
    steps.tick()


def test_steps_stop_on_an_exception_without_a_last_line() -> None:
    clock = FakeClock()
    steps, out = piped(3, clock)
    with pytest.raises(KeyboardInterrupt), steps:
        clock.now += 6
        steps.step()
        raise KeyboardInterrupt
    assert len(out.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    ("unit", "count", "text"),
    [("epoch", 2, "epochs"), ("study", 5, "studies"), ("day", 2, "days"), ("run", 1, "run")],
)
def test_plural_of_a_unit(unit: str, count: int, text: str) -> None:
    assert plural(unit, count) == text


def test_steps_a_step_just_after_a_still_alive_line_still_says_what_it_did() -> None:
    clock = FakeClock()
    steps, out = piped(4, clock)
    clock.now += 8
    steps.tick()  # still working on epoch 1
    clock.now += 1
    steps.step("epoch 1: 9.0 s")
    assert out.getvalue().splitlines()[-1] == (
        "replaying trial 3: 1/4 epochs, 0:09 elapsed, ETA 0:27  epoch 1: 9.0 s"
    )
