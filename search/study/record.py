"""The study record: what a study and its trials store, typed, with one reader and one writer.

The study database is the source of truth, and Optuna keeps what we store as JSON user
attributes. This module is the only one that knows their keys: the stored config, the run
settings, the best feasible trial, the recommendation, the test-set result and what a finished
trial says of itself. Everything else reads and writes them through the types below, so a
field's name is checked by mypy, not found by grep. It stores facts, never display text
(``search.study.notes`` renders the text when it is shown). Torch-free: export, report and
dashboard read it.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config import (
    MIN_FEASIBLE_FRACTION,
    RECORDED,
    RUN_SETTINGS,
    SIBLING_SUFFIX,
    StudyConfig,
)
from search.study.optuna_private import set_trial_system_attr

# The study user attributes: one key per fact.
CONFIG_ATTR = "config"  # StudyConfig.recorded() at creation
RUN_ATTR = "run_settings"  # RUN_SETTINGS of the latest run: the next resume's defaults
BEST_ATTR = "best_feasible_trial"  # BestTrial
RECOMMENDATION_ATTR = "recommendation"  # Recommendation
TEST_ATTR = "test_evaluation"  # TestResult

CONSTRAINT = "train_accuracy"  # the key of the trial's one constraint
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# --- trials -------------------------------------------------------------------------------


def constraint_of(trial: FrozenTrial) -> float | None:
    """The trial's constraint value (training accuracy minus the limit), None where unset."""
    value = trial.constraints.get(CONSTRAINT)
    return None if value is None else float(value)


def violation(trial: FrozenTrial) -> float | None:
    """The trial's largest constraint value (feasible when <= 0), or None if it has none."""
    constraints = trial.constraints
    return max(constraints.values()) if constraints else None


def is_feasible(trial: FrozenTrial) -> bool:
    value = violation(trial)
    return value is None or value <= 0


# The trial user attributes of a trial's stop and its other facts; ``TrialOutcome``'s fields
# are keys of their own.
STOP_REASON_ATTR = "pruned_reason"  # the sentence trial lines show (the CSV's column too)
STOP_KIND_ATTR = "stop"  # StopKind; trials from before it read it off the sentence
SEED_ATTR = "seed"
PARALLEL_ATTR = "parallel_trials"  # the pool capacity that trained it: what a replay needs
SLOT_ATTR = "pool_slot"  # ...and its slot there: the generic pool's numbers depend on it
PROJECTED_ATTR = "projected_train_accuracy"
DURATION_ATTR = "duration_s"
STOPPED_OVER_LIMIT = "infeasible"  # how the sentence of a trial stopped over the limit begins
DIVERGED = "diverged"  # ...and of one whose training loss went non-finite

StopKind = Literal["over_limit", "pruned", "diverged"]


@dataclass(frozen=True)
class Stop:
    """Why a trial ended before its last epoch: the kind, typed, and the sentence to show.

    ``over_limit``: its training accuracy passed the limit further than any recorded run came
    back from, so it is infeasible for good (docs/search-quality.md#monotone); ``pruned``: the
    pruner stopped it for its score, so whether it would have ended feasible is unknown;
    ``diverged``: its training loss went non-finite.
    """

    kind: StopKind
    reason: str

    def write(self, trial: optuna.Trial) -> None:
        trial.set_user_attr(STOP_REASON_ATTR, self.reason)
        trial.set_user_attr(STOP_KIND_ATTR, self.kind)

    @classmethod
    def read(cls, trial: FrozenTrial) -> Stop | None:
        """None for a trial that did not stop early."""
        attrs: dict[str, Any] = trial.user_attrs
        reason = attrs.get(STOP_REASON_ATTR)
        if reason is None:
            return None
        kind = attrs.get(STOP_KIND_ATTR) or legacy_stop_kind(str(reason))
        return cls(kind, str(reason))


def legacy_stop_kind(reason: str) -> StopKind:
    """The kind of a stop stored before its kind was: its sentence's first word said it."""
    if reason.startswith(STOPPED_OVER_LIMIT):
        return "over_limit"
    if reason.startswith(DIVERGED):
        return "diverged"
    return "pruned"


def stopped_over_limit(trial: FrozenTrial) -> bool:
    """Stopped because its training accuracy passed the limit: infeasible for good."""
    if trial.state != TrialState.PRUNED:
        return False
    stop = Stop.read(trial)
    return stop is not None and stop.kind == "over_limit"


def record_constraint(trial: optuna.Trial, value: float) -> None:
    """Record the constraint where both Optuna and optuna-dashboard read it.

    ``trial.set_constraint`` writes Optuna 5's ``constraints:<key>`` system attribute, which
    samplers and ``study.best_trial`` read. optuna-dashboard 0.21 shows only the legacy list
    under ``constraints``, so the value is mirrored there too; Optuna reads both, which makes
    ``trial.constraints`` hold the same value under ``train_accuracy`` and under ``0``.
    """
    trial.set_constraint(CONSTRAINT, value)
    set_trial_system_attr(trial, "constraints", [value])


def record_seed(trial: optuna.Trial, seed: int) -> None:
    trial.set_user_attr(SEED_ATTR, seed)


def trial_seed_of(trial: FrozenTrial) -> int | None:
    """The seed the trial trained with (None: a trial from outside ``search.run``)."""
    seed = trial.user_attrs.get(SEED_ATTR)
    return None if seed is None else int(seed)


def record_parallel_trials(trial: optuna.Trial, capacity: int, slot: int) -> None:
    trial.set_user_attr(PARALLEL_ATTR, capacity)
    trial.set_user_attr(SLOT_ATTR, slot)


def parallel_trials_of(trial: FrozenTrial) -> int:
    """The capacity of the pool that trained the trial; 1: the single-trial loop."""
    return int(trial.user_attrs.get(PARALLEL_ATTR, 1))


def pool_slot_of(trial: FrozenTrial) -> int | None:
    """The slot of the pool that trained the trial, where it was recorded."""
    slot = trial.user_attrs.get(SLOT_ATTR)
    return None if slot is None else int(slot)


@dataclass(frozen=True)
class Counts:
    """The study's trials by how they ended, each trial in exactly one field.

    A trial stopped by the pruner (or that diverged) is ``pruned``: it never reached its last
    epoch, so whether it would have ended feasible is unknown. One stopped over the limit is
    ``over_limit``, never also ``infeasible``: it was further over the limit than any
    recorded run came back from (docs/search-quality.md#monotone), so it is final.
    """

    feasible: int = 0  # complete, feasible
    infeasible: int = 0  # complete, over the limit
    over_limit: int = 0  # stopped early, over the limit
    pruned: int = 0  # stopped early for its score (or diverged)
    running: int = 0
    failed: int = 0

    @classmethod
    def of(cls, trials: list[FrozenTrial]) -> Counts:
        counts = {f.name: 0 for f in fields(cls)}
        for trial in trials:
            counts[trial_kind(trial)] += 1
        return cls(**counts)

    @property
    def finished(self) -> int:
        return self.feasible + self.infeasible + self.over_limit + self.pruned

    @property
    def total(self) -> int:
        return self.finished + self.running + self.failed

    def text(self) -> str:
        """``12 feasible, 0 infeasible, 38 over the limit, 0 pruned, 1 running, 0 failed``."""
        return (
            f"{self.feasible} feasible, {self.infeasible} infeasible, {self.over_limit} over "
            f"the limit, {self.pruned} pruned, {self.running} running, {self.failed} failed"
        )


def trial_kind(trial: FrozenTrial) -> str:
    """The ``Counts`` field the trial falls in (WAITING trials count as running)."""
    if trial.state == TrialState.COMPLETE:
        return "feasible" if is_feasible(trial) else "infeasible"
    if trial.state == TrialState.PRUNED:
        return "over_limit" if stopped_over_limit(trial) else "pruned"
    if trial.state == TrialState.FAIL:
        return "failed"
    return "running"


def recipe_of(trial: FrozenTrial, param: str = "weight_decay") -> dict[str, Any]:
    """The trial's values of every parameter but ``param``: the recipe whose edge it is on
    (empty unless the study searches the optimizer too)."""
    return {k: v for k, v in trial.params.items() if k != param}


@dataclass(frozen=True)
class RangeEnd:
    """The searched weight-decay range misses the feasibility edge of one recipe.

    ``side`` "above": every finished trial of the recipe that reached a verdict went over the
    limit, so the edge lies above ``--wd-high``. "below": none did, so the constraint never
    bound and the edge, if any, lies below ``--wd-low``; ``best`` is the recipe's best
    feasible trial and ``at_end`` whether it is the lowest weight decay the recipe tried
    (then the answer sits where the range stops, not where the limit does).
    """

    side: str  # "above" or "below"
    recipe: dict[str, Any]  # the recipe's other parameters ({} unless the space is full)
    best: int | None = None
    at_end: bool = False


def range_ends(trials: list[FrozenTrial]) -> list[RangeEnd]:
    """Each recipe whose finished trials show its edge outside the searched range.

    Trials are grouped by their parameters other than weight decay (one group unless the
    study searches the optimizer too). A recipe tells nothing until it holds a verdict on
    either side: a trial pruned for its accuracy or diverged is neither.
    """
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        if trial.state in FINISHED and "weight_decay" in trial.params:
            groups.setdefault(repr(recipe_of(trial)), []).append(trial)
    ends: list[RangeEnd] = []
    for group in groups.values():
        recipe = recipe_of(group[0])
        kinds = [trial_kind(t) for t in group]
        feasible = [t for t, kind in zip(group, kinds, strict=True) if kind == "feasible"]
        over = any(kind in ("infeasible", "over_limit") for kind in kinds)
        if over and not feasible:
            ends.append(RangeEnd("above", recipe))
        elif feasible and not over:
            best = max(feasible, key=lambda t: t.value if t.value is not None else -1.0)
            lowest = min(group, key=lambda t: t.params["weight_decay"])
            ends.append(RangeEnd("below", recipe, best.number, best.number == lowest.number))
    return ends


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def best_feasible_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete, feasible trial with the highest validation accuracy, if any.

    What the search found; what the study *recommends* after seed confirmation is
    ``recommended_trial``, which everything that names "the" result asks.
    """
    # Optuna's ``study.best_trial`` already skips infeasible trials; this only turns its
    # "nothing yet" errors into None.
    try:
        return study.best_trial
    except ValueError:
        return None


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished trial stored of its last epoch (``search.engine.objective`` writes it).

    ``feasible`` of a pruned trial is as of the epoch it stopped: "infeasible" there is final
    (within the measured margin, docs/search-quality.md#monotone) and "feasible" provisional.
    ``train_accuracy`` is the measure the constraint read (the study's ``train_accuracy``
    setting); both measures are stored beside it (None in studies from before).
    """

    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    feasible: bool
    epochs_run: int
    train_accuracy_running: float | None = None
    train_accuracy_final: float | None = None
    train_accuracy_measure: str | None = None  # which of the two train_accuracy is

    def write(self, trial: optuna.Trial) -> None:
        for key, value in asdict(self).items():
            trial.set_user_attr(key, value)

    @property
    def other_measure(self) -> tuple[str, float] | None:
        """The training accuracy the constraint did not read, by name; None in studies from
        before both were measured."""
        running, final = self.train_accuracy_running, self.train_accuracy_final
        if running is None or final is None:
            return None
        measure = self.train_accuracy_measure or "running"
        return ("running", running) if measure == "final" else ("final", final)

    @classmethod
    def read(cls, trial: FrozenTrial) -> TrialOutcome | None:
        """None for a trial that stored no outcome (it failed, or runs still)."""
        attrs: dict[str, Any] = trial.user_attrs
        if "val_accuracy" not in attrs:
            return None
        # A field a study from before it existed lacks reads as None.
        values: dict[str, Any] = {f.name: attrs.get(f.name) for f in fields(cls)}
        return cls(**values)

    def train_text(self) -> str:
        """The constraint's training accuracy, naming its measure, and the other measure's."""
        text = f"train_acc={self.train_accuracy:.4f}"
        other = self.other_measure
        if other is None:
            return text  # a study from before both were measured
        return f"{text} ({self.train_accuracy_measure or 'running'}; {other[0]} {other[1]:.4f})"


@dataclass(frozen=True)
class TrialFacts:
    """Everything a finished trial stored of itself, typed: what the reading commands show.

    ``outcome`` is None for a trial that stored none (it failed, diverged, or runs still);
    ``projected_train_accuracy`` is set for a trial stopped over the limit only: where it
    would have ended, which its constraint value uses (its measured training accuracy stays
    in ``outcome``).
    """

    outcome: TrialOutcome | None
    stop: Stop | None
    projected_train_accuracy: float | None
    duration_s: float | None
    seed: int | None
    parallel_trials: int

    @classmethod
    def read(cls, trial: FrozenTrial) -> TrialFacts:
        attrs: dict[str, Any] = trial.user_attrs
        return cls(
            outcome=TrialOutcome.read(trial),
            stop=Stop.read(trial),
            projected_train_accuracy=attrs.get(PROJECTED_ATTR),
            duration_s=attrs.get(DURATION_ATTR),
            seed=trial_seed_of(trial),
            parallel_trials=parallel_trials_of(trial),
        )


def record_finish(
    trial: optuna.Trial,
    duration_s: float,
    stop: Stop | None = None,
    projected: float | None = None,
) -> None:
    """A finished trial's facts beside its outcome (``TrialOutcome.write``): what it took, why
    it stopped early (if it did), and a stopped-over-the-limit trial's projection."""
    trial.set_user_attr(DURATION_ATTR, duration_s)
    if stop is not None:
        stop.write(trial)
    if projected is not None:
        trial.set_user_attr(PROJECTED_ATTR, projected)


def stored_feasible(trial: FrozenTrial) -> bool | None:
    """Whether the trial ended feasible, or None where no one can know.

    A complete trial's answer is final. One stopped early recorded ``feasible`` as of the
    epoch it stopped at: "infeasible" is final there (a trial stopped for the constraint was
    further over the limit than any recorded run came back from, docs/search-quality.md
    #monotone), but "feasible" is not: the pruner stopped it for its score before its last
    epoch, which might have passed the limit.
    """
    stored = trial.user_attrs.get("feasible")
    if trial.state == TrialState.COMPLETE or stored is False:
        return None if stored is None else bool(stored)
    return None


# A confirmation run (``search.engine.confirm``) is a trial of the sibling study that names
# the candidate it confirms and its seed index.
CONFIRMS_ATTR = "confirms"
REPLICATE_ATTR = "replicate"
RUN_DIVERGED_ATTR = "diverged"


def confirmation_run_attrs(candidate: int, replicate: int, seed: int) -> dict[str, Any]:
    """The user attributes a confirmation run is enqueued with."""
    return {CONFIRMS_ATTR: candidate, REPLICATE_ATTR: replicate, SEED_ATTR: seed}


def confirmation_run_of(trial: FrozenTrial) -> tuple[int, int]:
    """(candidate trial number, seed index) of a confirmation run."""
    return int(trial.user_attrs[CONFIRMS_ATTR]), int(trial.user_attrs[REPLICATE_ATTR])


def record_run_diverged(trial: optuna.Trial, message: str) -> None:
    trial.set_user_attr(RUN_DIVERGED_ATTR, message)


def trial_val_accuracy(trial: FrozenTrial) -> float:
    """The trial's final validation accuracy (its value, for a complete trial)."""
    value: Any = trial.user_attrs.get("val_accuracy", trial.value)
    return float(value)


# --- the stored config --------------------------------------------------------------------


def recorded_settings(study: optuna.Study) -> dict[str, Any]:
    """The ``StudyConfig.recorded()`` fields the study was created with (empty for a foreign
    study); a resume must agree with them."""
    return dict(study.user_attrs.get(CONFIG_ATTR, {}))


def stored_settings(study: optuna.Study) -> dict[str, Any]:
    """What a study stored of its settings: its recorded config and its latest run settings."""
    return {**study.user_attrs.get(RUN_ATTR, {}), **recorded_settings(study)}


def stored_config(study: optuna.Study, storage: str | None = None) -> StudyConfig | None:
    """The study's config: the defaults, overridden by what the study stored; None for a
    study that stored none (not made by ``search.run``).

    A field an older study did not store keeps its default (``validation`` and the optimizer
    were added later: those studies validated on the holdout and used Adam, the defaults).
    """
    if CONFIG_ATTR not in study.user_attrs:
        return None
    known = {k: v for k, v in stored_settings(study).items() if k in (*RECORDED, *RUN_SETTINGS)}
    return StudyConfig(study_name=study.study_name, storage=storage).replace(**known)


def record_config(study: optuna.Study, config: StudyConfig) -> bool:
    """Store ``config`` on a new study; False if the study already stored one."""
    if CONFIG_ATTR in study.user_attrs:
        return False
    study.set_user_attr(CONFIG_ATTR, config.recorded())
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and still there
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_accuracy"])  # the dashboard's axis, not "Objective 0"
    return True


def record_run_settings(study: optuna.Study, config: StudyConfig) -> None:
    """Store the budget, sampler and pruner this run uses: the next resume's defaults."""
    settings = {key: getattr(config, key) for key in RUN_SETTINGS}
    if study.user_attrs.get(RUN_ATTR) != settings:
        study.set_user_attr(RUN_ATTR, settings)


# --- the best feasible trial --------------------------------------------------------------


@dataclass(frozen=True)
class BestTrial:
    """The best feasible trial, stored on the study: optuna-dashboard's Best Trial card
    ignores feasibility, so the study names it itself."""

    number: int
    weight_decay: float
    val_accuracy: float | None
    train_accuracy: float | None

    @classmethod
    def of(cls, trial: FrozenTrial) -> BestTrial:
        return cls(
            number=trial.number,
            weight_decay=trial.params["weight_decay"],
            val_accuracy=trial.user_attrs.get("val_accuracy"),
            train_accuracy=trial.user_attrs.get("train_accuracy"),
        )


def stored_best(study: optuna.Study) -> BestTrial | None:
    stored = study.user_attrs.get(BEST_ATTR)
    return None if stored is None else BestTrial(**stored)


def record_best_feasible(study: optuna.Study) -> bool:
    """Store the best feasible trial on the study; True if that changed what was stored."""
    best = best_feasible_trial(study)
    if best is None:
        return False
    stored = stored_best(study)
    if stored is not None and stored.number == best.number:
        return False
    study.set_user_attr(BEST_ATTR, asdict(BestTrial.of(best)))
    return True


# --- the recommendation -------------------------------------------------------------------


def confirm_study_name(study_name: str) -> str:
    return study_name + SIBLING_SUFFIX  # the sibling study that holds the confirmation runs


@dataclass(frozen=True)
class Candidate:
    """One candidate trial's confirmation: its R runs with seeds of their own."""

    trial: int
    weight_decay: float
    confirm_seeds: int
    val_accuracy_mean: float
    val_accuracy_std: float
    train_accuracy_mean: float
    feasible_fraction: float
    # The spread of its runs' training accuracy (the constraint's measure): with the other
    # candidates' it bounds where a further seed would land (``search.engine.choose``).
    train_accuracy_std: float = 0.0

    @property
    def holds(self) -> bool:
        """Feasible in enough of its seeds to be recommended as confirmed."""
        return self.feasible_fraction >= MIN_FEASIBLE_FRACTION

    @classmethod
    def from_runs(
        cls,
        trial: int,
        weight_decay: float,
        runs: list[tuple[float, float]],
        seeds: int,
        limit: float,
    ) -> Candidate:
        """``runs``: (train accuracy, validation accuracy) of each of the ``seeds`` runs that
        finished; one that did not (it diverged) counts as infeasible."""
        train = [t for t, _ in runs]
        val = [v for _, v in runs]
        nan = float("nan")
        return cls(
            trial=trial,
            weight_decay=weight_decay,
            confirm_seeds=seeds,
            val_accuracy_mean=statistics.fmean(val) if val else nan,
            val_accuracy_std=statistics.stdev(val) if len(val) > 1 else 0.0,
            train_accuracy_mean=statistics.fmean(train) if train else nan,
            feasible_fraction=sum(t <= limit for t in train) / seeds,
            train_accuracy_std=statistics.stdev(train) if len(train) > 1 else 0.0,
        )


@dataclass(frozen=True)
class Recommendation:
    """The trial to ship after seed confirmation, the candidates it was chosen from, and what
    confirming cost. Stored flat (the chosen candidate's fields at the top level), as before
    this type existed, so older studies read back alike."""

    choice: Candidate
    confirmed: bool  # the choice held the limit in at least min_feasible_fraction of its seeds
    min_feasible_fraction: float
    best_trial: int | None  # the best feasible trial it was confirmed against
    candidates: tuple[Candidate, ...]
    confirm_study: str
    confirm_runs: int  # runs trained by the run that confirmed (0: all were there already)
    confirm_seconds: float  # what they cost it
    # When that run was (UTC, to the minute) and how many trials the study had finished then:
    # a later run that reuses the runs says which confirmation it rests on. None: older study.
    confirmed_at: str | None = None
    confirmed_after: int | None = None
    measure: str = "running"  # the training accuracy the limit was held on

    @property
    def trial(self) -> int:
        return self.choice.trial

    @property
    def held(self) -> int:
        """In how many of its further seeds the choice was feasible."""
        return round(self.choice.feasible_fraction * self.choice.confirm_seeds)

    def as_attr(self) -> dict[str, Any]:
        return {
            **asdict(self.choice),
            "confirmed": self.confirmed,
            "min_feasible_fraction": self.min_feasible_fraction,
            "best_trial": self.best_trial,
            "candidates": [asdict(c) for c in self.candidates],
            "confirm_study": self.confirm_study,
            "confirm_runs": self.confirm_runs,
            "confirm_seconds": self.confirm_seconds,
            # Only where known: a study from before these fields reads and writes as it was.
            **({} if self.confirmed_at is None else {"confirmed_at": self.confirmed_at}),
            **({} if self.confirmed_after is None else {"confirmed_after": self.confirmed_after}),
            # Only where it is not the default: older studies read and write as they were.
            **({} if self.measure == "running" else {"measure": self.measure}),
        }

    @classmethod
    def from_attr(cls, stored: dict[str, Any]) -> Recommendation:
        choice = candidate_from_attr(stored)
        return cls(
            choice=choice,
            confirmed=stored["confirmed"],
            min_feasible_fraction=stored.get("min_feasible_fraction", MIN_FEASIBLE_FRACTION),
            best_trial=stored.get("best_trial"),
            candidates=tuple(candidate_from_attr(c) for c in stored.get("candidates", [])),
            confirm_study=stored["confirm_study"],
            confirm_runs=stored["confirm_runs"],
            confirm_seconds=stored["confirm_seconds"],
            confirmed_at=stored.get("confirmed_at"),
            confirmed_after=stored.get("confirmed_after"),
            measure=stored.get("measure", "running"),
        )


def candidate_from_attr(stored: dict[str, Any]) -> Candidate:
    """A stored candidate; a field added since (its runs' spread) keeps its default."""
    known = {f.name: stored[f.name] for f in fields(Candidate) if f.name in stored}
    return Candidate(**known)


def record_recommendation(study: optuna.Study, recommendation: Recommendation) -> None:
    study.set_user_attr(RECOMMENDATION_ATTR, recommendation.as_attr())


def stored_recommendation(study: optuna.Study) -> Recommendation | None:
    """The stored recommendation if it is current: confirmed against today's best trial.

    A resumed study may have found a better trial since; the old confirmation is then stale
    and ``search.run`` confirms again.
    """
    stored = study.user_attrs.get(RECOMMENDATION_ATTR)
    best = best_feasible_trial(study)
    if stored is None or best is None or stored.get("best_trial") != best.number:
        return None
    return Recommendation.from_attr(stored)


def last_recommendation(study: optuna.Study) -> Recommendation | None:
    """The recommendation stored last, current or stale: what an earlier confirmation cost."""
    stored = study.user_attrs.get(RECOMMENDATION_ATTR)
    return None if stored is None else Recommendation.from_attr(stored)


def recommended_trial(study: optuna.Study) -> FrozenTrial | None:
    """The trial to ship: the confirmed recommendation, else the best feasible trial."""
    stored = stored_recommendation(study)
    if stored is None:
        return best_feasible_trial(study)
    return study.get_trials(deepcopy=False)[stored.trial]


# --- the test-set result ------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """The recommended trial's test-set figure, stored by ``search.evaluate``."""

    __test__ = False  # not a pytest class, whatever its name

    trial: int
    weight_decay: float
    val_accuracy: float | None
    test_accuracy: float
    test_loss: float
    test_images: int
    selected_on_test: bool  # the study validated on the test set: no unbiased figure

    def as_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attr(cls, stored: dict[str, Any]) -> TestResult:
        values: dict[str, Any] = {f.name: stored.get(f.name) for f in fields(cls)}
        return cls(**values)


def record_test_result(study: optuna.Study, result: TestResult) -> None:
    study.set_user_attr(TEST_ATTR, result.as_attr())


def stored_test_result(study: optuna.Study) -> TestResult | None:
    """The study's test-set result if it belongs to the trial recommended now.

    A resumed study may have found a better trial since; its old test figure is then stale.
    """
    stored = study.user_attrs.get(TEST_ATTR)
    best = recommended_trial(study)
    if stored is None or best is None or stored.get("trial") != best.number:
        return None
    return TestResult.from_attr(stored)
