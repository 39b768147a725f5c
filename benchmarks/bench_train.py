"""ms per training step: the plain reference, circuitpath at S = 1 and per run-step at S = 8 and 32,
each beside the engine's arrangement before runs became bit-identical on any thread count.

Run: python benchmarks/bench_train.py
The paper's configuration: T = 12, n = 2048 full batch, d = 32, n_tokens = 4, p = 4, Adam.
circuitpath's step is the training loop's: `engine.Executor`, one run to a chunk, one thread per
kernel, one worker per core (as `train.py` sets them), malloc set as `train` sets it (common.py; the
reference runs under the same setting). "before" is the previous arrangement, kept here only to be
measured: chunks of 4 runs on the workers, and a lone run on two threads per kernel (the previous
thread tuner's other choice; its one-thread choice is the same step as today's).
"""

# %%
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from common import MALLOC, measure, table
from reference import reference_forward

from circuitpath.config import ModelConfig, TaskConfig
from circuitpath.data import make_split
from circuitpath.engine import Adam, Encoded, Executor, Layout
from circuitpath.model import init_weights

POOL = ThreadPoolExecutor(os.cpu_count() or 1)  # as train.py's orchestrator shares one


def reference_step(split):
    weights = {k: v.clone().requires_grad_(True) for k, v in init_weights(ModelConfig()).items()}
    optimiser = torch.optim.Adam(list(weights.values()), lr=1e-2)

    def step():
        optimiser.zero_grad()
        F.cross_entropy(reference_forward(weights, split.x_train)["logits"], split.y_train).backward()
        optimiser.step()

    return step


class ChunksOfFour(Executor):
    """The previous arrangement: four runs to a chunk (their bytes depended on their batch-mates)."""

    def __init__(self, runs: int, device: torch.device, pool=None):
        super().__init__(runs, device, pool)
        self.chunks = [slice(i, min(i + 4, runs)) for i in range(0, runs, 4)]
        self.pool = pool if len(self.chunks) > 1 else None


def engine_step(split, runs: int, before: bool = False):
    """One training-loop step of `runs` runs, as `train.py` runs it (or as it did `before`)."""
    layout = Layout.of(ModelConfig())
    theta = layout.pack([init_weights(ModelConfig(seed=s)) for s in range(runs)])
    adam = Adam(theta, torch.full((runs,), 1e-2))
    executor = (ChunksOfFour if before else Executor)(runs, torch.device("cpu"), POOL)
    data = executor.split(Encoded.of(split.x_train.expand(runs, -1, -1), split.y_train.expand(runs, -1), 4))
    threads = 2 if before and runs == 1 else 1

    def step():
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        adam.step(theta, executor.loss_and_grad(theta, layout, data)[1])
        torch.set_num_threads(previous)

    return step


def main() -> None:
    split = make_split(TaskConfig(), 4)
    reference_name = "reference (plain PyTorch + torch.optim.Adam)"
    sizes = {reference_name: (1, False)}
    for runs in (1, 8, 32):
        sizes[f"circuitpath, S = {runs}"] = (runs, False)
        sizes[f"  before, S = {runs}" + (" (two threads)" if runs == 1 else " (chunks of 4)")] = (runs, True)
    candidates = {name: (reference_step(split) if name == reference_name else engine_step(split, s, before))
                  for name, (s, before) in sizes.items()}
    seconds = measure(candidates)
    reference = seconds[reference_name]
    rows = [(name, f"{seconds[name] / s * 1e3:.2f}", f"{reference / (seconds[name] / s):.1f}x")
            for name, (s, _) in sizes.items()]
    print(f"training step at the paper's size, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()}, {MALLOC}")
    print(table(rows, ("implementation", "ms per run-step", "speed-up")))


# %%
if __name__ == "__main__":
    main()
