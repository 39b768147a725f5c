"""Small models in mini-batches: the d = 2 pipeline's update, fused path against the torch engine.

Run: python benchmarks/bench_small.py [--seeds 32] [--updates 1280]

Trains a group of SEEDS runs of the d = 2 pipeline's setting (T = 12, d = 2, h = 32, p = 2,
mini-batches of 32, lr 3e-3, metrics every 10 epochs) through `train_many`, the whole training
loop (batches, Adam, evaluations, checkpoints), and prints the wall time per update of the group:
the fused path (what training takes for d <= 4) on one and on all cores, beside the torch engine
the same runs took before (one run to a chunk, as it trains d = 32 runs). A setting's time per
update is the difference between a run of 2 N and one of N updates, over N: what one more update
costs once the runs exist (creating 32 run directories and their first records takes ~1 s). Each
setting runs in turn in this process; the torch engine's N is a tenth of the others'.
"""

# %%
from __future__ import annotations

import argparse
import os
import tempfile
import time
from unittest import mock

import torch

from common import MALLOC, table

from circuitpath.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.training import fused
from circuitpath.training.train import train_many


def configs(seeds: int, updates: int) -> list[RunConfig]:
    train = TrainConfig(phases=parse_phases(f"2:{updates}:3e-3:32"), log_every=640, checkpoint_every=3200,
                        dense_checkpoints=0)
    return [RunConfig(task=TaskConfig(seed=s), model=ModelConfig(d_model=2, d_mlp=32, seed=s), train=train)
            for s in range(seeds)]


def seconds(seeds: int, updates: int, workers: int, use_fused: bool = True) -> float:
    with tempfile.TemporaryDirectory() as out, mock.patch.object(fused, "takes_fused_path",
                                                                 lambda cfg, device, train=None: use_fused):
        start = time.perf_counter()
        train_many(configs(seeds, updates), [f"{out}/{s}" for s in range(seeds)], progress=False, workers=workers)
        return time.perf_counter() - start


def per_update(seeds: int, updates: int, workers: int, use_fused: bool = True) -> float:
    """What one more update costs: the time of 2 N updates less that of N, over N."""
    short = seconds(seeds, updates, workers, use_fused)
    return (seconds(seeds, 2 * updates, workers, use_fused) - short) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=32, help="runs in the group (default 32)")
    parser.add_argument("--updates", type=int, default=1280, help="N, updates of the shorter fused run (default 1280, 20 epochs)")
    args = parser.parse_args()
    if args.seeds < 1 or args.updates < 10:
        parser.error(f"--seeds must be >= 1 and --updates >= 10, got {args.seeds} and {args.updates}")
    seconds(args.seeds, 10, 1)  # compile (or load the compiled kernel) and warm up
    cores = os.cpu_count() or 1
    rows = []
    for name, workers, use_fused, updates in (("fused, 1 core", 1, True, args.updates),
                                              (f"fused, {cores} cores", cores, True, args.updates),
                                              (f"torch engine, {cores} cores", cores, False, max(10, args.updates // 10))):
        cost = per_update(args.seeds, updates, workers, use_fused)
        rows.append((name, f"{cost * 1e3:.3f}", f"{cost / args.seeds * 1e6:.1f}"))
    print(f"{args.seeds} runs of d = 2, batch 32, whole training loop; torch {torch.__version__}, {MALLOC}")
    print(table(rows, ("path", "ms per update of the group", "us per run-update")))


# %%
if __name__ == "__main__":
    main()
