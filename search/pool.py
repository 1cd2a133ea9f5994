"""The trial pool: K trials trained side by side as one stacked model, fed by ask-and-tell.

A 784-128-10 MLP on batches of 64 is far too small to keep even two CPU cores busy, so one
trial at a time spends most of its time in Python and dispatch overhead. The pool stacks the
weights of K trials along a leading dimension and runs one batched forward, backward and Adam
step for all of them, each slot on its own batch of its own trial's shuffle.

A trial's result does not depend on the pool: its initial weights and batch orders are
functions of (study seed, trial number, its own epoch), as in ``search.train.train``; the
per-slot arithmetic is the reference's, so a pooled trial matches the same trial trained
alone to float tolerance (``tests/test_pool.py`` checks it).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch
import torch.nn.functional as F
from optuna.exceptions import ExperimentalWarning
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from search.config import StudyConfig
from search.data import Splits
from search.objective import begin_trial, end_epoch, record_divergence, record_outcome
from search.study import FINISHED, record_best_feasible
from search.train import EVAL_CHUNK, DivergedError, EpochMetrics, batch_order, init_model

logger = logging.getLogger(__name__)

# Trials side by side on a GPU by default: the stacked model of 64 trials is still small
# (26 MB of weights and Adam moments), and fewer slots leave the GPU idle between kernels.
CUDA_PARALLEL_TRIALS = 64

# On the CPU: measured with `python -m search.bench` on 2 cores, where 16 is within a few
# percent of the best rate (16 and 32 are close), and fewer slots drain faster at the end of a
# study, when the pool runs with whatever trials are left.
CPU_PARALLEL_TRIALS = 16

# Validation is scored for all slots at once, one (rows, K*128) hidden activation per chunk;
# this bounds that activation to what EVAL_CHUNK rows of 8 slots would take (40 MB).
EVAL_BUDGET = EVAL_CHUNK * 8

# Adam's constants, as torch.optim.Adam has them and the seed uses them.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

# Every slot's parameters are the four tensors of SimpleNN, in this order (fc1, fc2).
HIDDEN, INPUTS, CLASSES = 128, 28 * 28, 10


def default_parallel_trials(device: torch.device) -> int:
    """How many trials to train side by side on ``device`` when the user doesn't say."""
    return CUDA_PARALLEL_TRIALS if device.type == "cuda" else CPU_PARALLEL_TRIALS


@dataclass
class Member:
    """One trial in a slot of the pool: what its batches and its optimizer depend on."""

    key: int  # the caller's name for it, e.g. the trial number
    seed: int  # trial seed: initial weights and batch orders
    weight_decay: float
    epoch: int = 0  # epochs finished so far


class TrialPool:
    """Up to ``capacity`` trials of ``SimpleNN`` trained side by side, one epoch at a time.

    Slot k holds fc1 ``W1[k] (128, 784)``, ``b1[k] (128,)`` and fc2 ``W2[k] (10, 128)``,
    ``b2[k] (10,)``, its Adam moments and its own step count, so a trial that joins later starts
    its own bias correction at step 1. Members are added and removed only between epochs, and
    all of them take the same number of steps per epoch (the training set is shared), so every
    member is always at the start of one of its own epochs when the pool is between epochs.

    The occupied slots are always the first ``len(self)``, so the batched kernels never compute
    empty slots, and they stay in the order the members joined: members that joined together
    have taken the same steps and share one bias correction, so the optimizer updates each such
    run of slots in one call (one call per slot would cost a parallel region per tensor).
    """

    def __init__(self, data: Splits, config: StudyConfig, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a pool needs at least one slot, got {capacity}")
        self.data = data
        self.config = config
        self.capacity = capacity
        self.device = data.train_x.device
        self.members: list[Member] = []
        shapes = [(HIDDEN, INPUTS), (HIDDEN,), (CLASSES, HIDDEN), (CLASSES,)]

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=self.device)

        self.params = [zeros(capacity, *shape) for shape in shapes]  # W1, b1, W2, b2
        self.grads = [zeros(capacity, *shape) for shape in shapes]
        self.exp_avgs = [zeros(capacity, *shape) for shape in shapes]
        self.exp_avg_sqs = [zeros(capacity, *shape) for shape in shapes]
        # Float32 step counts on the device, as the fused Adam kernel reads them.
        self.steps = zeros(capacity)
        self.weight_decays = zeros(capacity)
        self._x = torch.empty(capacity * config.batch_size, INPUTS, device=self.device)
        self._bind()

    def __len__(self) -> int:
        return len(self.members)

    def keys(self) -> list[int]:
        return [m.key for m in self.members]

    def add(self, key: int, seed: int, weight_decay: float) -> None:
        """Put a new trial in a free slot: ``init_model(seed)``'s weights, fresh Adam state."""
        if key in self.keys():
            raise ValueError(f"key {key} is already in the pool")
        if len(self.members) == self.capacity:
            raise ValueError(f"the pool is full ({self.capacity} slots); remove a member first")
        slot = len(self.members)
        model = init_model(seed, self.device)
        source = [model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias]
        with torch.no_grad():
            for param, grad, m, v, init in zip(
                self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, source, strict=True
            ):
                param[slot].copy_(init)
                grad[slot].zero_()
                m[slot].zero_()
                v[slot].zero_()
        self.steps[slot] = 0.0
        self.weight_decays[slot] = weight_decay
        self.members.append(Member(key, seed, weight_decay))
        self._bind()

    def remove(self, key: int) -> None:
        """Take a trial out; the members after it move up one slot, state and all."""
        slot = self.keys().index(key)
        n = len(self.members)
        with torch.no_grad():
            for t in (*self.params, *self.grads, *self.exp_avgs, *self.exp_avg_sqs):
                t[slot : n - 1] = t[slot + 1 : n].clone()  # clone: the ranges overlap
            for t in (self.steps, self.weight_decays):
                t[slot : n - 1] = t[slot + 1 : n].clone()
        del self.members[slot]
        self._bind()

    def _bind(self) -> None:
        """Views of the occupied slots, rebuilt only when membership changes."""
        n = len(self.members)
        self._active = [t[:n] for t in self.params]
        self._active_grads = [t[:n] for t in self.grads]
        decay = self.weight_decays[:n]
        self._decays = [
            decay.view(n, 1, 1),
            decay.view(n, 1),
            decay.view(n, 1, 1),
            decay.view(n, 1),
        ]
        # Runs of slots that joined in the same epoch (members are in joining order), each
        # updated by one fused Adam call reading the run's step count.
        runs: list[tuple[int, int]] = []
        for slot, member in enumerate(self.members):
            if runs and self.members[runs[-1][0]].epoch == member.epoch:
                runs[-1] = (runs[-1][0], slot + 1)
            else:
                runs.append((slot, slot + 1))
        self._adam_runs = [
            (
                [t[a:b] for t in self.params],
                [t[a:b] for t in self.grads],
                [t[a:b] for t in self.exp_avgs],
                [t[a:b] for t in self.exp_avg_sqs],
                [self.steps[a]] * len(self.params),
            )
            for a, b in runs
        ]

    def train_epoch(
        self, on_step: Callable[[], None] | None = None
    ) -> dict[int, EpochMetrics | DivergedError]:
        """One epoch for every member, each its own next epoch; metrics by member key.

        The metrics mean what ``search.train.train``'s do: running training loss and accuracy
        over the epoch, validation loss and accuracy at its end, and the epoch's wall seconds
        (shared by all members, who trained in the same seconds). A member whose training loss
        is not finite gets a ``DivergedError`` instead; the others are unaffected.

        Args:
            on_step: called after every optimizer step, e.g. to keep heartbeats going.
        """
        if not self.members:
            raise ValueError("the pool is empty: add a member before training an epoch")
        started = time.perf_counter()
        n_slots = len(self.members)
        n = len(self.data.train_x)
        batch_size = self.config.batch_size
        for member in self.members:
            member.epoch += 1
        # Slot k's shuffle of its own epoch: (n_slots, n), the same order train() draws.
        orders = torch.stack([batch_order(n, m.seed, m.epoch) for m in self.members])
        orders = orders.to(self.device)
        loss_sum = torch.zeros(n_slots, device=self.device)
        correct = torch.zeros(n_slots, dtype=torch.long, device=self.device)
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
        seconds = time.perf_counter() - started
        results: dict[int, EpochMetrics | DivergedError] = {}
        for slot, member in enumerate(self.members):
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
            )
        return results

    @torch.no_grad()
    def _step(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step of every slot on its batch ``index`` (K, B); the per-slot mean loss
        (K,) and correct count (K,), both scored by the weights before the step.

        The backward of this two-layer network is written out, three batched matmuls into
        the gradient buffers the optimizer reads: autograd would allocate fresh gradients
        every step and copy them there, about a third more time per step on the CPU.
        """
        n_slots, b = index.shape
        w1, b1, w2, b2 = self._active
        g_w1, g_b1, g_w2, g_b2 = self._active_grads
        x = torch.index_select(self.data.train_x, 0, index.reshape(-1), out=self._x[: n_slots * b])
        x = x.view(n_slots, b, INPUTS)  # (K, B, 784)
        y = self.data.train_y[index]  # (K, B)

        pre = torch.baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2))  # (K, B, 128)
        h = pre.relu_()
        logits = torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2))  # (K, B, 10)
        log_probs = logits.log_softmax(dim=-1)
        target = y.unsqueeze(-1)  # (K, B, 1)
        loss = -log_probs.gather(-1, target).squeeze(-1).mean(dim=1)  # (K,) F.cross_entropy
        hits = (logits.argmax(dim=-1) == y).sum(dim=1)  # (K,)

        # d(mean cross-entropy)/d(logits) = (softmax - onehot(y)) / B, for each slot alone.
        d_logits = log_probs.exp_()
        d_logits.scatter_add_(-1, target, torch.full_like(target, -1, dtype=d_logits.dtype))
        d_logits.div_(b)
        torch.bmm(d_logits.transpose(1, 2), h, out=g_w2)  # (K, 10, 128)
        torch.sum(d_logits, dim=1, out=g_b2)  # (K, 10)
        # ReLU's gradient, with the kernel autograd uses for it (a bool mask multiply would
        # first convert the mask to floats, a pass as slow as a matmul here).
        d_h = torch.ops.aten.threshold_backward(torch.bmm(d_logits, w2), h, 0)  # (K, B, 128)
        torch.bmm(d_h.transpose(1, 2), x, out=g_w1)  # (K, 128, 784)
        torch.sum(d_h, dim=1, out=g_b1)  # (K, 128)

        # torch.optim.Adam(weight_decay=wd): the L2 term joins the gradient, then plain Adam.
        # The decay differs per slot, so it is added here and the fused kernel gets none; the
        # kernel is the one make_optimizer uses, so the per-slot arithmetic is the reference's.
        torch._foreach_addcmul_(self._active_grads, self._active, self._decays)
        self.steps[:n_slots] += 1
        for params, grads, exp_avgs, exp_avg_sqs, steps in self._adam_runs:
            torch._fused_adam_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                lr=self.config.lr,
                beta1=BETA1,
                beta2=BETA2,
                weight_decay=0.0,
                eps=EPS,
                amsgrad=False,
                maximize=False,
            )
        return loss, hits

    @torch.no_grad()
    def evaluate(self) -> tuple[list[float], list[float]]:
        """Mean cross-entropy and accuracy of every slot on the shared validation set."""
        n_slots = len(self.members)
        w1, b1, w2, b2 = self._active
        x_all, y_all = self.data.val_x, self.data.val_y
        # The first layer of all slots is one matmul: (rows, 784) @ (784, K*128).
        w1_all, b1_all = w1.reshape(n_slots * HIDDEN, INPUTS), b1.reshape(-1)
        loss_sum = torch.zeros(n_slots, device=self.device)
        correct = torch.zeros(n_slots, dtype=torch.long, device=self.device)
        rows = max(1, min(EVAL_CHUNK, EVAL_BUDGET // n_slots))
        for start in range(0, len(x_all), rows):
            x, y = x_all[start : start + rows], y_all[start : start + rows]
            h = torch.addmm(b1_all, x, w1_all.t()).relu_()  # (rows, K*128)
            h = h.view(len(x), n_slots, HIDDEN).transpose(0, 1)  # (K, rows, 128)
            logits = torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2))  # (K, rows, 10)
            target = y.expand(n_slots, -1)  # (K, rows)
            losses = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            loss_sum += losses.sum(dim=1)
            correct += (logits.argmax(dim=-1) == target).sum(dim=1)
        m = len(x_all)
        return (loss_sum.double() / m).tolist(), (correct.double() / m).tolist()


@dataclass
class Running:
    """A trial in the pool, as the driver tracks it."""

    trial: optuna.Trial
    started: float
    history: list[EpochMetrics] = field(default_factory=list)


class Heartbeat:
    """Keeps the heartbeats of the pool's running trials, as ``study.optimize``'s thread would.

    Optuna's heartbeat thread runs only inside ``study.optimize``; with ask-and-tell the pool
    records them itself, between steps, at least every ``heartbeat_interval`` seconds.
    """

    def __init__(self, study: optuna.Study, running: dict[int, Running]) -> None:
        storage = study._storage
        self.storage = storage if isinstance(storage, BaseHeartbeat) else None
        self.enabled = self.storage is not None and is_heartbeat_enabled(storage)
        interval = self.storage.get_heartbeat_interval() if self.storage is not None else None
        # Half the interval: a beat is never late by the time one long step takes.
        self.every = (interval or 0) / 2
        self.running = running
        self.due = 0.0

    def fail_stale_trials(self, study: optuna.Study) -> None:
        """Fail trials whose worker stopped beating; the storage's callback may retry them."""
        if not self.enabled:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)

    def beat(self, trial: optuna.Trial | None = None) -> None:
        """Record one trial's heartbeat now, or every running trial's when one is due."""
        if not self.enabled:
            return
        assert self.storage is not None
        if trial is not None:
            self.storage.record_heartbeat(trial._trial_id)
            return
        now = time.monotonic()
        if now < self.due:
            return
        for running in self.running.values():
            self.storage.record_heartbeat(running.trial._trial_id)
        self.due = now + self.every


def budget_left(study: optuna.Study, config: StudyConfig) -> bool:
    """Whether the study's budget has room for another trial.

    Running trials count, this worker's and others', so workers sharing one study never start
    more than ``config.trials`` between them; a failed trial doesn't, it is retried.
    """
    states = (*FINISHED, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states)) < config.trials


def run_pool(
    study: optuna.Study,
    config: StudyConfig,
    data: Splits,
    k: int,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
) -> int:
    """Run trials ``k`` at a time until the study's budget is met; returns how many ran.

    ``search.study.run_trials`` for the pool: trials come from ``study.ask()``, train side by
    side, report each epoch through ``end_epoch`` (pruning and the constraint as in the single
    trial path) and are told when they finish or stop. A freed slot is refilled at once with
    one newly asked trial, so the sampler sees every told trial before it proposes the next.
    No trial is started after ``config.timeout`` seconds; those running finish.

    Args:
        callbacks: called with the study and each told trial, as ``study.optimize`` would.

    Raises:
        KeyboardInterrupt, or whatever training raised, after every running trial is told
        FAIL (a re-run retries them).
    """
    pool = TrialPool(data, config, k)
    running: dict[int, Running] = {}
    heartbeat = Heartbeat(study, running)
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    asked = 0

    def refill() -> None:
        nonlocal asked
        if deadline is not None and time.monotonic() >= deadline:
            return
        # Beat first: a long pause since the last step (evaluation, callbacks) must not make
        # this worker's own trials look stale to the check below.
        heartbeat.beat()
        heartbeat.fail_stale_trials(study)
        if not budget_left(study, config):
            return
        trial = study.ask()
        running[trial.number] = Running(trial, started=time.perf_counter())
        asked += 1
        heartbeat.beat(trial)
        weight_decay, seed = begin_trial(trial, config)
        pool.add(trial.number, seed, weight_decay)

    def tell(number: int, value: float | None, state: TrialState) -> None:
        frozen = study.tell(running[number].trial, value, state=state)
        del running[number]
        pool.remove(number)
        record_best_feasible(study)
        for callback in callbacks or []:
            callback(study, frozen)

    try:
        while len(pool) < k:
            before = len(pool)
            refill()
            if len(pool) == before:
                break
        while running:
            results = pool.train_epoch(on_step=heartbeat.beat)
            # In trial order, whatever the slots: each told trial reaches the sampler
            # before the trial asked to replace it.
            for number, result in sorted(results.items()):
                entry = running[number]
                if isinstance(result, DivergedError):
                    record_divergence(entry.trial, result)
                    tell(number, None, TrialState.PRUNED)
                    refill()
                    continue
                entry.history.append(result)
                if end_epoch(entry.trial, entry.history, config, entry.started) is not None:
                    tell(number, None, TrialState.PRUNED)
                    refill()
                elif result.epoch == config.epochs:
                    record_outcome(entry.trial, entry.history, config, entry.started)
                    tell(number, result.val_accuracy, TrialState.COMPLETE)
                    refill()
    except BaseException:
        for entry in running.values():
            try:
                study.tell(entry.trial, state=TrialState.FAIL)
            except Exception:  # the storage may be what failed; the original error matters
                logger.exception("could not mark trial %d failed", entry.trial.number)
        raise
    return asked
