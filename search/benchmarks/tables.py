"""What the benchmarks print. ``python -m search.bench``: the trial-epoch convention, the
recipes timed beside the seed's, and its two tables; ``python -m search.bench quality``: a
row per real study. Torch-free: the commands' ``--help`` and their tables need no PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from search.config import DEFAULTS

SEED_TRAIN_IMAGES = 60_000
STEPS_PER_TRIAL_EPOCH = math.ceil(SEED_TRAIN_IMAGES / DEFAULTS.batch_size)  # 938
# Multiply-adds of SimpleNN per image: 784*128 + 128*10 weights; forward 2 FLOPs each,
# backward 4 (gradients of the inputs and of the weights).
FLOPS_PER_IMAGE = 6 * (28 * 28 * 128 + 128 * 10)
FLOPS_PER_TRIAL_EPOCH = FLOPS_PER_IMAGE * SEED_TRAIN_IMAGES

# The recipes timed beside the seed's: what each changes from the defaults.
RECIPES: dict[str, dict[str, Any]] = {
    "seed: Adam, L2 on every parameter": {},
    "AdamW (decoupled decay)": {"optimizer": "adamw"},
    "SGD, momentum 0.9": {"optimizer": "sgd"},
    "Adam, biases undecayed": {"decay_biases": False},
    "--search-space full (6 mixed)": {"search_space": "full"},
    "synthetic task (10-256-2)": {"task": "synthetic"},
    # The generic torch.func pool (search.training.func_pool) on the seed's network, beside
    # the hand-written one; and a user's search.Task, docs/examples/tabular_task.py.
    "seed's network, generic pool": {"generic": True},
    "your MLP (Task, 20-64-64-3 GELU)": {"task": "example"},
}
SEED_RECIPE = next(iter(RECIPES))


@dataclass(frozen=True)
class Result:
    path: str
    trials: int  # trained side by side
    trial_epochs_per_s: float
    ratio_to_seed: float
    fraction_of_floor: float


@dataclass(frozen=True)
class RecipeResult:
    """One recipe's two paths. The synthetic task's trial-epoch is its own: 13 steps over 800
    rows, so its rates compare with each other only (``vs_seed_pool`` is None)."""

    recipe: str
    trials: int  # the pool's K
    single_trial_epochs_per_s: float
    pool_trial_epochs_per_s: float
    pool_vs_single: float
    vs_seed_pool: float | None  # the pool's rate over the seed recipe's pool rate


def table(results: list[Result], floor: float, flops: float) -> str:
    lines = [f"{'path':<34} {'trial-epochs/s':>14} {'x seed loop':>12} {'% of floor':>11}"]
    for r in results:
        lines.append(
            f"{r.path:<34} {r.trial_epochs_per_s:>14.3f} {r.ratio_to_seed:>11.1f}x "
            f"{100 * r.fraction_of_floor:>10.1f}%"
        )
    lines.append(
        f"{'floor: matmul at ' + f'{flops / 1e9:.0f} GFLOP/s':<34} {floor:>14.3f}"
        f"   ({FLOPS_PER_TRIAL_EPOCH / 1e9:.1f} GFLOP per trial-epoch, "
        f"{FLOPS_PER_TRIAL_EPOCH / flops:.3f} s at best)"
    )
    return "\n".join(lines)


def recipe_table(results: list[RecipeResult]) -> str:
    k = results[0].trials
    lines = [
        f"{'recipe':<34} {'one trial':>10} {f'pool K={k}':>10} {'pool/one':>9} "
        f"{'vs seed pool':>13}"
    ]
    for r in results:
        vs_seed = "-" if r.vs_seed_pool is None else f"{r.vs_seed_pool:.2f}x"
        lines.append(
            f"{r.recipe:<34} {r.single_trial_epochs_per_s:>10.3f} "
            f"{r.pool_trial_epochs_per_s:>10.3f} {r.pool_vs_single:>8.1f}x {vs_seed:>13}"
        )
    lines.append(
        "(trial-epochs/s; the synthetic task's epoch is 13 steps over its 800 rows, the "
        "example MLP's 32 over its 2,000)"
    )
    return "\n".join(lines)


STUDY_ROW_HEADER = (
    f"{'trials':>6} {'seed':>4} {'recommended':>11} {'held-out val':>12} {'regret':>7} "
    f"{'feasible':>8} {'infeas':>6} {'complete':>8} {'wall s':>7}"
)


def format_row(row: dict[str, Any], measure: str) -> str:
    """A real study's recommendation as retrained on the held-out seeds: its mean validation
    accuracy, its regret against the robust optimum (points) and in how many held-out seeds
    it held the limit by ``measure``."""
    held = row.get("held_out")
    if not held or held["val_accuracy_mean"] is None:
        return f"{row['trials']:>6} {row['seed']:>4} {'none':>11}"
    return (
        f"{row['trials']:>6} {row['seed']:>4} {held['weight_decay']:>11.4g} "
        f"{held['val_accuracy_mean']:>12.4f} {100 * held['regret']:>6.2f}p "
        f"{held[f'feasible_{measure}']:>4}/{held['seeds']:<3} {row['stopped_infeasible']:>6} "
        f"{row['complete']:>8} {row['wall_s']:>7.1f}"
    )
