"""How close one thread's training step comes to the machine's matrix-multiply peak.

Run: python benchmarks/bench_flops.py

Training runs every kernel on one thread (a run's bytes must not depend on the thread count), so
one thread's speed is what a run gets. This prints, side by side in one run on one thread:
- the engine's loss-and-gradient step at the paper's size (T = 12, n = 2 048, d = 32, h = 128), its
  matrix-multiply FLOPs as torch's FlopCounterMode counts them, and the GFLOP/s that makes;
- a plain sgemm at the step's largest product's shape ([2 048, 32] x [32, 128]) and at 1 024^3;
- the engine's share of the sgemm rates (the target is at least 50% of the plain sgemm's).
"""

# %%
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import MALLOC, measure, table

from circuitpath.config import ModelConfig, TaskConfig
from circuitpath.data import make_split
from circuitpath.models.weights import init_weights
from circuitpath.training.engine import Encoded, Layout, loss_and_grad


def engine_step():
    cfg = ModelConfig()
    layout = Layout.of(cfg)
    theta = layout.pack([init_weights(cfg)])
    split = make_split(TaskConfig(), 4)
    data = Encoded.of(split.x_train[None], split.y_train[None], cfg.n_tokens)
    step = lambda: loss_and_grad(theta, layout, data)  # noqa: E731
    with FlopCounterMode(display=False) as counter:
        step()
    return step, counter.get_total_flops()


def sgemm(m: int, k: int, n: int):
    a, b = torch.randn(m, k), torch.randn(k, n)
    return (lambda: a @ b), 2 * m * k * n


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help; no options
    torch.set_num_threads(1)
    work = {"engine step (loss and gradient)": engine_step(),
            "sgemm [2048, 32] x [32, 128]": sgemm(2048, 32, 128),
            "sgemm 1024^3": sgemm(1024, 1024, 1024)}
    seconds = measure({name: fn for name, (fn, _) in work.items()})
    rate = {name: flops / seconds[name] / 1e9 for name, (_, flops) in work.items()}
    engine = next(iter(work))
    rows = [(name, f"{flops / 1e6:.1f}", f"{seconds[name] * 1e3:.3f}", f"{rate[name]:.1f}",
             "" if name == engine else f"{rate[engine] / rate[name]:.0%}") for name, (_, flops) in work.items()]
    print(f"one thread, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {MALLOC}")
    print(table(rows, ("work", "MFLOP", "ms", "GFLOP/s", "engine's share")))


# %%
if __name__ == "__main__":
    main()
