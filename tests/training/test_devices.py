"""The GPU runs the code the suite tests: no step of training or evaluation branches on the
device, and the pool's every recipe trains on each device this machine has.

CI has no GPU, so the CUDA path can't be run here. What can be shown is that it is the same
path: the only lines that ask which device they are on are the ones listed in
``DEVICE_BRANCHES`` (defaults, timing and messages), each named with what it decides, and
none of them is in the arithmetic. A new ``if device.type == "cuda"`` in the training code,
or a ``.cuda()`` call, fails ``test_only_listed_lines_ask_for_the_device``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from search.config import StudyConfig
from search.data.splits import Splits
from search.data.synthetic import load_synthetic
from search.training.pool import TrialPool
from search.training.seeds import trial_seed
from search.training.train import init_model, train

ROOT = Path(__file__).resolve().parents[2]

# (file, enclosing function or "<module>"): what each device-dependent line decides.
DEVICE_BRANCHES = {
    ("search/training/pool.py", "default_parallel_trials"): "the default K: 64 on a GPU",
    ("search/training/train.py", "device_problem"): "the one-line error for a missing GPU",
    ("search/training/train.py", "resolve_device"): "--device auto",
    ("search/training/train.py", "use_one_cpu_thread"): "one intra-op thread on the CPU",
    ("search/training/timing.py", "synchronize"): "the bench waits for queued kernels",
    ("search/training/timing.py", "<module>"): "the bench's matmul size per device",
    ("search/training/timing.py", "gemm_flops"): "the bench's matmul size per device",
    ("search/bench.py", "benchmark"): "the bench's K list and the device's name",
}

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def device_questions(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every place in ``path`` that asks for the device kind:
    a ``.type`` or ``.cuda`` attribute, a ``torch.cuda`` call or a "cuda" string."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        asks = (isinstance(node, ast.Attribute) and node.attr in ("type", "cuda", "is_cuda")) or (
            isinstance(node, ast.Constant) and node.value == "cuda"
        )
        if asks:
            found.append((function, node.lineno))  # type: ignore[attr-defined]
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def test_only_listed_lines_ask_for_the_device() -> None:
    sources = [*sorted((ROOT / "search").rglob("*.py")), *sorted((ROOT / "models").rglob("*.py"))]
    asked: dict[tuple[str, str], list[int]] = {}
    for path in sources:
        for function, line in device_questions(path):
            if path.name == "config.py" and function == "<module>":
                continue  # the --device choices
            asked.setdefault((str(path.relative_to(ROOT)), function), []).append(line)
    unlisted = {place: lines for place, lines in asked.items() if place not in DEVICE_BRANCHES}
    assert unlisted == {}, f"device-dependent code outside the listed places: {unlisted}"
    # The list holds nothing stale: each place still asks.
    assert set(asked) == set(DEVICE_BRANCHES)
    # And nothing that trains or evaluates is among them.
    arithmetic = {"pool.py": ("TrialPool",), "train.py": ("train", "evaluate", "make_optimizer")}
    for file, function in DEVICE_BRANCHES:
        assert function not in arithmetic.get(Path(file).name, ())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", ["mnist", "synthetic"])
def test_pool_trains_every_recipe_on_each_device(
    tiny_splits: Splits, device: str, task: str
) -> None:
    """On each device the pool holds its tensors there and trains every optimizer; on a GPU
    as on the CPU a pooled trial matches the single-trial loop on that device."""
    source = tiny_splits if task == "mnist" else load_synthetic()
    data = Splits(
        *(t.to(device) for t in (source.train_x, source.train_y, source.val_x, source.val_y)),
        source.validation,
        source.checksums,
    )
    config = StudyConfig(epochs=1, task=task)  # type: ignore[arg-type]
    pool = TrialPool(data, config, capacity=4)
    recipes = [("adam", True), ("adamw", False), ("sgd", True)]
    for key, (optimizer, decay_biases) in enumerate(recipes):
        pool.add(key, trial_seed(0, key), config.recipe(1e-2, optimizer, decay_biases))
    assert {t.device.type for t in (*pool.params, *pool.exp_avgs, pool.steps)} == {device}
    results = pool.train_epoch()
    for key, (optimizer, decay_biases) in enumerate(recipes):
        model = init_model(trial_seed(0, key), device, task)
        recipe = config.recipe(1e-2, optimizer, decay_biases)
        (alone,) = train(model, data, recipe, config, trial_seed(0, key))
        assert results[key].val_loss == pytest.approx(alone.val_loss, rel=1e-4)  # type: ignore[union-attr]
