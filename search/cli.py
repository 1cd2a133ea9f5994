"""What every command shares: one-line argument errors, typed flag values, and the catalogue
of flags (``FLAGS``): each shared flag declared once, its default from ``StudyConfig``.

A user's mistake is one line naming the flag and the fix, and exit status 2; never a
traceback, and never a study changed on the way.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import (
    CPU_PARALLEL_TRIALS,
    CUDA_PARALLEL_TRIALS,
    DEFAULTS,
    DEVICES,
    HOLD_CONFIDENCE,
    MAX_GRACE_PERIOD_S,
    MAX_ROUNDS,
    MIN_FEASIBLE_FRACTION,
    OPTIMIZERS,
    PRUNERS,
    RECORDED,
    RUN_SETTINGS,
    SAMPLERS,
    SEARCH_SPACES,
    TRAIN_MEASURES,
    VALIDATIONS,
    StudyConfig,
    flag_of,
)

# Parser: argparse with one-line errors, defined beside UserError for the data wing too.
from search.errors import USAGE_ERROR as USAGE_ERROR
from search.errors import Parser as Parser
from search.errors import directory as directory
from search.flag_values import (
    fraction,
    grace_period,
    non_negative_int,
    positive_float,
    positive_int,
    seed,
    storage,
    study_name,
    subset,
    task_reference,
)
from search.signals import run_command as run_command  # what every command ends with


def _percent(share: float) -> str:
    """A share as argparse help text writes a percentage (its % doubled)."""
    return f"{share:.0%}".replace("%", "%%")


@dataclass(frozen=True)
class Flag:
    """One flag of the catalogue: its argparse options, and a help text whose ``{default}`` is
    filled in with the command's default, or this one (a new study's, from ``DEFAULTS``) where
    the command's is None."""

    name: str
    options: dict[str, Any]
    help: str
    default: Any = None  # shown in the help as {default}, and the default unless overridden


def _flags(*flags: Flag) -> dict[str, Flag]:
    return {flag.name: flag for flag in flags}


d = DEFAULTS
# Every flag that more than one command takes, or that sets a ``StudyConfig`` field: declared
# here once, so its type, help and default read alike in every command.
FLAGS = _flags(
    Flag(
        "--study-name",
        dict(type=study_name, metavar="NAME"),
        "name of the study in the storage; search.run --task FILE.py:NAME names it "
        "<task name>-weight-decay (default: {default})",
        d.study_name,
    ),
    Flag(
        "--storage",
        dict(type=storage, metavar="URL"),
        "SQLAlchemy URL of the study's database, e.g. postgresql://user@host/db "
        "(default: sqlite:///studies/<study-name>.db)",
    ),
    Flag(
        "--trials",
        dict(type=positive_int, metavar="N"),
        "total trials in the study, counted across re-runs: a re-run resumes up to N "
        "(default: {default})",
        d.trials,
    ),
    Flag(
        "--timeout",
        dict(type=positive_float, metavar="S"),
        "stop starting trials after S seconds (default: no limit)",
    ),
    Flag(
        "--wd-low",
        dict(type=positive_float, metavar="X"),
        "lowest weight decay, log-uniform range (default: {default})",
        d.wd_low,
    ),
    Flag(
        "--wd-high",
        dict(type=positive_float, metavar="X"),
        "highest weight decay (default: {default})",
        d.wd_high,
    ),
    Flag(
        "--max-train-acc",
        dict(type=fraction, metavar="F"),
        "constraint: the last epoch's training accuracy (the measure --train-accuracy "
        "names) must stay at or under F (default: {default})",
        d.max_train_acc,
    ),
    Flag(
        "--train-accuracy",
        dict(choices=TRAIN_MEASURES),
        "which training accuracy the constraint reads: running (the seed's: each batch "
        "scored before its update, over the epoch) or final (the epoch's final weights on "
        "the whole training split) (default: {default})",
        d.train_accuracy,
    ),
    Flag(
        "--no-constraint-pruning",
        dict(dest="constraint_pruning", action="store_false"),
        "train infeasible trials to the end instead of stopping them once their training "
        "accuracy passes the limit",
    ),
    Flag(
        "--epochs",
        dict(type=positive_int, metavar="N"),
        "epochs per trial (default: {default})",
        d.epochs,
    ),
    Flag(
        "--batch-size",
        dict(type=positive_int, metavar="N"),
        "training batch size (default: {default})",
        d.batch_size,
    ),
    Flag(
        "--lr",
        dict(type=positive_float, metavar="X"),
        "learning rate of the optimizer (default: {default})",
        d.lr,
    ),
    Flag(
        "--optimizer",
        dict(choices=OPTIMIZERS),
        "adam: weight decay is an L2 term added to the gradient (the seed's); adamw: "
        "decoupled decay, param -= lr * wd * param; sgd: SGD with momentum 0.9 at the same "
        "--lr, which at 1e-3 learns far slower than Adam (default: {default})",
        d.optimizer,
    ),
    Flag(
        "--decay-biases",
        dict(action=argparse.BooleanOptionalAction),
        "apply weight decay to biases and normalisation parameters too, as PyTorch does "
        "by default; --no-decay-biases decays only weight matrices (default: {default})",
        d.decay_biases,
    ),
    Flag(
        "--search-space",
        dict(choices=SEARCH_SPACES),
        "weight_decay: search the weight decay alone; full: the study also chooses "
        "--optimizer and --decay-biases, and those flags are ignored (default: {default})",
        d.search_space,
    ),
    Flag("--sampler", dict(choices=SAMPLERS), "Optuna sampler (default: {default})", d.sampler),
    Flag(
        "--pruner",
        dict(choices=PRUNERS),
        "Optuna pruner on per-epoch validation accuracy (default: {default})",
        d.pruner,
    ),
    Flag(
        "--seed",
        dict(type=seed),
        "seed of the sampler, the initial weights and the batch orders (default: {default})",
        d.seed,
    ),
    Flag(
        "--task",
        dict(type=task_reference, metavar="TASK"),
        "mnist: the seed's MNIST MLP; synthetic: the seed pipeline's 1,000-row table of 10 "
        "features and a binary label, 800 rows train and 200 validate; FILE.py:NAME or "
        "package.module:NAME: your own search.Task (docs/your-own-model.md) (default: {default})",
        d.task,
    ),
    Flag(
        "--validation",
        dict(choices=VALIDATIONS),
        "holdout: 10,000 of the training images; test: the official test set, as the seed "
        "experiment does (default: {default})",
        d.validation,
    ),
    Flag(
        "--data-dir",
        dict(type=directory, metavar="DIR"),
        "where MNIST lives in torchvision's layout, DIR/MNIST/raw (default: {default})",
        d.data_dir,
    ),
    Flag(
        "--artifacts",
        dict(type=directory, metavar="DIR"),
        "folder of the trials' model weights (default: artifacts/ beside a SQLite study, "
        "else studies/artifacts)",
    ),
    Flag(
        "--subset",
        dict(type=subset, metavar="N"),
        "train on the first N training images only (and validate on at most N), for quick "
        "runs (default: all)",
    ),
    Flag(
        "--device",
        dict(choices=DEVICES),
        "auto: CUDA when present, else CPU (default: {default})",
        d.device,
    ),
    Flag(
        "--parallel-trials",
        dict(type=positive_int, metavar="K"),
        "trials trained side by side as one stacked model, every recipe alike; 1 trains one "
        f"at a time (default: {CPU_PARALLEL_TRIALS} on a CPU, {CUDA_PARALLEL_TRIALS} on a GPU)",
    ),
    Flag(
        "--confirm-seeds",
        dict(type=non_negative_int, metavar="R"),
        "after the search, retrain the best candidates with R further seeds each and "
        f"recommend the best one that held the limit in at least {_percent(MIN_FEASIBLE_FRACTION)}"
        f" of them, with a further seed's one-sided {_percent(HOLD_CONFIDENCE)} prediction "
        "bound within it; 0: no confirmation (default: {default})",
        d.confirm_seeds,
    ),
    Flag(
        "--confirm-candidates",
        dict(type=positive_int, metavar="N"),
        "feasible trials confirmed per round, best expected validation accuracy first; the "
        f"next N inwards only if none held the limit, up to {MAX_ROUNDS} rounds "
        "(default: {default})",
        d.confirm_candidates,
    ),
    Flag(
        "--workers",
        dict(type=positive_int, metavar="N"),
        "processes on this machine running trials of the study, sharing its --trials budget; "
        "the same command on other machines with the same PostgreSQL --storage joins them "
        "(default: {default})",
        d.workers,
    ),
    Flag(
        "--heartbeat-interval",
        dict(type=positive_int, metavar="S"),
        "a running trial records a heartbeat in the study every S seconds (default: {default})",
        d.heartbeat_interval,
    ),
    Flag(
        "--grace-period",
        dict(type=grace_period, metavar="S"),
        "a running trial whose last heartbeat is older than S seconds (its worker died) is "
        "marked failed and its parameters are tried again by the next worker or run; at "
        f"most {MAX_GRACE_PERIOD_S} (default: {{default}})",
        d.grace_period,
    ),
    Flag(
        "--db-retry",
        dict(type=non_negative_int, metavar="S"),
        "when the study's database server goes away (a restart, a failover), every worker "
        "waits for it and reconnects for up to S seconds, then ends with one line (finished "
        "trials kept); 0 ends at once (default: {default})",
        d.db_retry,
    ),
    Flag(
        "--quiet",
        dict(action="store_true"),
        "no progress display: no live bar on a terminal, no progress lines elsewhere",
    ),
)
del d

UNSET: Any = object()


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *names: str,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add the catalogue's ``names`` (``"--seed"``) to ``parser``, in that order.

    ``defaults`` sets a flag's default for this command: None for the flags a resumed study
    takes from what it stored, so that a flag left out can be told from one given; the help
    then shows the catalogue's (a new study's) default.
    """
    for name in names:
        flag = FLAGS[name]
        default = (defaults or {}).get(name, UNSET)
        default = flag.default if default is UNSET else default
        if flag.options.get("action") == "store_true":
            default = False if default is None else default
        shown = flag.default if default is None else default
        parser.add_argument(
            name, default=default, help=flag.help.format(default=shown), **flag.options
        )


def add_study_flags(parser: argparse.ArgumentParser) -> None:
    """``--study-name`` and ``--storage``, the pair every command that reads a study takes."""
    add_flags(parser, "--study-name", "--storage")


def storage_url(args: argparse.Namespace) -> str:
    """The URL ``--storage`` and ``--study-name`` point at: ``--storage``, or the study's file."""
    return StudyConfig(study_name=args.study_name, storage=args.storage).storage_url


# The flags in --help's order. Those a resumed study takes from what it stored default to
# None here, so that a flag left out can be told from one given (``settle_config``).
RUN_FLAGS = (
    "--trials", "--timeout", "--study-name", "--storage", "--wd-low", "--wd-high",
    "--max-train-acc", "--train-accuracy", "--no-constraint-pruning", "--epochs", "--batch-size",
    "--lr", "--optimizer", "--decay-biases", "--search-space", "--sampler", "--pruner", "--seed",
    "--task", "--validation", "--data-dir", "--artifacts", "--subset", "--device",
    "--parallel-trials", "--confirm-seeds", "--confirm-candidates", "--workers",
    "--heartbeat-interval", "--grace-period", "--db-retry", "--quiet",
)  # fmt: skip
STORED = {flag_of(key) for key in (*RECORDED, *RUN_SETTINGS)}


def build_run_parser() -> argparse.ArgumentParser:
    """``python -m search.run``'s parser: also what the quality bench reads the flags after its
    ``--`` with, so that no command imports another."""
    parser = Parser(
        prog="python -m search.run",
        description="Search the weight decay of the seed's MNIST MLP with Optuna: maximize "
        "validation accuracy while training accuracy stays under a limit. An existing study "
        "resumes with the settings it stored: `--study-name NAME` alone continues it, "
        "`--trials N` above its budget extends it; a flag that contradicts a stored setting "
        "is refused. The defaults below are a new study's.",
    )
    add_flags(parser, *RUN_FLAGS, defaults=dict.fromkeys(STORED))
    return parser


def run_flags_config(run_args: list[str], data_dir: Path) -> StudyConfig:
    """The defaults with the flags of ``python -m search.run`` in ``run_args`` applied: the
    study the quality bench measures, read as ``search.run`` would read its flags."""
    args = build_run_parser().parse_args(run_args)
    given = {key: value for key, value in vars(args).items() if value is not None}
    return DEFAULTS.replace(**given).replace(data_dir=data_dir)
