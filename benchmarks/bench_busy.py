"""Training speed on a busy machine: one run's step with and without a competing CPU-bound process.

Kernels split over threads wait at every one of a step's ~100 small parallel regions for a thread
whose core another process holds, which can make a step many times slower. Each setting runs in its
own process, first on a quiet machine, then beside one busy process (`while True: pass`), and the
script prints both and their ratio. Run it on an otherwise idle machine:

    python benchmarks/bench_busy.py [--seconds 3]
"""

# %%
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SETTINGS = {"2 threads per kernel": 2, "1 thread per kernel (what `train` does)": 1}


def child(threads: int, seconds: float) -> None:
    """Print the best ms per training step (paper size, one run) over rounds of ~0.2 s."""
    import torch

    from circuitpath import CrossAttentionTransformer, ModelConfig
    from circuitpath.training.engine import Adam, Encoded, Executor, Layout

    torch.set_num_threads(threads)
    cfg = ModelConfig()
    layout = Layout.of(cfg)
    theta = layout.pack([CrossAttentionTransformer(cfg).weights()])
    x = torch.randint(0, 4, (1, 2048, 12), generator=torch.Generator().manual_seed(0))
    data, adam = Encoded.of(x, x[:, :, :5].sum(-1) % 4, 4), Adam(theta, torch.tensor([1e-3]))
    executor = Executor(1, torch.device("cpu"))
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < 0.2:
            adam.step(theta, executor.loss_and_grad(theta, layout, [data])[1])
            steps += 1
        best = min(best, (time.perf_counter() - start) / steps)
    print(best * 1e3)


def measure(threads: int, seconds: float) -> float:
    command = [sys.executable, __file__, "--child", str(threads), "--seconds", str(seconds)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per setting and condition")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.seconds)
    rows = []
    for name, threads in SETTINGS.items():
        quiet = measure(threads, args.seconds)
        busy_process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = measure(threads, args.seconds)
        finally:
            busy_process.kill()
            busy_process.wait()
        rows.append((name, f"{quiet:.2f}", f"{busy:.2f}", f"{busy / quiet:.1f}x"))
    sys.path.insert(0, os.path.dirname(__file__))
    from common import table

    print(f"one run's training step at the paper's size on {os.cpu_count()} cores, ms (best of 0.2 s rounds)")
    print(table(rows, ("setting", "quiet", "beside a busy process", "slowdown")))


if __name__ == "__main__":
    main()
