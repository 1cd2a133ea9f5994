"""A trial's recipe: its optimizer, its weight decay, which parameters decay, its learning rate.

What one trial trains with, as one value: the search suggests it (``search.engine.objective
.begin_trial``), and the single-trial path (``search.training.train``), the trial pool
(``search.training.pool``) and the seed confirmation take it as it is. Each optimizer has one
entry in ``REGISTRY``, which says how its weight decay enters its step; adding an optimizer is
an entry here, its builder in ``search.training.train.make_optimizer`` and its pooled step in
``search.training.pool`` (the registry's ``step`` says which fused kernel it shares).

Torch-free and below every room: the config, the flags' choices and the reading commands use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

OptimizerName = Literal["adam", "adamw", "sgd"]
StepName = Literal["adam", "sgd"]


@dataclass(frozen=True)
class Optimizer:
    """One optimizer the service trains with: how its weight decay enters, and its step."""

    name: OptimizerName
    # The decay is decoupled (AdamW: ``param *= 1 - lr * decay`` beside the step) rather than
    # the L2 term ``decay * param`` added to the gradient (Adam, SGD).
    decoupled: bool
    step: StepName  # whose update it is: Adam's moments, or SGD with momentum
    description: str  # for a person: what its weight decay is


REGISTRY: dict[str, Optimizer] = {
    o.name: o
    for o in (
        Optimizer("adam", False, "adam", "Adam, decay as an L2 term in the gradient (the seed's)"),
        Optimizer("adamw", True, "adam", "AdamW, decay decoupled from the gradient"),
        Optimizer("sgd", False, "sgd", "SGD with momentum, decay as an L2 term in the gradient"),
    )
}
OPTIMIZERS: tuple[str, ...] = tuple(REGISTRY)


@dataclass(frozen=True)
class Recipe:
    """What one trial trains with, beside its seed."""

    weight_decay: float
    lr: float
    optimizer: OptimizerName = "adam"
    # False: parameters of at most one dimension (biases, norm scales) don't decay.
    decay_biases: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in REGISTRY:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; one of {', '.join(OPTIMIZERS)}"
            )

    @property
    def entry(self) -> Optimizer:
        return REGISTRY[self.optimizer]

    @property
    def bias_decay(self) -> float:
        """The weight decay of the biases: the trial's, or 0 where they don't decay."""
        return self.weight_decay if self.decay_biases else 0.0

    def replace(self, **changes: object) -> Recipe:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
