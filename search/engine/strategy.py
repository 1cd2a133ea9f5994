"""Which sampler and pruner a config names, built for a new or a resumed study.

The record (``search.study.study``) opens studies with what this module builds; the sampler
and pruner themselves are in ``search.engine.sampling``.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage

from search.config import CPU_PARALLEL_TRIALS, StudyConfig
from search.engine.sampling import ConstrainedMedianPruner, EdgeSampler
from search.study.study import create_study
from search.training.seeds import derive_seed

# Median pruning: wait for this many complete trials before pruning anything, and never judge a
# trial on its first epochs, where a strongly regularised trial that learns slowly but ends well
# would look worse than the trials that finished. The warm-up is 30% of a trial's epochs and at
# least 3 epochs: 3 of the seed's 10, 90 of a 300-epoch run on the small synthetic table.
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_EPOCHS = 3
MEDIAN_WARMUP_FRACTION = 0.3

# The edge sampler's QMC start is never shorter than TPE's own random start.
EDGE_STARTUP_MIN = 10


def make_sampler(config: StudyConfig, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    """Samplers see feasibility through ``trial.set_constraint``; no ``constraints_func``.

    A new study's sampler is seeded with the study seed. A resumed one is seeded with
    (study seed, trials so far): seeded alike, it would propose again the very values the
    interrupted run began with.
    """
    seed = config.seed if trials_so_far == 0 else derive_seed(config.seed, trials_so_far)
    if config.sampler == "edge":
        return edge_sampler(config, seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"unknown sampler {config.sampler!r}")


def edge_sampler(config: StudyConfig, seed: int) -> EdgeSampler:
    """TPE with the constant liar, edge bisection on top, and a QMC start.

    The first trials, asked all at once by the pool, are spread evenly by a scrambled Sobol
    sequence rather than drawn at random: random draws leave gaps of a decade that the edge
    can hide in. A start of 16 (a CPU pool's worth) spaces five decades 0.3 decades apart.
    """
    n_startup = max(EDGE_STARTUP_MIN, min(CPU_PARALLEL_TRIALS, config.trials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # QMCSampler is "experimental"
        startup = optuna.samplers.QMCSampler(
            scramble=True,
            seed=seed,
            warn_independent_sampling=False,
            warn_asynchronous_seeding=False,
        )
    base = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    # Weight decay lowers training accuracy, in expectation: the feasible side is above.
    return EdgeSampler(base, startup, n_startup, param="weight_decay", direction=1)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        warmup = max(MEDIAN_WARMUP_EPOCHS, int(MEDIAN_WARMUP_FRACTION * config.epochs))
        # Steps are epochs from 1; the pruner judges a step when step >= n_warmup_steps.
        return ConstrainedMedianPruner(MEDIAN_STARTUP_TRIALS, warmup + 1)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs)
    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {config.pruner!r}")


def new_study(
    storage: BaseStorage, config: StudyConfig, study_attrs: dict[str, Any]
) -> optuna.Study:
    """A new study of ``config`` (or the existing one of its name), with the sampler and pruner
    the config names: ``search.study.study.create_study`` with the engine's strategy."""
    return create_study(storage, config, study_attrs, make_sampler(config), make_pruner(config))
