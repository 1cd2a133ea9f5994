"""The quality benchmark's simulated studies, on a grid of curves it did not have to train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from search import bench
from search.engine.simulate import EdgeCurves
from tests.helpers import run_cli


def grid_json(path: Path, curves: EdgeCurves) -> None:
    """A quality JSON whose grid is ``curves`` sampled as the benchmark samples MNIST."""
    decays = [float(w) for w in np.geomspace(1e-6, 1e-1, 40)]
    runs = [[curves(w, seed) for seed in range(3)] for w in decays]
    weight_decay, value = curves.optimum(seeds=16)
    optimum = {"weight_decay": weight_decay, "val_accuracy_mean": value}
    grid = {"optimum": optimum, "dense": [], "curves": {"weight_decays": decays, "runs": runs}}
    path.write_text(json.dumps({"grid": grid}))


def test_quality_simulates_studies_on_an_earlier_grid(tmp_path: Path, capsys) -> None:
    earlier, out = tmp_path / "earlier.json", tmp_path / "quality.json"
    grid_json(earlier, EdgeCurves(edge=4e-3))
    argv = ["quality", "--grid-from", str(earlier), "--seeds", "0", "--simulate", "3"]
    status, printed, _ = run_cli(bench.main, [*argv, "--trials", "25", "--out", str(out)], capsys)
    assert status == 0
    assert "simulated, 25 trials: distance to the optimum median" in printed
    (simulated,) = json.loads(out.read_text())["simulated"]
    assert simulated["trials"] == 25 and len(simulated["distances"]) == 3
    # Three studies on an edge the sampler never saw: each within the 25-trial target.
    assert max(simulated["distances"]) <= 0.004
    assert simulated["worst"] == pytest.approx(max(simulated["distances"]))
    assert not (tmp_path / "quality.db").exists()  # no real study was run
