"""A user's own network and data as a study's task: ``search.Task`` and ``--task FILE.py:NAME``.

A task is what a study tunes the weight decay of: a network (a class or zero-argument
factory, built under the trial's seed so every trial starts from its own reproducible
weights) and the tensors it trains and validates on, held whole as PyTorch users hold a small
dataset (the pool slices batches out of them, as ``TensorDataset`` would). The service trains
it with cross-entropy on the model's output and reads accuracy off its argmax: the
constraint is a training accuracy, so the model returns class scores ``(batch, classes)``.

``--task`` names one as PyTorch Lightning's CLI names a class: ``path/to/file.py:NAME`` or
``package.module:NAME``, NAME being a ``Task`` or a function returning one. Everything wrong
with it is a ``TaskError``, one line that says what to fix, raised before a study exists.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.config import study_name_problem
from search.data.splits import DataError, Splits

if TYPE_CHECKING:
    import torch
    from torch import nn

# The tasks the service ships, reached by name (search.data.tasks); any other --task is a
# reference to a user's Task.
BUILTIN_TASKS: tuple[str, ...] = ("mnist", "synthetic")


class TaskError(DataError):
    """A ``--task`` that cannot be loaded or does not fit the service; one line to fix it."""

    exit_code = 2


@dataclass(frozen=True)
class Task:
    """A network and its data, for a study to tune the weight decay of.

    Attributes:
        model: an ``nn.Module`` class or a zero-argument function returning a fresh module.
            The service calls it under each trial's seed: PyTorch's default initialisation
            (or the module's own) then gives every trial reproducible weights.
        train: ``(inputs, labels)`` the trials train on: inputs ``(N, ...)`` floating point,
            labels ``(N,)`` integer classes from 0.
        val: ``(inputs, labels)`` the trials are scored and selected on.
        test: optional ``(inputs, labels)``, touched only by ``search.evaluate`` to score the
            recommendation; without it ``search.evaluate`` refuses (replay still works).
        name: what the study calls the task (default: NAME of the ``--task`` reference); the
            default study name is ``<name>-weight-decay``.
        loss: ``loss(scores, labels)``, the mean training loss of a batch, in place of
            ``F.cross_entropy``. Written with torch operations (the pool calls it under
            ``torch.func.vmap``, one call per slot), e.g. ``functools.partial(
            F.cross_entropy, label_smoothing=0.1)``. The metric stays the accuracy of the
            scores' argmax: the constraint is a training accuracy.
    """

    model: Callable[[], nn.Module]
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor] | None = None
    name: str | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def is_reference(text: str) -> bool:
    """Whether ``text`` names a user's task (``FILE.py:NAME``, ``module:NAME``), not a built-in."""
    return text not in BUILTIN_TASKS


def reference_problem(text: str) -> str | None:
    """What is wrong with the form of a ``--task`` value, or None: checked before anything
    is imported, by the flag itself."""
    if not is_reference(text):
        return None
    source, colon, name = text.rpartition(":")
    if not colon or not source or not name.isidentifier():
        return (
            f"{text!r} is neither a built-in task ({', '.join(BUILTIN_TASKS)}) nor "
            "FILE.py:NAME or package.module:NAME"
        )
    return None


def task_name(reference: str) -> str:
    """The name a reference's study goes by before its Task is loaded: NAME."""
    return reference if not is_reference(reference) else reference.rpartition(":")[2]


_LOADED: dict[str, Task] = {}


def load_user_task(reference: str) -> Task:
    """The checked ``Task`` a reference names, imported once per process.

    Raises:
        TaskError: the file or module is missing or fails to import, NAME is missing or is
            not a Task, or the Task's tensors or model don't fit (``check_task``).
    """
    if reference in _LOADED:
        return _LOADED[reference]
    problem = reference_problem(reference)
    if problem is not None:
        raise TaskError(f"--task {problem}")
    source, _, name = reference.rpartition(":")
    namespace = import_source(reference, source)
    if not hasattr(namespace, name):
        found = sorted(k for k, v in vars(namespace).items() if isinstance(v, Task))
        known = f"; it has the Task {', '.join(found)}" if found else ""
        raise TaskError(f"--task {reference}: {source} defines no {name!r}{known}")
    value = getattr(namespace, name)
    if not isinstance(value, Task) and callable(value) and not isinstance(value, type):
        try:
            value = value()
        except Exception as error:  # the user's code: any failure is theirs to read
            raise TaskError(f"--task {reference}: {name}() failed: {describe(error)}") from None
    if not isinstance(value, Task):
        raise TaskError(
            f"--task {reference}: {name} is a {type(value).__name__}, not a search.Task or a "
            "function returning one"
        )
    if value.name is not None:
        problem = study_name_problem(f"{value.name}-weight-decay")
        if problem is not None:
            raise TaskError(f"--task {reference}: name {value.name!r}: {problem}")
    check_task(reference, value)
    _LOADED[reference] = value
    return value


def import_source(reference: str, source: str) -> object:
    """The module a reference's source names: a file path, or an importable module."""
    if source.endswith(".py") or "/" in source or "\\" in source:
        path = Path(source)
        if not path.is_file():
            raise TaskError(f"--task {reference}: there is no file {source}; give FILE.py:NAME")
        key = "search_task_" + hashlib.md5(str(path.resolve()).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(key, path)
        if spec is None or spec.loader is None:
            raise TaskError(f"--task {reference}: {source} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # as an import would: dataclasses and pickling look it up
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[key]
            raise TaskError(
                f"--task {reference}: importing {source} failed: {describe(error)}"
            ) from None
        return module
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as error:
        raise TaskError(f"--task {reference}: no module {error.name!r} to import") from None
    except Exception as error:
        raise TaskError(
            f"--task {reference}: importing {source} failed: {describe(error)}"
        ) from None


def describe(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return type(error).__name__ + (f": {lines[0]}" if lines else "")


def check_task(reference: str, task: Task) -> None:
    """Refuse, in one line, a Task the service would train wrongly or fail on mid-study."""
    import torch

    def fail(message: str) -> TaskError:
        return TaskError(f"--task {reference}: {message}")

    if not callable(task.model):
        raise fail("model must be an nn.Module class or a function returning a module")
    splits = {"train": task.train, "val": task.val, "test": task.test}
    shape: tuple[int, ...] | None = None
    for split, pair in splits.items():
        if pair is None:
            continue
        if (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not all(isinstance(t, torch.Tensor) for t in pair)
        ):
            raise fail(f"{split} must be a pair of tensors (inputs, labels)")
        x, y = pair
        if len(x) != len(y):
            raise fail(f"{split} has {len(x)} inputs but {len(y)} labels; give one label each")
        if len(x) == 0:
            raise fail(f"{split} is empty")
        if not x.is_floating_point():
            raise fail(f"{split} inputs are {x.dtype}; give floating-point inputs")
        if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
            raise fail(
                f"{split} labels must be integer classes of shape (N,), got {y.dtype} "
                f"{tuple(y.shape)}"
            )
        if int(y.min()) < 0:
            raise fail(f"{split} labels go down to {int(y.min())}; classes count from 0")
        if shape is None:
            shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != shape:
            raise fail(f"{split} inputs are {tuple(x.shape[1:])} each, train's are {shape}")
    top = max(int(pair[1].max()) for pair in splits.values() if pair is not None)
    model = build_checked(reference, task)
    batch = task.train[0][:2].float()
    try:
        with torch.no_grad():
            out = model(batch)
    except Exception as error:
        raise fail(f"the model fails on a batch of 2 training inputs: {describe(error)}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(batch):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise fail(
            f"the model returns {got} for a batch of {len(batch)}; it must return class "
            "scores (batch, classes)"
        )
    if out.shape[1] <= top:
        raise fail(
            f"labels go up to {top} but the model gives {out.shape[1]} class scores; "
            f"give it at least {top + 1} outputs"
        )
    if task.loss is not None:
        check_loss(reference, task.loss, out, task.train[1][:2].long())


def check_loss(
    reference: str,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scores: torch.Tensor,
    labels: torch.Tensor,
) -> None:
    """A Task's loss must give one number per batch, also under vmap, as the pool calls it."""
    import torch
    from torch.func import vmap

    try:
        value = loss(scores, labels)
        batched = vmap(loss)(scores.unsqueeze(0), labels.unsqueeze(0))
    except Exception as error:
        raise TaskError(
            f"--task {reference}: the loss fails on the model's scores of 2 "
            f"training inputs (also under torch.func.vmap): {describe(error)}"
        ) from None
    if not isinstance(value, torch.Tensor) or value.ndim != 0 or batched.shape != (1,):
        raise TaskError(
            f"--task {reference}: the loss must return the batch's mean as one "
            f"number, got {tuple(getattr(value, 'shape', ()))}"
        )


def build_checked(reference: str, task: Task) -> nn.Module:
    """One model of the task, refused if it is no module or holds what the pool can't stack."""
    from torch import nn

    try:
        model = task.model()
    except Exception as error:
        raise TaskError(
            f"--task {reference}: building the model failed: {describe(error)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise TaskError(
            f"--task {reference}: model() returned a {type(model).__name__}, not an nn.Module"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise TaskError(f"--task {reference}: the model has no trainable parameters")
    for layer in model.modules():
        problem = unsupported(layer)
        if problem is not None:
            raise TaskError(f"--task {reference}: {problem}")
    return model


def unsupported(layer: nn.Module) -> str | None:
    """Why the pool can't train ``layer`` so that a trial's numbers are its own, or None.

    Running statistics are state a forward pass writes (trials side by side can't stack
    it), and dropout masks would come from one generator shared by every slot, so a trial's
    result would depend on its companions.
    """
    from torch import nn

    name = type(layer).__name__
    if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
        return (
            f"{name} keeps running statistics, which trials trained side by side can't "
            f"stack; use {name}(..., track_running_stats=False), LayerNorm or GroupNorm"
        )
    if isinstance(layer, nn.modules.dropout._DropoutNd) and layer.p > 0:
        return (
            f"{name}(p={layer.p}) would draw every trial's masks from one shared generator, "
            "so a trial's result would depend on its companions; remove it or set p=0"
        )
    return None


def task_splits(
    reference: str, task: Task, subset: int | None, device: torch.device | str
) -> Splits:
    """A Task's tensors as a study's splits, ``--subset`` applied as for MNIST.

    The checksums are md5s of the tensors' bytes, shapes and types: what a resumed study
    compares to refuse data that changed under it.
    """
    train_x, train_y = task.train[0][:subset], task.train[1][:subset]
    val_x, val_y = task.val[0][:subset], task.val[1][:subset]
    checksums = {"task": reference}
    for split, pair in (("train", task.train), ("val", task.val), ("test", task.test)):
        if pair is not None:
            checksums[split] = fingerprint(*pair)
    return Splits(
        train_x=train_x.float().to(device),
        train_y=train_y.long().to(device),
        val_x=val_x.float().to(device),
        val_y=val_y.long().to(device),
        validation="holdout",
        checksums=checksums,
    )


def fingerprint(*tensors: Any) -> str:
    """md5 of tensors' shapes, types and bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    for t in tensors:
        digest.update(f"{tuple(t.shape)} {t.dtype};".encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
