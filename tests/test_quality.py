"""The benchmarks' commands: the quality benchmark's simulated studies, on a grid of curves it
did not have to train; what both say in --help and when they are stopped."""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from search import bench
from search.benchmarks import measure
from search.benchmarks.quality import held_out_rows, robust_optimum
from search.benchmarks.truth import EdgeCurves
from search.signals import Interrupted
from tests.helpers import run_cli


def grid_json(path: Path, curves: EdgeCurves) -> None:
    """A quality JSON whose grid is ``curves`` sampled as the benchmark samples MNIST: every
    weight decay by 8 seeds, [running, validation, final] accuracy per epoch."""
    decays = [float(w) for w in np.geomspace(1e-6, 1e-1, 40)]
    runs = [[curves(w, seed) for seed in range(8)] for w in decays]
    rows = held_out_rows(dict(zip(decays, runs, strict=True)), curves.limit)
    grid = {
        "optimum": robust_optimum(rows, "running"),
        "measure": "running",
        "limit": curves.limit,
        "seeds": 8,
        "dense": rows,
        "curves": {"weight_decays": decays, "runs": runs},
    }
    path.write_text(json.dumps({"grid": grid}))


def test_quality_simulates_studies_on_an_earlier_grid(tmp_path: Path, capsys) -> None:
    earlier, out = tmp_path / "earlier.json", tmp_path / "quality.json"
    grid_json(earlier, EdgeCurves(edge=4e-3))
    argv = ["quality", "--grid-from", str(earlier), "--seeds", "0", "--simulate", "3"]
    status, printed, _ = run_cli(bench.main, [*argv, "--trials", "25", "--out", str(out)], capsys)
    assert status == 0
    assert "simulated, 25 trials: regret of the recommendation (noise-free) median" in printed
    (simulated,) = json.loads(out.read_text())["simulated"]
    assert simulated["trials"] == 25 and len(simulated["regrets"]) == 3
    # Three studies on an edge the sampler never saw: each within the 25-trial target, and
    # robustly feasible (7 of 8 seeds or more hold the limit at the recommended decay).
    assert max(simulated["regrets"]) <= 0.0025
    assert simulated["worst"] == pytest.approx(max(simulated["regrets"]))
    assert simulated["robust"] == 3 and min(simulated["feasible_shares"]) >= 7 / 8
    assert not (tmp_path / "quality.db").exists()  # no real study was run


def test_bench_help_names_the_quality_subcommand(capsys) -> None:
    status, printed, _ = run_cli(bench.main, ["--help"], capsys)
    assert status == 0
    assert "python -m search.bench quality" in " ".join(printed.split())
    assert "--quiet" in printed and "depends on the machine" in " ".join(printed.split())


def interrupt(signum: int) -> Callable[..., int]:
    """A benchmark body that is stopped at once, as Ctrl-C (or SIGTERM) stops the real one."""

    def stopped(*args: object) -> int:
        raise Interrupted(signum)

    return stopped


def test_bench_stopped_promises_no_resume(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(bench, "benchmark", interrupt(signal.SIGINT))
    status, printed, said = run_cli(bench.main, ["--steps", "1", "--out", "x.json"], capsys)
    assert status == 130 and printed == ""
    assert said == (
        "interrupted by SIGINT: nothing to resume and x.json not written; run the command "
        "again to time every path from the start\n"
    )


def test_quality_stopped_says_what_its_json_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "quality.json"
    monkeypatch.setattr(measure, "measure", interrupt(signal.SIGTERM))
    status, _, said = run_cli(bench.main, ["quality", "--out", str(out)], capsys)
    assert status == 143
    assert said.startswith("interrupted by SIGTERM: a benchmark does not resume, run it again")
    assert said.endswith(f"{out} was not written\n") and "resume the" not in said

    def stopped_after_saving(
        args: argparse.Namespace, config: object, run_args: list[str], written: list[Path]
    ) -> int:
        written.append(args.out)
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(measure, "measure", stopped_after_saving)
    status, _, said = run_cli(bench.main, ["quality", "--out", str(out)], capsys)
    assert status == 130
    assert f"{out} keeps what was measured so far (--grid-from {out} reuses its grid)" in said


def test_quality_quiet_prints_no_progress(tmp_path: Path, capsys) -> None:
    earlier, out = tmp_path / "earlier.json", tmp_path / "quality.json"
    grid_json(earlier, EdgeCurves(edge=4e-3))
    argv = ["quality", "--grid-from", str(earlier), "--seeds", "0", "--simulate", "1"]
    argv += ["--trials", "10", "--out", str(out), "--quiet"]
    status, printed, said = run_cli(bench.main, argv, capsys)
    assert status == 0 and said == ""
    assert "simulated, 10 trials: regret of the recommendation (noise-free) median" in printed


def test_quality_refuses_a_grid_from_before_the_held_out_seeds(tmp_path: Path, capsys) -> None:
    earlier = tmp_path / "old.json"
    old = {"optimum": {"weight_decay": 5e-3}, "dense": [], "curves": {"weight_decays": []}}
    earlier.write_text(json.dumps({"grid": old}))
    argv = ["quality", "--grid-from", str(earlier), "--seeds", "0"]
    status, printed, said = run_cli(bench.main, argv, capsys)
    assert status == 2 and printed == ""
    assert said.count("\n") == 1 and "held-out seeds" in said and "without --grid-from" in said
