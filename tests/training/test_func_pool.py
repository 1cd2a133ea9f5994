"""The generic pool: any network side by side, each trial's numbers its own, and on the
seed's kind of network the same trial as the hand-written pool trains.

On the synthetic table and a user's GELU MLP: no MNIST, no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from search.config import StudyConfig
from search.data.synthetic import load_synthetic
from search.data.tasks import load_task
from search.recipe import Recipe
from search.training.func_pool import FuncPool
from search.training.pool import TrialPool
from search.training.pools import make_pool, uses_fast_path
from search.training.runs import Result
from search.training.train import EpochMetrics, evaluate, init_model, train

GELU_TASK = """
import torch
from torch import nn
from search import Task

gen = torch.Generator().manual_seed(0)
x = torch.randn(600, 20, generator=gen)
y = torch.cdist(x, torch.randn(3, 20, generator=gen)).argmin(dim=1)

def mlp():
    return nn.Sequential(nn.Linear(20, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(),
                         nn.Linear(64, 3))

task = Task(model=mlp, train=(x[:500], y[:500]), val=(x[500:], y[500:]))
"""

RECIPES = [
    ("adam", True),
    ("adam", False),
    ("adamw", True),
    ("adamw", False),
    ("sgd", True),
    ("sgd", False),
]


@pytest.fixture
def gelu_config(tmp_path: Path) -> StudyConfig:
    path = tmp_path / "gelu_task.py"
    path.write_text(GELU_TASK)
    return StudyConfig(task=f"{path}:task", epochs=2, batch_size=32)


def history(pool: Any, key: int, epochs: int) -> list[dict[str, Any]]:
    """A member's metrics over ``epochs`` passes, wall seconds left out."""
    got: list[dict[str, Any]] = []
    for _ in range(epochs):
        result: Result = pool.train_epoch()[key]
        assert isinstance(result, EpochMetrics)
        got.append(result.as_dict() | {"seconds": 0.0})
    return got


def test_a_users_network_goes_generic_and_the_seeds_stays_fast(gelu_config) -> None:
    assert uses_fast_path("mnist") and uses_fast_path("synthetic")
    assert not uses_fast_path(gelu_config.task)
    data = load_task(gelu_config)
    assert isinstance(make_pool(data, gelu_config, 2), FuncPool)
    assert isinstance(make_pool(load_synthetic(), StudyConfig(task="synthetic"), 2), TrialPool)


@pytest.mark.parametrize(("optimizer", "decay_biases"), RECIPES)
def test_the_generic_pool_trains_the_table_as_the_hand_written_pool(
    optimizer: str, decay_biases: bool
) -> None:
    config = StudyConfig(task="synthetic", epochs=3)
    data = load_synthetic()
    recipe = Recipe(3e-2, config.lr, optimizer, decay_biases)  # type: ignore[arg-type]
    got: dict[str, tuple[list[dict[str, Any]], dict[str, torch.Tensor]]] = {}
    for generic in (False, True):
        pool = make_pool(data, config, 4, generic=generic)
        pool.add(1, 11, recipe.replace(weight_decay=1e-3))
        pool.add(0, 7, recipe)
        got[str(generic)] = (history(pool, 0, 3), pool.state_dict(0))
    (fast, fast_weights), (func, func_weights) = got["False"], got["True"]
    for want, have in zip(fast, func, strict=True):
        assert have["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert have["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
        for key in ("train_accuracy", "val_accuracy", "train_accuracy_final"):
            assert have[key] == pytest.approx(want[key], abs=1 / 200 + 1e-9)
    assert fast_weights.keys() == func_weights.keys()
    for name, weight in fast_weights.items():
        torch.testing.assert_close(func_weights[name], weight, atol=1e-5, rtol=1e-4)
    assert func[-1]["val_accuracy"] > 0.6  # it learns the table, not just agrees


def test_a_generic_trial_is_its_own_whatever_its_companions(gelu_config) -> None:
    """Bit for bit, in the same slot: alone, beside others, with others joining and leaving."""
    data = load_task(gelu_config)
    recipe = gelu_config.recipe(1e-3)

    alone = FuncPool(data, gelu_config, 4)
    alone.add(0, 5, recipe, slot=2)
    want = history(alone, 0, 3)

    busy = FuncPool(data, gelu_config, 4)
    busy.add(10, 1, recipe.replace(weight_decay=0.1, optimizer="sgd"))
    busy.add(0, 5, recipe, slot=2)
    busy.add(11, 2, recipe.replace(optimizer="adamw", decay_biases=False))
    got = history(busy, 0, 1)
    busy.remove(10)
    busy.add(12, 3, recipe.replace(weight_decay=1e-6))
    got += history(busy, 0, 2)
    assert got == want
    for name, weight in alone.state_dict(0).items():
        assert torch.equal(busy.state_dict(0)[name], weight), name


def test_a_generic_trial_matches_the_single_trial_loop(gelu_config) -> None:
    data = load_task(gelu_config)
    recipe = gelu_config.recipe(1e-2, optimizer="adamw")
    pool = FuncPool(data, gelu_config, 3)
    pool.add(0, 5, recipe)
    pooled = history(pool, 0, 2)
    model = init_model(5, "cpu", gelu_config.task)
    single = [m.as_dict() for m in train(model, data, recipe, gelu_config, 5)]
    for want, have in zip(single, pooled, strict=True):
        assert have["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert have["val_accuracy"] == pytest.approx(want["val_accuracy"], abs=1 / 100 + 1e-9)
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(pool.state_dict(0)[name], weight, atol=1e-5, rtol=1e-4)


def test_a_generic_members_weights_load_into_its_model_and_score_the_same(gelu_config) -> None:
    data = load_task(gelu_config)
    pool = FuncPool(data, gelu_config, 2)
    pool.add(0, 5, gelu_config.recipe(1e-4))
    metrics = history(pool, 0, 2)[-1]
    model = init_model(0, "cpu", gelu_config.task)
    model.load_state_dict(pool.state_dict(0))
    val_loss, val_accuracy = evaluate(model, data.val_x, data.val_y)
    assert val_accuracy == metrics["val_accuracy"]
    assert val_loss == pytest.approx(metrics["val_loss"], rel=1e-5)


def test_the_generic_pool_refuses_a_taken_slot_and_another_lr(gelu_config) -> None:
    pool = FuncPool(load_task(gelu_config), gelu_config, 2)
    pool.add(0, 5, gelu_config.recipe(1e-4), slot=1)
    with pytest.raises(ValueError, match="slot 1 is taken"):
        pool.add(1, 6, gelu_config.recipe(1e-4), slot=1)
    with pytest.raises(ValueError, match="not the recipe's 0.1"):
        pool.add(1, 6, gelu_config.recipe(1e-4).replace(lr=0.1))
