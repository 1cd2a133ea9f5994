"""The trial pool: K trials trained side by side as one stacked model; pure torch, no Optuna.

A 784-128-10 MLP on batches of 64 is far too small to keep even two CPU cores busy, so one
trial at a time spends most of its time in Python and dispatch overhead. The pool stacks the
weights of K trials along a leading dimension and runs one batched forward, backward and
optimizer step for all of them, each slot on its own batch of its own trial's shuffle.

It trains every recipe the CLI offers: either task's network (both are Linear, ReLU, Linear:
MNIST's ``SimpleNN`` and the synthetic table's ``TabularNN``), and per slot its own optimizer
(Adam with L2 decay, AdamW's decoupled decay, SGD with momentum) and whether its biases
decay, so a ``--search-space full`` study mixes them all in one pool.

A trial's result does not depend on the rest of the pool: its initial weights and batch orders
are functions of (study seed, trial number, its own epoch), as in ``search.training.train``, and
its numbers are the same bit for bit whatever other slots hold (see ``TrialPool``), for a given
capacity. The per-slot arithmetic is the reference's, summed in other orders, so a pooled trial
matches the same trial trained alone to float tolerance (``tests/training/test_pool.py`` checks
both). ``search.engine.drive.run_pool`` feeds it trials from Optuna by ask-and-tell.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from search.config import CPU_PARALLEL_TRIALS, CUDA_PARALLEL_TRIALS, StudyConfig
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


def default_parallel_trials(device: torch.device) -> int:
    """How many trials to train side by side on ``device`` when the user doesn't say."""
    return CUDA_PARALLEL_TRIALS if device.type == "cuda" else CPU_PARALLEL_TRIALS


def parallel_trials(config: StudyConfig, device: torch.device) -> int:
    """``--parallel-trials``, or the device's default: the pool trains every recipe."""
    if config.parallel_trials is not None:
        return config.parallel_trials
    return default_parallel_trials(device)


@dataclass
class Member:
    """One trial in a slot of the pool: what its batches and its optimizer depend on."""

    key: int  # the caller's name for it, e.g. the trial number
    seed: int  # trial seed: initial weights and batch orders
    recipe: Recipe
    slot: int  # its index along the stacked dimension, fixed while it is in the pool
    epoch: int = 0  # epochs finished so far


class TrialPool:
    """Up to ``capacity`` trials of the task's network trained side by side, one epoch at a time.

    Slot k holds fc1 ``W1[k] (inputs, hidden)``, ``b1[k] (hidden,)`` and fc2
    ``W2[k] (hidden, classes)``, ``b2[k] (classes,)`` (784, 128, 10 for MNIST; 10, 256, 2 for
    the synthetic table), its optimizer state (Adam's moments and its own step count, or SGD's
    momentum buffer), so a trial that joins later starts its own bias correction at step 1.
    The weights are stored transposed from ``nn.Linear``'s (out, in), so the forward multiplies
    contiguous matrices, ``x @ W1``, faster on the CPU than through a transposed view.
    The optimizers are elementwise, so the layout changes nothing.

    Each slot's recipe is what ``search.training.train.make_optimizer`` builds for it, in the
    same arithmetic: the L2 decay (Adam, SGD) is ``grad + decay * param`` per slot, AdamW's
    decoupled decay is ``param * (1 - lr * decay)`` before the Adam step (what the fused AdamW
    kernel does, bit for bit), and a slot that leaves its biases undecayed has a decay of 0
    there. The optimizer steps are the fused kernels ``make_optimizer`` uses, Adam's over the
    Adam and AdamW slots and SGD's over the SGD slots, each slot's tensors its own list
    entries: grouping by list costs nothing per step, where masking would run every optimizer
    over every slot.

    Members are added and removed only between epochs, and all of them take the same number of
    steps per epoch (the training set is shared), so every member is always at the start of one
    of its own epochs when the pool is between epochs.

    A member's results are a function of its seed, its recipe and the capacity alone,
    bit for bit: not of its slot, nor of which other slots are occupied or what they train,
    nor of who joins or leaves (``search.evaluate --replay`` relies on it, and
    ``tests/training/test_pool.py`` checks it).
    Float sums round differently with their shapes and with how a kernel splits its work:
    on two threads, a batched matmul of one slot splits that one matmul between the threads,
    while one of several slots gives each thread whole slots (measured: with one member left,
    its forward pass already differed in the last bits), and validation was chunked by the
    number of occupied slots. So:

    - the batched kernels always compute all ``capacity`` slots, with the same shapes whether
      a slot is occupied or not (an empty slot trains zero weights on dummy batches and its
      results are dropped), and members never move between slots;
    - every op on the stacked tensors is either per row (matmuls per slot, softmax per sample,
      sums per slot) or exactly rounded wherever a slot lies (relu, masks, scaling by 1/B,
      decay by a factor that is 0, or 1, where a slot has none);
    - the optimizers take each occupied slot's tensors as separate list entries with that
      slot's own step count, in fused calls: each slot's pass starts at its own element 0, so
      no slot's elements fall in another's vectorised body or scalar tail (b2 has 10 elements
      a slot, so slot offsets in the stacked tensor are not multiples of the vector width);
    - validation is chunked by the capacity, not by how many slots are occupied.

    Every line runs on the CPU and on CUDA alike: tensors live on ``data``'s device and no
    step branches on it.
    """

    def __init__(self, data: Splits, config: StudyConfig, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a pool needs at least one slot, got {capacity}")
        self.data = data
        self.config = config
        self.capacity = capacity
        self.device = data.train_x.device
        self.slots: list[Member | None] = [None] * capacity
        # The network's sizes, read off its weights: (hidden, inputs) and (classes, hidden).
        template = init_model(0, "cpu", config.task).state_dict()
        self.hidden, self.inputs = template["fc1.weight"].shape
        self.classes = template["fc2.weight"].shape[0]
        shapes = [
            (self.inputs, self.hidden),
            (self.hidden,),
            (self.hidden, self.classes),
            (self.classes,),
        ]

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=self.device)

        self.params = [zeros(capacity, *shape) for shape in shapes]  # W1, b1, W2, b2
        self.grads = [zeros(capacity, *shape) for shape in shapes]
        self.exp_avgs = [zeros(capacity, *shape) for shape in shapes]  # Adam's, SGD's momentum
        self.exp_avg_sqs = [zeros(capacity, *shape) for shape in shapes]
        # Float32 step counts on the device, as the fused Adam kernel reads them.
        self.steps = zeros(capacity)
        # Per slot, for its weights (matrices) and for its biases: the L2 decay added to the
        # gradient (Adam, SGD; 0 for AdamW), and AdamW's shrink factor (1 for the others).
        self.l2_weights, self.l2_biases = zeros(capacity), zeros(capacity)
        self.shrink_weights = torch.ones(capacity, device=self.device)
        self.shrink_biases = torch.ones(capacity, device=self.device)
        self._x = torch.empty(capacity * config.batch_size, self.inputs, device=self.device)
        self._bind()

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
        refused rather than trained at the wrong rate.
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
        weights = init_model(seed, self.device, self.config.task).state_dict()
        source = [weights[name] for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]
        source[0], source[2] = source[0].t(), source[2].t()
        with torch.no_grad():
            for param, init in zip(self.params, source, strict=True):
                param[slot].copy_(init)
        self._clear(slot, params=False)
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
        # Zero weights: an empty slot computes harmless finite numbers, even after a member
        # whose weights went NaN.
        self._clear(slot, params=True)
        self.slots[slot] = None
        self._bind()

    def _clear(self, slot: int, params: bool) -> None:
        tensors = (*self.grads, *self.exp_avgs, *self.exp_avg_sqs)
        with torch.no_grad():
            for t in (*self.params, *tensors) if params else tensors:
                t[slot].zero_()
        self.steps[slot] = 0.0
        self.l2_weights[slot] = self.l2_biases[slot] = 0.0
        self.shrink_weights[slot] = self.shrink_biases[slot] = 1.0

    def state_dict(self, key: int) -> dict[str, torch.Tensor]:
        """A member's weights as ``SimpleNN``'s state dict: they load into ``init_model()``."""
        w1, b1, w2, b2 = (t[self.slot(key)] for t in self.params)
        return {
            "fc1.weight": w1.t().clone(),
            "fc1.bias": b1.clone(),
            "fc2.weight": w2.t().clone(),
            "fc2.bias": b2.clone(),
        }

    def _bind(self) -> None:
        """Per-slot views for the optimizers, rebuilt only when membership changes.

        The lists hold the four tensors of each occupied slot in turn, Adam's slots (Adam and
        AdamW) and SGD's apart, with each Adam slot's step count (a 0-dim view) beside each.
        """
        members = self.members
        adam = [m.slot for m in members if m.recipe.entry.step == "adam"]
        sgd = [m.slot for m in members if m.recipe.entry.step == "sgd"]

        def per_slot(tensors: list[torch.Tensor], slots: list[int]) -> list[torch.Tensor]:
            return [t[slot] for slot in slots for t in tensors]

        self._adam = [
            per_slot(tensors, adam)
            for tensors in (self.params, self.grads, self.exp_avgs, self.exp_avg_sqs)
        ]
        self._adam_steps = [self.steps[slot] for slot in adam for _ in self.params]
        self._sgd = [
            per_slot(tensors, sgd) for tensors in (self.params, self.grads, self.exp_avgs)
        ]
        self._occupied = torch.zeros(self.capacity, device=self.device)  # 1.0 where occupied
        self._occupied[[m.slot for m in members]] = 1.0
        # Skipped where no slot has any: adding 0 * param, or multiplying by 1, changes
        # nothing, so a slot's numbers don't depend on whether its companions decay.
        self._any_l2 = any(not m.recipe.entry.decoupled for m in members)
        self._any_shrink = any(m.recipe.entry.decoupled for m in members)
        k = self.capacity

        def per_tensor(weights: torch.Tensor, biases: torch.Tensor) -> list[torch.Tensor]:
            return [
                weights.view(k, 1, 1),
                biases.view(k, 1),
                weights.view(k, 1, 1),
                biases.view(k, 1),
            ]

        self._l2 = per_tensor(self.l2_weights, self.l2_biases)
        self._shrinks = per_tensor(self.shrink_weights, self.shrink_biases)

    def train_epoch(
        self, on_step: Callable[[], None] | None = None
    ) -> dict[int, EpochMetrics | DivergedError]:
        """One epoch for every member, each its own next epoch; metrics by member key.

        The metrics mean what ``search.training.train.train``'s do: running training loss and
        accuracy over the epoch, validation loss and accuracy at its end, and the epoch's wall
        seconds (shared by all members, who trained in the same seconds). A member whose training
        loss is not finite gets a ``DivergedError`` instead; the others are unaffected.

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

    @torch.no_grad()
    def _step(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Over 60 lines: the training hot loop, one step written out so that nothing is allocated
        # between its matmuls.
        """One optimizer step of every occupied slot on its batch ``index`` (K, B); every slot's
        mean loss (K,) and correct count (K,), both scored by the weights before the step.

        The backward of this two-layer network is written out, three batched matmuls into
        the gradient buffers the optimizer reads: autograd would allocate fresh gradients
        every step and copy them there, extra work in every step on the CPU (where the pool's
        time goes: docs/speed.md).
        """
        n_slots, b = index.shape
        w1, b1, w2, b2 = self.params
        g_w1, g_b1, g_w2, g_b2 = self.grads
        x = torch.index_select(self.data.train_x, 0, index.reshape(-1), out=self._x[: n_slots * b])
        x = x.view(n_slots, b, self.inputs)  # (K, B, 784)
        y = self.data.train_y[index]  # (K, B)

        h = torch.baddbmm(b1.unsqueeze(1), x, w1).relu_()  # (K, B, 128)
        logits = torch.baddbmm(b2.unsqueeze(1), h, w2)  # (K, B, 10)
        log_probs = logits.log_softmax(dim=-1)
        target = y.unsqueeze(-1)  # (K, B, 1)
        loss = -log_probs.gather(-1, target).squeeze(-1).mean(dim=1)  # (K,) F.cross_entropy
        hits = (logits.argmax(dim=-1) == y).sum(dim=1)  # (K,)

        # d(mean cross-entropy)/d(logits) = (softmax - onehot(y)) / B, for each slot alone,
        # with the kernels autograd uses: nll_loss's gradient (-1/B at the target), then
        # log_softmax's, which works one sample's row at a time (an exp over the whole stacked
        # tensor would round its scalar tail, in one slot, differently from the rest).
        d_log_probs = torch.zeros_like(log_probs)
        d_log_probs.scatter_(-1, target, -1.0 / b)
        d_logits = torch.ops.aten._log_softmax_backward_data(
            d_log_probs, log_probs, -1, log_probs.dtype
        )
        torch.bmm(h.transpose(1, 2), d_logits, out=g_w2)  # (K, 128, 10)
        torch.sum(d_logits, dim=1, out=g_b2)  # (K, 10)
        # ReLU's gradient, with the kernel autograd uses for it (a bool mask multiply would
        # first convert the mask to floats, an extra pass over the activations).
        d_h = torch.bmm(d_logits, w2.transpose(1, 2))  # (K, B, 128)
        d_h = torch.ops.aten.threshold_backward(d_h, h, 0)
        torch.bmm(x.transpose(1, 2), d_h, out=g_w1)  # (K, 784, 128)
        torch.sum(d_h, dim=1, out=g_b1)  # (K, 128)

        # The optimizers as make_optimizer builds them, each slot with its own decay (see the
        # class docstring): torch.optim.Adam and SGD's L2 term joins the gradient, AdamW's
        # decoupled decay shrinks the weights before its Adam step; the fused kernels get no
        # decay of their own. Both decays are a multiply(-add) per element, row by row of each
        # slot (the decay broadcasts along a slot's elements).
        if self._any_l2:
            torch._foreach_addcmul_(self.grads, self.params, self._l2)
        if self._any_shrink:
            torch._foreach_mul_(self.params, self._shrinks)
        self.steps += self._occupied
        if self._adam_steps:
            params, grads, exp_avgs, exp_avg_sqs = self._adam
            torch._fused_adam_(
                params,
                grads,
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
        if self._sgd[0]:
            # A zero momentum buffer makes the first step's ``buf = grad`` of its own
            # (0.9 * 0 + grad), so slots that join later need no first-step flag.
            params, grads, buffers = self._sgd
            torch._fused_sgd_(
                params,
                grads,
                buffers,
                weight_decay=0.0,
                momentum=SGD_MOMENTUM,
                lr=self.config.lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=False,
            )
        return loss, hits

    @torch.no_grad()
    def evaluate(
        self, x_all: torch.Tensor | None = None, y_all: torch.Tensor | None = None
    ) -> tuple[list[float], list[float]]:
        """Mean cross-entropy and accuracy of every slot (K,) on ``(x_all, y_all)``, by
        default the shared validation set."""
        k = self.capacity
        w1, b1, w2, b2 = self.params
        if x_all is None or y_all is None:
            x_all, y_all = self.data.val_x, self.data.val_y
        # The first layer of all slots is one matmul: (rows, 784) @ (784, K*128).
        w1_all = w1.transpose(0, 1).reshape(self.inputs, k * self.hidden)
        b1_all = b1.reshape(-1)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, dtype=torch.long, device=self.device)
        rows = max(1, min(EVAL_CHUNK, EVAL_BUDGET // k))  # by capacity: the same sums always
        for start in range(0, len(x_all), rows):
            x, y = x_all[start : start + rows], y_all[start : start + rows]
            h = torch.addmm(b1_all, x, w1_all).relu_()  # (rows, K*128)
            h = h.view(len(x), k, self.hidden).transpose(0, 1)  # (K, rows, 128)
            logits = torch.baddbmm(b2.unsqueeze(1), h, w2)  # (K, rows, 10)
            target = y.expand(k, -1)  # (K, rows)
            # Per sample over its 10 classes, as F.cross_entropy does for one model.
            log_probs = logits.log_softmax(dim=-1)
            loss_sum -= log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(dim=1)
            correct += (logits.argmax(dim=-1) == target).sum(dim=1)
        m = len(x_all)
        return (loss_sum.double() / m).tolist(), (correct.double() / m).tolist()
