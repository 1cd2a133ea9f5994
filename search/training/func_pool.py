"""The generic trial pool: K trials of any network side by side through ``torch.func``.

``search.training.pool.TrialPool`` writes out one network, Linear-ReLU-Linear, by hand; this
pool trains whatever a ``search.Task``'s model is. Each parameter of the model is stacked
along a leading slot dimension (``torch.func.stack_module_state``'s layout) and one
``vmap(functional_call(model, ...))`` computes every slot's batch in one call, autograd
giving each slot the gradient of its own loss (the slots share no weights, so the gradient of
the summed losses is each slot's own). The optimizers are the hand-written pool's: per-slot
decay, the fused Adam and SGD kernels over each occupied slot's tensors as list entries, so
Adam with L2, AdamW and SGD, with biases decayed or not, train side by side in one pool.

A trial's numbers are a function of its seed, recipe, the capacity and its slot, bit for bit:
not of what its companions hold or who comes and goes. The slot is named because an
elementwise kernel over the stacked activations may round the slot that lands in its scalar
tail differently; the drivers record each trial's slot (``record_parallel_trials``) and a
replay puts the trial back in it (``tests/training/test_func_pool.py`` checks both).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch.func import functional_call, vmap

from search.config import StudyConfig
from search.data.splits import Splits
from search.recipe import Recipe
from search.training.pool import BETA1, BETA2, EPS, EVAL_BUDGET, Member
from search.training.seeds import batch_order
from search.training.train import (
    EVAL_CHUNK,
    SGD_MOMENTUM,
    DivergedError,
    EpochMetrics,
    init_model,
    task_loss,
)


class FuncPool:
    """Up to ``capacity`` trials of the task's network, one epoch at a time, any architecture.

    Empty slots hold the seed-0 initial weights (finite numbers for any network the task
    builds) and train nothing: the optimizers only see occupied slots, and an empty slot's
    results are dropped. Every kernel runs on all ``capacity`` slots with the same shapes
    whatever is occupied, so the roundings a member sees never change with its companions.
    """

    def __init__(self, data: Splits, config: StudyConfig, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a pool needs at least one slot, got {capacity}")
        self.data = data
        self.config = config
        self.capacity = capacity
        self.device = data.train_x.device
        self.slots: list[Member | None] = [None] * capacity
        template = init_model(0, self.device, config.task)
        self.template = {k: v.detach().clone() for k, v in template.state_dict().items()}
        self.names = [name for name, _ in template.named_parameters()]
        self.buffer_names = [name for name, _ in template.named_buffers()]
        # Decayed as weights (matrices, kernels) or as biases: parameter_groups' rule.
        self.is_bias = [p.ndim <= 1 for _, p in template.named_parameters()]
        self.model = template.to("meta")  # the structure only; weights come per call

        def stacked(name: str) -> torch.Tensor:
            value = self.template[name]
            return value.expand(capacity, *value.shape).clone()

        self.params = [stacked(n).requires_grad_(True) for n in self.names]
        self.buffers = {n: stacked(n) for n in self.buffer_names}
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]  # Adam's, SGD's momentum
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(capacity, device=self.device)
        self.l2_weights = torch.zeros(capacity, device=self.device)
        self.l2_biases = torch.zeros(capacity, device=self.device)
        self.shrink_weights = torch.ones(capacity, device=self.device)
        self.shrink_biases = torch.ones(capacity, device=self.device)

        def forward(
            params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
        ) -> torch.Tensor:
            out: torch.Tensor = functional_call(self.model, (params, buffers), (x,))
            return out

        self._train_forward = vmap(forward, in_dims=(0, 0, 0))  # each slot its own batch
        self._eval_forward = vmap(forward, in_dims=(0, 0, None))  # every slot the same rows
        own = task_loss(config.task)
        self._loss = None if own is None else vmap(own)  # (K, B, C), (K, B) -> (K,)
        self._bind()

    @property
    def members(self) -> list[Member]:
        return [m for m in self.slots if m is not None]

    def __len__(self) -> int:
        return len(self.members)

    def slot(self, key: int) -> int:
        for member in self.members:
            if member.key == key:
                return member.slot
        raise KeyError(f"key {key} is not in the pool")

    def add(self, key: int, seed: int, recipe: Recipe, slot: int | None = None) -> None:
        """Put a trial in ``slot`` (default: the first free one) with ``init_model(seed)``'s
        weights and fresh optimizer state; the recipe's lr must be the pool's."""
        if key in [m.key for m in self.members]:
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
        weights = init_model(seed, self.device, self.config.task).state_dict()
        self._load(slot, weights)
        if recipe.entry.decoupled:
            self.shrink_weights[slot] = 1.0 - recipe.lr * recipe.weight_decay
            self.shrink_biases[slot] = 1.0 - recipe.lr * recipe.bias_decay
        else:
            self.l2_weights[slot] = recipe.weight_decay
            self.l2_biases[slot] = recipe.bias_decay
        self.slots[slot] = Member(key, seed, recipe, slot)
        self._bind()

    def remove(self, key: int) -> None:
        """Take a trial out; its slot goes back to the template's weights, nobody moves."""
        slot = self.slot(key)
        self._load(slot, self.template)
        self.slots[slot] = None
        self._bind()

    def _load(self, slot: int, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param, m, v in zip(
                self.names, self.params, self.exp_avgs, self.exp_avg_sqs, strict=True
            ):
                param[slot].copy_(weights[name])
                m[slot].zero_()
                v[slot].zero_()
            for name, buffer in self.buffers.items():
                buffer[slot].copy_(weights[name])
        self.steps[slot] = 0.0
        self.l2_weights[slot] = self.l2_biases[slot] = 0.0
        self.shrink_weights[slot] = self.shrink_biases[slot] = 1.0

    def state_dict(self, key: int) -> dict[str, torch.Tensor]:
        """A member's weights as the task's model names them: they load into ``init_model()``."""
        slot = self.slot(key)
        named = zip(self.names, self.params, strict=True)
        weights = {n: p[slot].detach().clone() for n, p in named}
        weights |= {n: b[slot].clone() for n, b in self.buffers.items()}
        return {name: weights[name] for name in self.template}  # the module's own order

    def _bind(self) -> None:
        """The optimizers' per-slot lists, rebuilt only when membership changes."""
        members = self.members
        self._adam_slots = [m.slot for m in members if m.recipe.entry.step == "adam"]
        self._sgd_slots = [m.slot for m in members if m.recipe.entry.step == "sgd"]
        self._adam_steps = [self.steps[s] for s in self._adam_slots for _ in self.params]
        self._occupied = torch.zeros(self.capacity, device=self.device)
        self._occupied[[m.slot for m in members]] = 1.0
        self._any_l2 = any(not m.recipe.entry.decoupled for m in members)
        self._any_shrink = any(m.recipe.entry.decoupled for m in members)

        def per_param(weights: torch.Tensor, biases: torch.Tensor) -> list[torch.Tensor]:
            return [
                (biases if bias else weights).view(self.capacity, *[1] * (p.ndim - 1))
                for p, bias in zip(self.params, self.is_bias, strict=True)
            ]

        self._l2 = per_param(self.l2_weights, self.l2_biases)
        self._shrinks = per_param(self.shrink_weights, self.shrink_biases)

    def train_epoch(
        self, on_step: Callable[[], None] | None = None
    ) -> dict[int, EpochMetrics | DivergedError]:
        """One epoch for every member, each its own next epoch: ``TrialPool.train_epoch``'s
        metrics, for any network."""
        members = self.members
        if not members:
            raise ValueError("the pool is empty: add a member before training an epoch")
        started = time.perf_counter()
        n = len(self.data.train_x)
        for member in members:
            member.epoch += 1
        orders = torch.arange(n).expand(self.capacity, n).clone()
        for member in members:
            orders[member.slot] = batch_order(n, member.seed, member.epoch)
        orders = orders.to(self.device)
        loss_sum = torch.zeros(self.capacity, device=self.device)
        correct = torch.zeros(self.capacity, dtype=torch.long, device=self.device)
        for start in range(0, n, self.config.batch_size):
            index = orders[:, start : start + self.config.batch_size]  # (K, B)
            loss, hits = self._step(index)
            loss_sum += loss * index.shape[1]
            correct += hits
            if on_step is not None:
                on_step()
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

    def _step(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every occupied slot on its batch ``index`` (K, B); every
        slot's mean loss and correct count, scored by the weights before the step."""
        k, b = index.shape
        x = self.data.train_x[index]  # (K, B, ...)
        y = self.data.train_y[index]  # (K, B)
        params = dict(zip(self.names, self.params, strict=True))
        with torch.enable_grad():
            logits = self._train_forward(params, self.buffers, x)  # (K, B, classes)
            loss = self._mean_loss(logits, y)  # (K,)
            # Contiguous, as the fused kernels read their tensors: vmap's backward may hand
            # a weight's gradient back transposed.
            grads = [g.contiguous() for g in torch.autograd.grad(loss.sum(), self.params)]
        with torch.no_grad():
            hits = (logits.argmax(dim=-1) == y).sum(dim=1)
            if self._any_l2:
                torch._foreach_addcmul_(grads, self.params, self._l2)
            if self._any_shrink:
                torch._foreach_mul_(self.params, self._shrinks)
            self.steps += self._occupied
            if self._adam_slots:
                slots = self._adam_slots
                torch._fused_adam_(
                    per_slot(self.params, slots),
                    per_slot(grads, slots),
                    per_slot(self.exp_avgs, slots),
                    per_slot(self.exp_avg_sqs, slots),
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
                slots = self._sgd_slots
                torch._fused_sgd_(
                    per_slot(self.params, slots),
                    per_slot(grads, slots),
                    per_slot(self.exp_avgs, slots),
                    weight_decay=0.0,
                    momentum=SGD_MOMENTUM,
                    lr=self.config.lr,
                    dampening=0.0,
                    nesterov=False,
                    maximize=False,
                    is_first_step=False,
                )
        return loss.detach(), hits

    def _mean_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each slot's mean loss (K,) over its rows: the task's own, else cross-entropy
        sample by sample as ``F.cross_entropy`` computes it for one model."""
        if self._loss is not None:
            loss: torch.Tensor = self._loss(logits, y)
            return loss
        log_probs = logits.log_softmax(dim=-1)
        return -log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(dim=1)

    @torch.no_grad()
    def evaluate(
        self, x_all: torch.Tensor | None = None, y_all: torch.Tensor | None = None
    ) -> tuple[list[float], list[float]]:
        """Mean cross-entropy and accuracy of every slot (K,) on ``(x_all, y_all)``, by
        default the validation split; chunked by the capacity, as ``TrialPool.evaluate``."""
        if x_all is None or y_all is None:
            x_all, y_all = self.data.val_x, self.data.val_y
        k = self.capacity
        params = dict(zip(self.names, self.params, strict=True))
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, dtype=torch.long, device=self.device)
        rows = max(1, min(EVAL_CHUNK, EVAL_BUDGET // k))
        for start in range(0, len(x_all), rows):
            x, y = x_all[start : start + rows], y_all[start : start + rows]
            logits = self._eval_forward(params, self.buffers, x)  # (K, rows, classes)
            target = y.expand(k, -1)
            loss_sum += self._mean_loss(logits, target) * len(y)
            correct += (logits.argmax(dim=-1) == target).sum(dim=1)
        m = len(x_all)
        return (loss_sum.double() / m).tolist(), (correct.double() / m).tolist()


def per_slot(tensors: list[torch.Tensor], slots: list[int]) -> list[torch.Tensor]:
    """Each slot's tensors in turn, as the fused optimizers take them: slot by slot, so no
    slot's elements share a vector with another's."""
    return [t[slot] for slot in slots for t in tensors]
