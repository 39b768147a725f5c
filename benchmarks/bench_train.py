"""ms per training step: the plain reference, circuitpath at S = 1, and per run-step at S = 8 and 32.

Run: python benchmarks/bench_train.py
The paper's configuration: T = 12, n = 2048 full batch, d = 32, n_tokens = 4, p = 4, Adam.
circuitpath's step is the training loop's: `engine.Executor` with the orchestrator's thread settings,
and malloc set as `train` sets it (common.py; the reference runs under the same setting).
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
from circuitpath.engine import Adam, Encoded, Executor, Layout, ThreadTuner
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


def engine_step(split, runs: int):
    """One training-loop step of `runs` runs, as `train.py` configures it on this machine."""
    layout = Layout.of(ModelConfig())
    theta = layout.pack([init_weights(ModelConfig(seed=s)) for s in range(runs)])
    data = Encoded.of(split.x_train.expand(runs, -1, -1), split.y_train.expand(runs, -1), 4)
    adam = Adam(theta, torch.full((runs,), 1e-2))
    executor = Executor(runs, torch.device("cpu"), POOL)
    single = len(executor.chunks) > 1
    if not single and (os.cpu_count() or 1) > 1:  # a lone chunk picks its threads by measured speed, as in train
        executor.tuner = ThreadTuner(tuple(sorted({1, torch.get_num_threads()})))

    def step():
        threads = torch.get_num_threads()
        if single:
            torch.set_num_threads(1)
        adam.step(theta, executor.loss_and_grad(theta, layout, data)[1])
        torch.set_num_threads(threads)

    return step


def main() -> None:
    split = make_split(TaskConfig(), 4)
    sizes = {"reference (plain PyTorch + torch.optim.Adam)": 1, "circuitpath, S = 1": 1,
             "circuitpath, S = 8": 8, "circuitpath, S = 32": 32}
    candidates = {name: (reference_step(split) if name.startswith("reference") else engine_step(split, s))
                  for name, s in sizes.items()}
    seconds = measure(candidates)
    reference = seconds[next(iter(seconds))]
    rows = [(name, f"{seconds[name] / s * 1e3:.2f}", f"{reference / (seconds[name] / s):.1f}x")
            for name, s in sizes.items()]
    print(f"training step at the paper's size, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{MALLOC}")
    print(table(rows, ("implementation", "ms per run-step", "speed-up")))


# %%
if __name__ == "__main__":
    main()
