"""``python -m search.bench``: how fast each way of training trials is, side by side.

    python -m search.bench --steps 100   # a quick look; the default takes about a minute

Measures, in one run on one machine and on the same trials, trial-epochs per second of
(a) the seed's loop (torchvision ``DataLoader`` with a per-sample ``ToTensor``, one model,
Adam with weight decay), (b) the project's single-trial path (``search.train.train`` on
preloaded tensors) and (c) the trial pool at several K, and what the machine's matmul
throughput allows at most. Prints a table and writes the same as JSON.

Convention: a trial-epoch is one trial's pass over the seed's 60,000 training images in
batches of 64, i.e. 938 optimizer steps; a path's rate is (trials x steps) / seconds / 938,
timed over ``--steps`` steps of training after a warm-up (validation is left out everywhere).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from search.cli import Parser, add_data_dir_flag, positive_int, run_command
from search.config import DEFAULTS, DEVICES, STUDIES_DIR, StudyConfig
from search.data import Splits, load_splits
from search.pool import CUDA_PARALLEL_TRIALS, TrialPool
from search.train import init_model, resolve_device, train, trial_seed

SEED_TRAIN_IMAGES = 60_000
STEPS_PER_TRIAL_EPOCH = math.ceil(SEED_TRAIN_IMAGES / DEFAULTS.batch_size)  # 938
# Multiply-adds of SimpleNN per image: 784*128 + 128*10 weights; forward 2 FLOPs each,
# backward 4 (gradients of the inputs and of the weights).
FLOPS_PER_IMAGE = 6 * (28 * 28 * 128 + 128 * 10)
FLOPS_PER_TRIAL_EPOCH = FLOPS_PER_IMAGE * SEED_TRAIN_IMAGES

CPU_KS = (1, 8, 16, 32)
CUDA_KS = (*CPU_KS, CUDA_PARALLEL_TRIALS)
WARMUP_STEPS = 20
# Every path times steps within one pass over the 60,000 images, after its warm-up steps.
MAX_STEPS = STEPS_PER_TRIAL_EPOCH - WARMUP_STEPS - 1  # 917: the last batch is a partial one
ROUNDS = 3  # each path is timed this many times, interleaved; the best round counts
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}

# The weight decays of the benchmark's trials: log-spaced over the default search range.
WEIGHT_DECAYS = np.geomspace(DEFAULTS.wd_low, DEFAULTS.wd_high, max(CUDA_KS)).tolist()


@dataclass(frozen=True)
class Result:
    path: str
    trials: int  # trained side by side
    trial_epochs_per_s: float
    ratio_to_seed: float
    fraction_of_floor: float


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.bench",
        description="Trial-epochs per second of the seed's training loop, the single-trial "
        "path and the trial pool, side by side, against the machine's matmul floor.",
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
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=DEFAULTS.device,
        help="auto: CUDA when present, else CPU (default: %(default)s)",
    )
    add_data_dir_flag(parser)
    parser.add_argument(
        "--ks",
        type=pool_sizes,
        default=None,
        metavar="K,K,...",
        help=f"pool sizes to time (default: {','.join(map(str, CPU_KS))}, "
        f"and {CUDA_PARALLEL_TRIALS} on a GPU)",
    )
    return parser


def pool_sizes(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(
            f"must be positive integers separated by commas, e.g. 1,8,16, got {text!r}"
        )
    return ks


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_flops(device: torch.device) -> float:
    """The best FLOP/s of a large float32 matmul on ``device``: what the hardware can do."""
    size = GEMM_SIZE[device.type]
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = math.inf
    for _ in range(6):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def seed_loop(data_dir: Path, device: torch.device) -> Callable[[int], float]:
    """The seed's training loop, as it is written; returns a timer of ``steps`` steps."""
    dataset = datasets.MNIST(root=data_dir, train=True, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=DEFAULTS.batch_size, shuffle=True)
    model = init_model(trial_seed(DEFAULTS.seed, 0), device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=DEFAULTS.lr, weight_decay=WEIGHT_DECAYS[0])

    def run(steps: int) -> float:
        batches = iter(loader)
        model.train()
        total_loss, correct = 0.0, 0
        for step in range(WARMUP_STEPS + steps):
            if step == WARMUP_STEPS:
                synchronize(device)
                started = time.perf_counter()
            data, target = next(batches)
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = criterion(output, target)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * data.size(0)  # the seed syncs on these every step
            correct += output.argmax(dim=1).eq(target).sum().item()
        synchronize(device)
        return time.perf_counter() - started

    return run


def first_images(data: Splits, count: int) -> Splits:
    """The first ``count`` training images; validation on 64 of them (it isn't timed)."""
    x, y = data.train_x[:count], data.train_y[:count]
    return Splits(x, y, x[:64], y[:64], data.validation, data.checksums)


def single_path(data: Splits, config: StudyConfig) -> Callable[[int], float]:
    """``search.train.train`` for one epoch of ``steps`` steps, as the objective runs it."""
    seed = trial_seed(config.seed, 0)

    def epoch(images: Splits) -> None:
        for _ in train(
            init_model(seed, images.train_x.device), images, WEIGHT_DECAYS[0], config, seed
        ):
            pass

    def run(steps: int) -> float:
        epoch(first_images(data, WARMUP_STEPS * config.batch_size))
        images = first_images(data, steps * config.batch_size)
        synchronize(data.train_x.device)
        started = time.perf_counter()
        epoch(images)
        synchronize(data.train_x.device)
        return time.perf_counter() - started

    return run


def pool_path(data: Splits, config: StudyConfig, k: int) -> Callable[[int], float]:
    """One pool epoch of ``steps`` steps with trials 0..k-1 side by side."""

    def fill(images: Splits) -> TrialPool:
        pool = TrialPool(images, config, k)
        for number in range(k):
            pool.add(
                number, trial_seed(config.seed, number), WEIGHT_DECAYS[number % len(WEIGHT_DECAYS)]
            )
        return pool

    def run(steps: int) -> float:
        fill(first_images(data, WARMUP_STEPS * config.batch_size)).train_epoch()
        pool = fill(first_images(data, steps * config.batch_size))
        synchronize(data.train_x.device)
        started = time.perf_counter()
        pool.train_epoch()
        synchronize(data.train_x.device)
        return time.perf_counter() - started

    return run


def measure(paths: dict[str, tuple[int, Callable[[int], float]]], steps: int) -> dict[str, float]:
    """Trial-epochs per second of each path: its best of ROUNDS interleaved rounds.

    Interleaving spreads whatever else the machine does over all paths alike.
    """
    best = dict.fromkeys(paths, math.inf)
    for _ in range(ROUNDS):
        for name, (_, run) in paths.items():
            best[name] = min(best[name], run(steps))
    return {
        name: trials * steps / best[name] / STEPS_PER_TRIAL_EPOCH
        for name, (trials, _) in paths.items()
    }


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
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
        "(a) seed loop: DataLoader+ToTensor": (1, seed_loop(args.data_dir, device)),
        "(b) single trial, preloaded": (1, single_path(data, config)),
    }
    for k in ks:
        paths[f"(c) pool K={k}"] = (k, pool_path(data, config, k))
    print(
        f"timing {args.steps} steps per path, best of {ROUNDS} rounds, on {device} "
        f"({torch.get_num_threads()} threads)",
        flush=True,
    )
    rates = measure(paths, args.steps)
    flops = gemm_flops(device)
    floor = flops / FLOPS_PER_TRIAL_EPOCH
    seed_rate = next(iter(rates.values()))
    results = [
        Result(name, paths[name][0], rate, rate / seed_rate, rate / floor)
        for name, rate in rates.items()
    ]
    print(table(results, floor, flops))
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
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_command(main)
