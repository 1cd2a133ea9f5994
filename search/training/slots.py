"""What both trial pools share: the slots, each slot's decay and fused optimizer step, and
the epoch that trains every member; pure torch, no Optuna.

A pool stacks K trials' parameters along a leading slot dimension. How a slot's forward and
backward are computed is the pool's own (``search.training.pool.TrialPool`` writes out
Linear-ReLU-Linear, ``search.training.func_pool.FuncPool`` runs any network through
``torch.func``); everything around that step is here, once: who sits in which slot, the
recipe's decay per slot, the optimizer kernels, the epoch's batch orders and its metrics.

A member's numbers must not depend on its companions, so (``TrialPool``'s docstring has why):
every kernel runs on all ``capacity`` slots with the same shapes whether a slot is occupied or
not, members never move between slots, the decays are per-slot multiplies that are exactly 1
or 0 where a slot has none, and the fused optimizers take each occupied slot's tensors as
list entries of their own, so no slot's elements share a vector with another's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from search.config import StudyConfig
from search.data.splits import Splits
from search.recipe import Recipe
from search.training.seeds import batch_order
from search.training.train import (
    EVAL_CHUNK,
    SGD_MOMENTUM,
    DivergedError,
    EpochMetrics,
    init_model,
)

# Validation is scored for all slots at once, one (rows, K*128) hidden activation per chunk;
# this bounds that activation to what EVAL_CHUNK rows of 8 slots would take (40 MB).
EVAL_BUDGET = EVAL_CHUNK * 8

# Adam's constants, as torch.optim.Adam has them and the seed uses them.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@dataclass
class Member:
    """One trial in a slot of the pool: what its batches and its optimizer depend on."""

    key: int  # the caller's name for it, e.g. the trial number
    seed: int  # trial seed: initial weights and batch orders
    recipe: Recipe
    slot: int  # its index along the stacked dimension, fixed while it is in the pool
    epoch: int = 0  # epochs finished so far


def per_slot(tensors: list[torch.Tensor], slots: list[int]) -> list[torch.Tensor]:
    """Each slot's tensors in turn, as the fused optimizers take them: slot by slot, so no
    slot's elements share a vector with another's."""
    return [t[slot] for slot in slots for t in tensors]


class SlotPool:
    """Up to ``capacity`` trials of the task's network, trained side by side one epoch at a time.

    A pool sets ``params``, ``exp_avgs`` (Adam's first moments, SGD's momentum),
    ``exp_avg_sqs`` and ``is_bias`` (per parameter: decayed as a bias) before ``_bind()``, and
    writes ``_load`` (a trial's initial weights into a slot, its optimizer state zeroed),
    ``_empty`` (a slot left), ``state_dict``, ``_step`` (forward and backward) and
    ``evaluate``.

    Members are added and removed only between epochs, and all of them take the same number of
    steps per epoch (the training set is shared), so every member is always at the start of one
    of its own epochs when the pool is between epochs.
    """

    params: list[torch.Tensor]
    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    is_bias: list[bool]

    def __init__(self, data: Splits, config: StudyConfig, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a pool needs at least one slot, got {capacity}")
        self.data = data
        self.config = config
        self.capacity = capacity
        self.device = data.train_x.device
        self.slots: list[Member | None] = [None] * capacity
        # Float32 step counts on the device, as the fused Adam kernel reads them.
        self.steps = torch.zeros(capacity, device=self.device)
        # Per slot, for its weights (matrices) and for its biases: the L2 decay added to the
        # gradient (Adam, SGD; 0 for AdamW), and AdamW's shrink factor (1 for the others).
        self.l2_weights = torch.zeros(capacity, device=self.device)
        self.l2_biases = torch.zeros(capacity, device=self.device)
        self.shrink_weights = torch.ones(capacity, device=self.device)
        self.shrink_biases = torch.ones(capacity, device=self.device)

    @property
    def members(self) -> list[Member]:
        """The members in slot order."""
        return [m for m in self.slots if m is not None]

    def __len__(self) -> int:
        return len(self.members)

    def keys(self) -> list[int]:
        """The members' keys in slot order."""
        return [m.key for m in self.members]

    def slot(self, key: int) -> int:
        """The slot a member sits in."""
        for member in self.members:
            if member.key == key:
                return member.slot
        raise KeyError(f"key {key} is not in the pool")

    def add(self, key: int, seed: int, recipe: Recipe, slot: int | None = None) -> None:
        """Put a new trial in ``slot`` (default: the first free one): ``init_model(seed)``'s
        weights, fresh optimizer state, its own ``recipe`` (as ``train.train`` takes it).

        The pool's learning rate is the config's, one for every slot: a recipe of another is
        refused rather than trained at the wrong rate. A replay names the slot its trial had,
        where ``FuncPool`` may round differently (its module docstring).
        """
        if key in self.keys():
            raise ValueError(f"key {key} is already in the pool")
        if None not in self.slots:
            raise ValueError(f"the pool is full ({self.capacity} slots); remove a member first")
        if recipe.lr != self.config.lr:
            raise ValueError(
                f"the pool trains at lr {self.config.lr}, not the recipe's {recipe.lr}"
            )
        slot = self.slots.index(None) if slot is None else slot
        if self.slots[slot] is not None:
            raise ValueError(f"slot {slot} is taken")
        self._load(slot, init_model(seed, self.device, self.config.task).state_dict())
        self._reset(slot)
        if recipe.entry.decoupled:
            self.shrink_weights[slot] = 1.0 - recipe.lr * recipe.weight_decay
            self.shrink_biases[slot] = 1.0 - recipe.lr * recipe.bias_decay
        else:
            self.l2_weights[slot] = recipe.weight_decay
            self.l2_biases[slot] = recipe.bias_decay
        self.slots[slot] = Member(key, seed, recipe, slot)
        self._bind()

    def remove(self, key: int) -> None:
        """Take a trial out; its slot is emptied, and nobody else moves."""
        slot = self.slot(key)
        self._empty(slot)
        self._reset(slot)
        self.slots[slot] = None
        self._bind()

    def _reset(self, slot: int) -> None:
        self.steps[slot] = 0.0
        self.l2_weights[slot] = self.l2_biases[slot] = 0.0
        self.shrink_weights[slot] = self.shrink_biases[slot] = 1.0

    def _load(self, slot: int, weights: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def _empty(self, slot: int) -> None:
        raise NotImplementedError

    def state_dict(self, key: int) -> dict[str, torch.Tensor]:
        """A member's weights as the task's model names them: they load into ``init_model()``."""
        raise NotImplementedError

    def _step(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every occupied slot on its batch ``index`` (K, B); every
        slot's mean loss (K,) and correct count (K,), both scored by the weights before the
        step."""
        raise NotImplementedError

    def evaluate(
        self, x_all: torch.Tensor | None = None, y_all: torch.Tensor | None = None
    ) -> tuple[list[float], list[float]]:
        """Mean loss and accuracy of every slot (K,) on ``(x_all, y_all)``, by default the
        validation split, in chunks set by the capacity (not by the occupied slots)."""
        raise NotImplementedError

    def _bind(self) -> None:
        """The per-slot lists the optimizers read, rebuilt only when membership changes."""
        members = self.members
        self._adam_slots = [m.slot for m in members if m.recipe.entry.step == "adam"]
        self._sgd_slots = [m.slot for m in members if m.recipe.entry.step == "sgd"]
        self._adam_steps = [self.steps[s] for s in self._adam_slots for _ in self.params]
        self._occupied = torch.zeros(self.capacity, device=self.device)  # 1.0 where occupied
        self._occupied[[m.slot for m in members]] = 1.0
        # Skipped where no slot has any: adding 0 * param, or multiplying by 1, changes
        # nothing, so a slot's numbers don't depend on whether its companions decay.
        self._any_l2 = any(not m.recipe.entry.decoupled for m in members)
        self._any_shrink = any(m.recipe.entry.decoupled for m in members)

        def per_param(weights: torch.Tensor, biases: torch.Tensor) -> list[torch.Tensor]:
            return [
                (biases if bias else weights).view(self.capacity, *[1] * (p.ndim - 1))
                for p, bias in zip(self.params, self.is_bias, strict=True)
            ]

        self._l2 = per_param(self.l2_weights, self.l2_biases)
        self._shrinks = per_param(self.shrink_weights, self.shrink_biases)

    def optimizer_lists(
        self, grads: list[torch.Tensor]
    ) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        """The fused kernels' arguments: (params, grads, moments, second moments) of the Adam
        slots (Adam and AdamW), and (params, grads, momentum) of the SGD slots."""
        adam = [
            per_slot(tensors, self._adam_slots)
            for tensors in (self.params, grads, self.exp_avgs, self.exp_avg_sqs)
        ]
        sgd = [
            per_slot(tensors, self._sgd_slots) for tensors in (self.params, grads, self.exp_avgs)
        ]
        return adam, sgd

    @torch.no_grad()
    def _decay_and_update(
        self,
        grads: list[torch.Tensor],
        adam: list[list[torch.Tensor]],
        sgd: list[list[torch.Tensor]],
    ) -> None:
        """Each slot's recipe after its backward, as ``make_optimizer`` builds it.

        torch.optim.Adam and SGD's L2 term joins the gradient, AdamW's decoupled decay shrinks
        the weights before its Adam step (what the fused AdamW kernel does, bit for bit); the
        fused kernels get no decay of their own. Both decays are a multiply(-add) per element,
        row by row of each slot (the decay broadcasts along a slot's elements). ``adam`` and
        ``sgd`` are ``optimizer_lists(grads)``.
        """
        if self._any_l2:
            torch._foreach_addcmul_(grads, self.params, self._l2)
        if self._any_shrink:
            torch._foreach_mul_(self.params, self._shrinks)
        self.steps += self._occupied
        if self._adam_slots:
            params, slot_grads, exp_avgs, exp_avg_sqs = adam
            torch._fused_adam_(
                params,
                slot_grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                self._adam_steps,
                lr=self.config.lr,
                beta1=BETA1,
                beta2=BETA2,
                weight_decay=0.0,
                eps=EPS,
                amsgrad=False,
                maximize=False,
            )
        if self._sgd_slots:
            # A zero momentum buffer makes the first step's ``buf = grad`` of its own
            # (0.9 * 0 + grad), so slots that join later need no first-step flag.
            params, slot_grads, buffers = sgd
            torch._fused_sgd_(
                params,
                slot_grads,
                buffers,
                weight_decay=0.0,
                momentum=SGD_MOMENTUM,
                lr=self.config.lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=False,
            )

    def train_epoch(
        self, on_step: Callable[[], None] | None = None
    ) -> dict[int, EpochMetrics | DivergedError]:
        """One epoch for every member, each its own next epoch; metrics by member key.

        The metrics mean what ``search.training.train.train``'s do: running training loss and
        accuracy over the epoch, validation loss and accuracy at its end, the final weights'
        accuracy on the training split, and the epoch's wall seconds (shared by all members,
        who trained in the same seconds). A member whose training loss is not finite gets a
        ``DivergedError`` instead; the others are unaffected.

        Args:
            on_step: called after every optimizer step, e.g. to keep heartbeats going.
        """
        members = self.members
        if not members:
            raise ValueError("the pool is empty: add a member before training an epoch")
        started = time.perf_counter()
        n = len(self.data.train_x)
        batch_size = self.config.batch_size
        for member in members:
            member.epoch += 1
        # Slot k's shuffle of its own epoch: (capacity, n), the same order train() draws; an
        # empty slot reads the samples in order, and what it learns is never used.
        orders = torch.arange(n).expand(self.capacity, n).clone()
        for member in members:
            orders[member.slot] = batch_order(n, member.seed, member.epoch)
        orders = orders.to(self.device)
        loss_sum = torch.zeros(self.capacity, device=self.device)
        correct = torch.zeros(self.capacity, dtype=torch.long, device=self.device)
        for start in range(0, n, batch_size):
            index = orders[:, start : start + batch_size]  # (K, B); B is short at the end
            loss, hits = self._step(index)
            loss_sum += loss * index.shape[1]
            correct += hits
            if on_step is not None:
                on_step()
        # In float64 from here, as train() divides the sums' Python floats.
        train_loss = (loss_sum.double() / n).tolist()
        train_accuracy = (correct.double() / n).tolist()
        val_loss, val_accuracy = self.evaluate()
        _, final_accuracy = self.evaluate(self.data.train_x, self.data.train_y)
        seconds = time.perf_counter() - started
        results: dict[int, EpochMetrics | DivergedError] = {}
        for member in members:
            slot = member.slot
            if not math.isfinite(train_loss[slot]):
                results[member.key] = DivergedError(
                    f"training loss is {train_loss[slot]} in epoch {member.epoch}"
                )
                continue
            results[member.key] = EpochMetrics(
                epoch=member.epoch,
                train_loss=train_loss[slot],
                train_accuracy=train_accuracy[slot],
                val_loss=val_loss[slot],
                val_accuracy=val_accuracy[slot],
                seconds=seconds,
                train_accuracy_final=final_accuracy[slot],
            )
        return results
