"""``python -m search.bench``: how fast each way of training trials is, side by side.

    python -m search.bench --steps 100   # a quick look
    python -m search.bench quality       # search quality instead: see search.benchmarks

How long it takes depends on the machine and what else runs on it: ``3 x (paths)`` timed runs
of ``--steps`` steps each (measured durations: docs/speed.md). Progress goes to stderr: a
bar on a terminal, a line every few seconds elsewhere, each path and round with the time it
took (``--quiet``: none).

Measures, in one run on one machine and on the same trials, trial-epochs per second of
(a) the seed's loop (torchvision ``DataLoader`` with a per-sample ``ToTensor``, one model,
Adam with weight decay), (b) the project's single-trial path (``search.training.train.train`` on
preloaded tensors) and (c) the trial pool at several K, and what the machine's matmul
throughput allows at most; then, for every other recipe the CLI offers (AdamW, SGD, biases
undecayed, a full search space's mix, the synthetic task), its single-trial path beside its
pool at the device's default K. Prints two tables and writes the same as JSON.

Convention: a trial-epoch is one trial's pass over the seed's 60,000 training images in
batches of 64, i.e. 938 optimizer steps; a path's rate is (trials x steps) / seconds / 938,
timed over ``--steps`` steps of training after a warm-up (validation is left out everywhere).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from search.benchmarks.flags import DESCRIPTION, add_quality_options, add_run_args
from search.benchmarks.tables import (
    FLOPS_PER_TRIAL_EPOCH,
    RECIPES,
    SEED_RECIPE,
    SEED_TRAIN_IMAGES,
    STEPS_PER_TRIAL_EPOCH,
    RecipeResult,
    Result,
    recipe_table,
    table,
)
from search.cli import Parser, add_flags, run_command, run_flags_config
from search.config import CUDA_PARALLEL_TRIALS, DEFAULTS, STUDIES_DIR
from search.flag_values import positive_int, positive_ints
from search.reporting.steps import Steps
from search.signals import interrupted

CPU_KS = (1, 8, 16, 32)
CUDA_KS = (*CPU_KS, CUDA_PARALLEL_TRIALS)
WARMUP_STEPS = 20
# Every path times steps within one pass over the 60,000 images, after its warm-up steps.
MAX_STEPS = STEPS_PER_TRIAL_EPOCH - WARMUP_STEPS - 1  # 917: the last batch is a partial one
ROUNDS = 3  # each path is timed this many times, interleaved; the best round counts


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.bench",
        description="Trial-epochs per second of the seed's training loop, the single-trial "
        "path and the trial pool, side by side, against the machine's matmul floor. How long "
        "it takes depends on the machine and its load; progress goes to stderr.",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=MAX_STEPS,
        metavar="N",
        help="optimizer steps timed per path and round, after a warm-up; at most "
        f"{MAX_STEPS}, what one pass over the images leaves (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=STUDIES_DIR / "bench.json",
        metavar="FILE",
        help="where the JSON goes (default: %(default)s)",
    )
    add_flags(parser, "--device", "--data-dir")
    parser.add_argument(
        "--ks",
        type=positive_ints,
        default=None,
        metavar="K,K,...",
        help=f"pool sizes to time (default: {','.join(map(str, CPU_KS))}, "
        f"and {CUDA_PARALLEL_TRIALS} on a GPU)",
    )
    add_flags(parser, "--quiet")
    commands = parser.add_subparsers(dest="command", metavar="{quality}", parser_class=Parser)
    quality = commands.add_parser(
        "quality",
        help="the search-quality benchmark instead (python -m search.bench quality --help)",
        description=DESCRIPTION,
    )
    add_quality_options(quality)
    add_flags(quality, "--data-dir", "--quiet")
    add_run_args(quality)
    return parser


def measure(
    paths: dict[str, tuple[int, Callable[[int], float]]],
    steps: int,
    progress: Steps | None = None,
) -> dict[str, float]:
    """Trial-epochs per second of each path: its best of ROUNDS interleaved rounds.

    Interleaving spreads whatever else the machine does over all paths alike. Each path and
    round is a step of ``progress``: on a loaded machine one can take a long while.
    """
    best = dict.fromkeys(paths, math.inf)
    for round_ in range(1, ROUNDS + 1):
        for name, (_, run) in paths.items():
            seconds = run(steps)
            best[name] = min(best[name], seconds)
            if progress is not None:
                progress.step(f"{name}, round {round_}/{ROUNDS}: {seconds:.1f} s")
    return {
        name: trials * steps / best[name] / STEPS_PER_TRIAL_EPOCH
        for name, (trials, _) in paths.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "quality":
        run_args = [a for a in args.run_args if a != "--"]
        config = run_flags_config(run_args, args.data_dir)
        from search.benchmarks.measure import run_quality  # after parsing: --help is fast

        return run_quality(args, config, run_args)
    try:
        return benchmark(parser, args)
    except KeyboardInterrupt as stop:
        return interrupted(
            stop,
            f"nothing to resume and {args.out} not written; run the command again to time "
            "every path from the start",
        )


def benchmark(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # Over 60 lines: the benchmark in order (data, the paths side by side, the JSON); each
    # step reads what the ones before made.
    import torch  # after parsing: --help and flag errors don't wait for PyTorch

    from search.benchmarks.recipes import add_recipe_paths
    from search.data.mnist import load_splits
    from search.training.pool import default_parallel_trials
    from search.training.timing import gemm_flops, pool_path, seed_loop, single_path
    from search.training.train import device_problem, resolve_device

    problem = device_problem(args.device)
    if problem is not None:
        parser.error(problem)
    if args.out.is_dir() or (args.out.parent.exists() and not args.out.parent.is_dir()):
        parser.error(f"--out {args.out}: give a file path for the JSON, not a directory")
    if args.steps > MAX_STEPS:
        parser.error(
            f"--steps must be at most {MAX_STEPS} (one pass over the images), got {args.steps}"
        )
    device = resolve_device(args.device)
    ks = args.ks or (CUDA_KS if device.type == "cuda" else CPU_KS)
    # All 60,000 training images train, as in the seed; validation isn't timed.
    data = load_splits(args.data_dir, "test", device=device)
    config = DEFAULTS.replace(epochs=1)
    paths: dict[str, tuple[int, Callable[[int], float]]] = {
        "(a) seed loop: DataLoader+ToTensor": (1, seed_loop(args.data_dir, device, WARMUP_STEPS)),
        "(b) single trial, preloaded": (1, single_path(data, config, WARMUP_STEPS)),
    }
    for k in ks:
        paths[f"(c) pool K={k}"] = (k, pool_path(data, config, k, WARMUP_STEPS))
    seed_paths = list(paths)  # the first table's: the seed recipe's paths
    # Every other recipe on both paths; the seed's pool row is (c) at the default K when timed.
    k_default = default_parallel_trials(device)
    recipe_paths = add_recipe_paths(paths, data, config, k_default, WARMUP_STEPS, device)
    print(
        f"timing {args.steps} steps per path, best of {ROUNDS} rounds, on {device} "
        f"({torch.get_num_threads()} threads)",
        flush=True,
    )
    runs = ROUNDS * len(paths) + 1  # and the matmul floor
    with Steps(runs, "timing the paths", unit="run", quiet=args.quiet) as progress:
        rates = measure(paths, args.steps, progress)
        flops = gemm_flops(device)
        progress.step(f"matmul floor: {flops / 1e9:.0f} GFLOP/s")
    floor = flops / FLOPS_PER_TRIAL_EPOCH
    seed_rate = next(iter(rates.values()))
    results = [
        Result(name, paths[name][0], rates[name], rates[name] / seed_rate, rates[name] / floor)
        for name in seed_paths
    ]
    print(table(results, floor, flops))
    seed_pool = rates[recipe_paths[SEED_RECIPE][1]]
    by_recipe = [
        RecipeResult(
            name,
            k_default,
            rates[single],
            rates[pool],
            rates[pool] / rates[single],
            None if "task" in RECIPES[name] else rates[pool] / seed_pool,
        )
        for name, (single, pool) in recipe_paths.items()
    ]
    print("\nevery recipe, one trial at a time and in the pool:")
    print(recipe_table(by_recipe))
    report: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "rounds": ROUNDS,
        "trial_epoch": f"{STEPS_PER_TRIAL_EPOCH} steps of batch {DEFAULTS.batch_size} over "
        f"{SEED_TRAIN_IMAGES} images, training only",
        "steps_per_trial_epoch": STEPS_PER_TRIAL_EPOCH,
        "flops_per_trial_epoch": FLOPS_PER_TRIAL_EPOCH,
        "gemm_flops_per_s": flops,
        "floor_trial_epochs_per_s": floor,
        "results": [asdict(r) for r in results],
        "recipes": [asdict(r) for r in by_recipe],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_command(main)
