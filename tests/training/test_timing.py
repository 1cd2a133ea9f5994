"""The benchmark's paths: every recipe timed on both paths, in one run, into one JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search import bench
from tests.helpers import run_cli


@pytest.mark.slow
def test_bench_times_every_recipe_on_both_paths(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["--steps", "3", "--ks", "2", "--out", str(out), "--quiet", "--device", "cpu",
            "--data-dir", str(mnist_dir)]  # fmt: skip
    status, printed, err = run_cli(bench.main, argv, capsys)
    assert status == 0, err
    report = json.loads(out.read_text())
    rows = {row["recipe"]: row for row in report["recipes"]}
    assert list(rows) == list(bench.RECIPES)
    for name, row in rows.items():
        assert row["trials"] == 16  # the CPU's default pool
        assert row["single_trial_epochs_per_s"] > 0 and row["pool_trial_epochs_per_s"] > 0
        assert row["pool_vs_single"] == pytest.approx(
            row["pool_trial_epochs_per_s"] / row["single_trial_epochs_per_s"]
        )
        own_task = name in ("synthetic task (10-256-2)", "your MLP (Task, 20-64-64-3 GELU)")
        assert (row["vs_seed_pool"] is None) == own_task
    assert rows[bench.SEED_RECIPE]["vs_seed_pool"] == 1.0
    # The generic pool on the seed's network shares the seed's one-trial path, not its pool.
    generic = rows["seed's network, generic pool"]
    assert (
        generic["single_trial_epochs_per_s"]
        == rows[bench.SEED_RECIPE]["single_trial_epochs_per_s"]
    )
    assert generic["vs_seed_pool"] != 1.0
    # The first table holds the K asked for; the recipes' pools are timed at the default K.
    paths = [result["path"] for result in report["results"]]
    assert paths == ["(a) seed loop: DataLoader+ToTensor", "(b) single trial, preloaded",
                     "(c) pool K=2"]  # fmt: skip
    assert "every recipe, one trial at a time and in the pool:" in printed
