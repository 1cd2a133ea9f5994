"""Weight decay as PyTorch applies it: Adam's L2 term, AdamW's decoupled decay, biases left out.

Each test takes one real optimizer step on a small model and checks the parameters against
the arithmetic the option promises.
"""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search import run
from search.config import StudyConfig
from search.data.synthetic import load_synthetic
from search.engine.drive import run_trials
from search.engine.objective import Objective
from search.engine.strategy import new_study
from search.recipe import Recipe
from search.study.storage import make_storage
from search.training.train import SGD_MOMENTUM, init_model, make_optimizer, parameter_groups, train
from tests.helpers import run_cli

LR = 1e-3


def small_model() -> nn.Module:
    """Linear, LayerNorm, ReLU, Linear: weights, biases and a normalisation layer's params."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=generator), torch.randint(0, 2, (16,), generator=generator)


def step(
    model: nn.Module,
    optimizer: str,
    weight_decay: float,
    decay_biases: bool = True,
    loss_scale: float = 1.0,
    l2: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One optimizer step on ``batch()``; returns the parameters after it, by name.

    ``loss_scale=0`` leaves the decay as the only force on the parameters; ``l2`` adds
    ``l2 / 2 * sum(p ** 2)`` to the loss by hand.
    """
    opt = make_optimizer(model, Recipe(weight_decay, LR, optimizer, decay_biases))
    x, y = batch()
    loss = F.cross_entropy(model(x), y) * loss_scale
    loss = loss + l2 / 2 * sum((p**2).sum() for p in model.parameters())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_parameter_groups_decay_everything_by_default() -> None:
    model = small_model()
    (group,) = parameter_groups(model, 0.1)
    assert group["weight_decay"] == 0.1
    assert len(group["params"]) == len(list(model.parameters())) == 6


def test_parameter_groups_exclude_biases_and_norm_params() -> None:
    model = small_model()
    decay, no_decay = parameter_groups(model, 0.1, decay_biases=False)
    names = {id(p): name for name, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [names[id(p)] for p in decay["params"]] == ["0.weight", "3.weight"]
    # 1.weight and 1.bias are the LayerNorm's scale and shift.
    assert [names[id(p)] for p in no_decay["params"]] == ["0.bias", "1.weight", "1.bias", "3.bias"]


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_no_decay_biases_leaves_biases_unchanged_while_weights_shrink(optimizer: str) -> None:
    model = small_model()
    before = params(model)
    # A zero loss: the decay term is the only thing that moves a parameter.
    after = step(model, optimizer, weight_decay=1.0, decay_biases=False, loss_scale=0.0)
    for name in ("0.bias", "1.weight", "1.bias", "3.bias"):
        assert torch.equal(after[name], before[name]), name
    for name in ("0.weight", "3.weight"):
        assert after[name].norm() < before[name].norm(), name


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_decay_biases_shrinks_biases_too(optimizer: str) -> None:
    model = small_model()
    before = params(model)
    after = step(model, optimizer, weight_decay=1.0, decay_biases=True, loss_scale=0.0)
    # 1.bias starts at zero, where decay has nothing to shrink.
    for name in ("0.weight", "0.bias", "1.weight", "3.weight", "3.bias"):
        assert after[name].norm() < before[name].norm(), name


def test_adam_weight_decay_is_an_l2_term_added_to_the_gradient() -> None:
    model = small_model()
    with_decay = step(copy.deepcopy(model), "adam", weight_decay=0.1)
    by_hand = step(copy.deepcopy(model), "adam", weight_decay=0.0, l2=0.1)
    for name, value in with_decay.items():
        torch.testing.assert_close(value, by_hand[name])


def test_adamw_decay_is_decoupled_and_differs_from_adam() -> None:
    model = small_model()
    before = params(model)
    adamw = step(copy.deepcopy(model), "adamw", weight_decay=0.1)
    adam_plain = step(copy.deepcopy(model), "adam", weight_decay=0.0)
    adam_l2 = step(copy.deepcopy(model), "adam", weight_decay=0.1)
    for name, value in adamw.items():
        # AdamW: param -= lr * wd * param, beside the step Adam takes without decay.
        torch.testing.assert_close(value, adam_plain[name] - LR * 0.1 * before[name])
    # Adam's L2 term goes through the moments instead, so the same decay moves params otherwise.
    assert max((adamw[n] - adam_l2[n]).abs().max().item() for n in adamw) > LR / 10


def test_make_optimizer_builds_sgd_with_momentum() -> None:
    optimizer = make_optimizer(small_model(), Recipe(0.01, LR, "sgd"))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == SGD_MOMENTUM
    assert optimizer.param_groups[0]["lr"] == LR


def test_a_recipe_rejects_an_unknown_optimizer_name() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'; one of adam, adamw, sgd"):
        Recipe(0.01, LR, "lamb")  # type: ignore[arg-type]


def synthetic_study(config: StudyConfig, params: list[dict]) -> optuna.Study:
    study = new_study(make_storage(config.storage_url), config, {})
    for trial_params in params:
        study.enqueue_trial(trial_params)
    run_trials(study, Objective(config, load_synthetic()), config.replace(trials=len(params)))
    return study


def final_val_accuracy(
    config: StudyConfig, seed: int, optimizer: str | None = None, decay_biases: bool | None = None
) -> float:
    """Train a trial's model by hand at weight decay 1e-2; its last validation accuracy."""
    model = init_model(seed, "cpu", "synthetic")
    epochs = train(
        model, load_synthetic(), config.recipe(1e-2, optimizer, decay_biases), config, seed
    )
    return list(epochs)[-1].val_accuracy


def synthetic_config(tmp_path: Path, **changes: object) -> StudyConfig:
    return StudyConfig(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        task="synthetic",
        epochs=3,
        max_train_acc=1.0,
        device="cpu",
    ).replace(**changes)


def test_objective_full_search_space_chooses_optimizer_and_bias_decay(tmp_path: Path) -> None:
    config = synthetic_config(tmp_path, search_space="full")
    choice = {"weight_decay": 1e-2, "optimizer": "sgd", "decay_biases": False}
    (trial,) = synthetic_study(config, [choice]).trials
    assert trial.params == choice
    # The trial trained with its own choice, not the config's adam with decayed biases.
    seed = trial.user_attrs["seed"]
    assert trial.value == final_val_accuracy(config, seed, optimizer="sgd", decay_biases=False)
    assert trial.value != final_val_accuracy(config, seed)


def test_objective_weight_decay_search_space_trains_with_the_config_optimizer(
    tmp_path: Path,
) -> None:
    config = synthetic_config(tmp_path, optimizer="adamw", decay_biases=False)
    (trial,) = synthetic_study(config, [{"weight_decay": 1e-2}]).trials
    assert trial.params == {"weight_decay": 1e-2}
    assert trial.value == final_val_accuracy(config, trial.user_attrs["seed"])


def test_run_records_optimizer_and_bias_decay_and_refuses_other_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["--task", "synthetic", "--storage", storage, "--epochs", "1", "--device", "cpu"]
    status, out, _ = run_cli(
        run.main, [*argv, "--trials", "1", "--optimizer", "adamw", "--no-decay-biases"], capsys
    )
    assert status == 0 and "1 of 1 trials finished" in out
    recorded = optuna.load_study(study_name=StudyConfig.study_name, storage=storage).user_attrs
    assert recorded["config"]["optimizer"] == "adamw"
    assert recorded["config"]["decay_biases"] is False
    assert recorded["config"]["search_space"] == "weight_decay"

    status, _, err = run_cli(
        run.main, [*argv, "--trials", "2", "--optimizer", "adamw", "--decay-biases"], capsys
    )
    assert status == 2
    assert "was created with --decay-biases False (got True)" in err
