"""Every default of a study, in one frozen object.

The CLI, the tests, the benchmark and the README read their defaults from here, so a default
changes in one place only. A field carries its flag's name: ``--max-train-acc`` fills
``StudyConfig.max_train_acc``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from search.recipe import OPTIMIZERS as OPTIMIZERS  # the flag's choices, one per entry
from search.recipe import OptimizerName, Recipe

Validation = Literal["holdout", "test"]
SamplerName = Literal["edge", "tpe", "random", "gp"]
PrunerName = Literal["median", "hyperband", "none"]
TaskName = Literal["mnist", "synthetic"]
# The tasks with a test split of their own: a study validates on held-out training images
# unless it runs with --validation test (as the seed experiment did), and search.evaluate
# scores a recommendation there. The synthetic table has none; it validates on 200 held-out rows.
TASKS_WITH_TEST_SET: frozenset[str] = frozenset({"mnist"})


def examples_noun(task: str | None) -> str:
    """What a sentence calls a task's examples: MNIST's are images, the table's are rows and a
    user Task's (``FILE.py:NAME``) are examples; None, a study recorded before tasks, is MNIST."""
    return {"mnist": "images", "synthetic": "rows"}.get(task or "mnist", "examples")


SearchSpace = Literal["weight_decay", "full"]
# Which training accuracy the constraint reads: "running", the seed's (each batch scored by the
# weights before its own update, averaged over the epoch), or "final", the end-of-epoch
# weights scored on the whole training split.
TrainMeasure = Literal["running", "final"]

Device = Literal["auto", "cpu", "cuda"]

# The choices of each flag, read off its type: one list to change.
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
PRUNERS: tuple[str, ...] = get_args(PrunerName)
VALIDATIONS: tuple[str, ...] = get_args(Validation)
DEVICES: tuple[str, ...] = get_args(Device)
TASKS: tuple[str, ...] = get_args(TaskName)
SEARCH_SPACES: tuple[str, ...] = get_args(SearchSpace)
TRAIN_MEASURES: tuple[str, ...] = get_args(TrainMeasure)
# How a sentence names each: every line that names the constraint says which one it reads.
MEASURE_NAMES: dict[str, str] = {
    "running": "running training accuracy",
    "final": "final weights' training accuracy",
}

STUDIES_DIR = Path("studies")

# Optuna's heartbeat grace period: long enough for any step between beats, short enough that a
# trial is judged dead within a minute of its worker's death.
MAX_GRACE_PERIOD_S = 60
# SQLite lets one writer at a time in; with write-ahead logging and a 60 s busy timeout a few
# workers writing a handful of rows per epoch wait only briefly for each other. This cap is a
# conservative line, not a measured limit: beyond it, or across machines (SQLite's locks don't
# hold over network filesystems), PostgreSQL is the storage to use.
SQLITE_MAX_WORKERS = 8

# What a study name may be: it names files under studies/ (the SQLite file, exports, reports),
# so nothing that could leave the folder, hide a file or read as a flag. Optuna itself takes any
# string; these are the characters of a file name every system and shell take as they are.
STUDY_NAME_MAX = 64
STUDY_NAME_CHARS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# A study's confirmation runs go into a sibling study of this suffix, which may exceed the
# length by as much, so every valid name has a valid sibling.
SIBLING_SUFFIX = "-confirm"
STUDY_NAME_RULE = (
    f"1 to {STUDY_NAME_MAX} letters, digits, '.', '_' or '-', not starting with '.' or '-'"
)

# The seed confirmation's policy, in one place: ``search.engine.choose`` applies it, the record
# stores it with each recommendation, and --confirm-seeds' and --confirm-candidates' help
# text (``search.cli``) is written from it.
# A candidate holds when at least this share of its confirmation runs is feasible ...
MIN_FEASIBLE_FRACTION = 0.8
# ... and a further seed is this likely to hold the limit: the one-sided prediction bound of
# the confirmation runs at this level stays within it. A weight decay whose seeds hold the
# limit 90% of the time or more passes 7 of 8 fresh seeds most of the time; one just over its
# edge, feasible in all 4 confirmation seeds by luck, does not pass (docs/search-quality.md:
# what that level costs on the final weights' measure).
HOLD_CONFIDENCE = 0.9
# Rounds of confirmation at most: when none of a round's candidates holds, the next ones
# inwards are confirmed, up to this many rounds.
MAX_ROUNDS = 3


def study_name_problem(name: str) -> str | None:
    """Why ``name`` can't name a study (see ``STUDY_NAME_RULE``), or None when it can."""
    if not STUDY_NAME_CHARS.fullmatch(name) or not name.isascii():
        return f"a study name is {STUDY_NAME_RULE}"
    if len(name.removesuffix(SIBLING_SUFFIX)) > STUDY_NAME_MAX:
        return f"a study name is at most {STUDY_NAME_MAX} characters"
    return None


# The seed experiment's training recipe (../shared/seeds/000_*.txt).
SEED_EPOCHS = 10
SEED_BATCH_SIZE = 64
SEED_LR = 1e-3

# Images held out of the 60,000 official training images for validation, and the seed of that
# split. The split seed is fixed, not the study seed: every study sees the same validation set,
# so studies with different seeds are comparable.
HOLDOUT_SIZE = 10_000
HOLDOUT_SEED = 0

# The study seed seeds NumPy's generators (the samplers'), which take 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1
# The smallest --subset: validation takes at most as many images, and on fewer than 100 one
# image moves the accuracy by more than a percent (on 1, every trial scores 0 or 1).
MIN_SUBSET = 100

# Trials side by side on a GPU by default: the stacked model of 64 trials is still small
# (64 x 101,770 float32 parameters: about 26 MB of weights, about 80 MB with Adam's two
# moments), and fewer slots leave the GPU idle between kernels.
CUDA_PARALLEL_TRIALS = 64

# On the CPU, `python -m search.bench` puts 16 and 32 slots close together and 8 below them
# (docs/speed.md). 16 is the smaller of the fast ones: the sampler sees results sooner (with
# 32, 32 of the 50 trials are proposed before any has finished).
CPU_PARALLEL_TRIALS = 16


@dataclass(frozen=True)
class StudyConfig:
    """What a study is: the search space, the training recipe and where the trials land."""

    study_name: str = "mnist-weight-decay"
    storage: str | None = None  # None: sqlite:///studies/<study_name>.db
    artifacts: Path | None = None  # trials' weights; None: artifacts/ beside a SQLite study
    trials: int = 50
    timeout: float | None = None

    wd_low: float = 1e-6
    wd_high: float = 1e-1
    max_train_acc: float = 0.95
    train_accuracy: TrainMeasure = "running"  # the measure max_train_acc limits
    constraint_pruning: bool = True

    epochs: int = SEED_EPOCHS
    batch_size: int = SEED_BATCH_SIZE
    lr: float = SEED_LR
    # Adam with decay on every parameter is what the seed does and what PyTorch does by default;
    # search_space "full" lets the study choose these two instead of fixing them.
    optimizer: OptimizerName = "adam"
    decay_biases: bool = True
    search_space: SearchSpace = "weight_decay"

    # edge: TPE that bisects the feasibility edge next to the best feasible trial
    # (search.engine.sampling); tpe, random, gp: Optuna's own samplers as they come.
    sampler: SamplerName = "edge"
    pruner: PrunerName = "median"  # against the feasible trials' median (search.engine.sampling)
    seed: int = 0

    # synthetic: the pipeline seed's 1,000-row table (data.synthetic); any other value is a
    # user's search.Task, FILE.py:NAME or package.module:NAME (search.data.task).
    task: str = "mnist"
    validation: Validation = "holdout"
    data_dir: Path = Path("data")
    subset: int | None = None  # first N training images only: quick runs and tests
    device: str = "auto"
    parallel_trials: int | None = None  # trials trained side by side; None: chosen by device

    # Seed confirmation (search.engine.confirm). Not recorded(): it adds runs beside the study's
    # trials and changes none of them.
    confirm_seeds: int = 4  # further seeds each candidate is retrained with; 0: no confirmation
    confirm_candidates: int = 3  # the best feasible trials confirmed

    # Many workers on one study (search.engine.workers). Not recorded(): how a study is run doesn't
    # change its results.
    workers: int = 1  # processes on this machine, each running trials of the study
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 30  # seconds without one before a trial counts as dead (at most 60)
    db_retry: int = 60  # seconds a worker waits out an unreachable database before it ends
    quiet: bool = False  # no progress display (search.reporting.progress)

    @property
    def storage_url(self) -> str:
        """The SQLAlchemy URL the study lives at; SQLite under ``studies/`` unless told."""
        if self.storage is not None:
            return self.storage
        return f"sqlite:///{STUDIES_DIR / (self.study_name + '.db')}"

    def recorded(self) -> dict[str, Any]:
        """The fields that define a study's results, stored on the study when it is created.

        A resumed study must agree with these, or its trials would not be comparable.
        """
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "decay_biases": self.decay_biases,
            "search_space": self.search_space,
            "wd_low": self.wd_low,
            "wd_high": self.wd_high,
            "max_train_acc": self.max_train_acc,
            "train_accuracy": self.train_accuracy,
            "task": self.task,
            "validation": self.validation,
            "subset": self.subset,
            "seed": self.seed,
        }

    def recipe(
        self,
        weight_decay: float,
        optimizer: OptimizerName | None = None,
        decay_biases: bool | None = None,
    ) -> Recipe:
        """The study's recipe at ``weight_decay``, with a trial's own optimizer and bias rule
        where the study searches them (``--search-space full``)."""
        return Recipe(
            weight_decay=weight_decay,
            lr=self.lr,
            optimizer=self.optimizer if optimizer is None else optimizer,
            decay_biases=self.decay_biases if decay_biases is None else decay_biases,
        )

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)


DEFAULTS = StudyConfig()

# The fields a study stores when it is created (``StudyConfig.recorded``): a resume takes them
# from the study, and a flag given that contradicts one is refused.
RECORDED: tuple[str, ...] = tuple(DEFAULTS.recorded())
# How a study is run, stored too and taken on resume unless given, but free to change: the
# budget (a larger --trials extends the study), the sampler, the pruner.
RUN_SETTINGS: tuple[str, ...] = ("trials", "sampler", "pruner", "constraint_pruning")


def flag_of(field: str) -> str:
    """The command-line flag that sets a ``StudyConfig`` field: ``max_train_acc`` ->
    ``--max-train-acc``."""
    if field == "constraint_pruning":
        return "--no-constraint-pruning"
    return "--" + field.replace("_", "-")
