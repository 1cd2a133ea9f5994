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

import torch
from torch.func import functional_call, vmap

from search.config import StudyConfig
from search.data.splits import Splits
from search.training.slots import EVAL_BUDGET, SlotPool
from search.training.train import EVAL_CHUNK, init_model, task_loss


class FuncPool(SlotPool):
    """Up to ``capacity`` trials of the task's network, one epoch at a time, any architecture.

    Empty slots hold the seed-0 initial weights (finite numbers for any network the task
    builds) and train nothing: the optimizers only see occupied slots, and an empty slot's
    results are dropped. Every kernel runs on all ``capacity`` slots with the same shapes
    whatever is occupied, so the roundings a member sees never change with its companions.
    """

    def __init__(self, data: Splits, config: StudyConfig, capacity: int) -> None:
        super().__init__(data, config, capacity)
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

    def _empty(self, slot: int) -> None:
        # The template's weights: finite numbers for any network the task builds.
        self._load(slot, self.template)

    def state_dict(self, key: int) -> dict[str, torch.Tensor]:
        """A member's weights as the task's model names them: they load into ``init_model()``."""
        slot = self.slot(key)
        named = zip(self.names, self.params, strict=True)
        weights = {n: p[slot].detach().clone() for n, p in named}
        weights |= {n: b[slot].clone() for n, b in self.buffers.items()}
        return {name: weights[name] for name in self.template}  # the module's own order

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
            self._decay_and_update(grads, *self.optimizer_lists(grads))
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
