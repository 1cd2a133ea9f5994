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

import torch

from search.config import CPU_PARALLEL_TRIALS, CUDA_PARALLEL_TRIALS, StudyConfig
from search.data.splits import Splits
from search.training.slots import EVAL_BUDGET, SlotPool
from search.training.train import EVAL_CHUNK, init_model


def default_parallel_trials(device: torch.device) -> int:
    """How many trials to train side by side on ``device`` when the user doesn't say."""
    return CUDA_PARALLEL_TRIALS if device.type == "cuda" else CPU_PARALLEL_TRIALS


def parallel_trials(config: StudyConfig, device: torch.device) -> int:
    """``--parallel-trials``, or the device's default: the pool trains every recipe."""
    if config.parallel_trials is not None:
        return config.parallel_trials
    return default_parallel_trials(device)


class TrialPool(SlotPool):
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
        super().__init__(data, config, capacity)
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
        self.is_bias = [False, True, False, True]
        self.grads = [zeros(capacity, *shape) for shape in shapes]
        self.exp_avgs = [zeros(capacity, *shape) for shape in shapes]  # Adam's, SGD's momentum
        self.exp_avg_sqs = [zeros(capacity, *shape) for shape in shapes]
        self._x = torch.empty(capacity * config.batch_size, self.inputs, device=self.device)
        self._bind()

    def _load(self, slot: int, weights: dict[str, torch.Tensor]) -> None:
        source = [weights[name] for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]
        source[0], source[2] = source[0].t(), source[2].t()
        with torch.no_grad():
            for param, init in zip(self.params, source, strict=True):
                param[slot].copy_(init)
        self._clear(slot, params=False)

    def _empty(self, slot: int) -> None:
        # Zero weights: an empty slot computes harmless finite numbers, even after a member
        # whose weights went NaN.
        self._clear(slot, params=True)

    def _clear(self, slot: int, params: bool) -> None:
        tensors = (*self.grads, *self.exp_avgs, *self.exp_avg_sqs)
        with torch.no_grad():
            for t in (*self.params, *tensors) if params else tensors:
                t[slot].zero_()

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
        """The optimizers' per-slot lists over the gradient buffers ``_step`` writes: built
        once per membership, not per step."""
        super()._bind()
        self._adam, self._sgd = self.optimizer_lists(self.grads)

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

        self._decay_and_update(self.grads, self._adam, self._sgd)
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
