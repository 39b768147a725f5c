"""A sweep of both paper experiments through the local and the Ray backend, side by side: wall times and ratio.

Run: python benchmarks/bench_sweep.py                          (64 seeds of the paper's runs; long)
     python benchmarks/bench_sweep.py --seeds 4 --steps 200    (a quick check that it runs)

The target: Ray's wall time within 10% of the local backend's (ratio <= 1.10) on one machine. Ray's
time is given with and without starting its local instance (`ray.init`); its workers start inside
the sweep, as they would for a user. Both backends train the same runs, and the script checks that
their tables agree.
"""

# %%
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from circuitpath.config import ModelConfig, TaskConfig
from circuitpath.sweep import RayOptions, summary_lines, sweep


def paper_experiments(steps: int) -> dict[str, str]:
    """The paper's scratch and curriculum runs over `steps` in all (10 000: exactly the paper's phases)."""
    first = round(steps * 0.3)
    return {"scratch": f"4:{steps}:1e-2", "curriculum": f"2:{first}:1e-3,4:{steps - first}:1e-2"}


def timed_sweep(out: Path, seeds: list[int], experiments: dict[str, str], **backend) -> tuple[float, list[str]]:
    start = time.perf_counter()
    summaries = sweep(out, seeds, experiments, task=TaskConfig(), model=ModelConfig(), progress=False, **backend)
    return time.perf_counter() - start, summary_lines(summaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=64, help="seeds per experiment (default 64)")
    parser.add_argument("--steps", type=int, default=10_000, help="steps of each run (default 10000, the paper's)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the Ray instance (default: all)")
    args = parser.parse_args()
    import ray

    seeds, experiments = list(range(args.seeds)), paper_experiments(args.steps)
    print(f"{args.seeds} seeds x {', '.join(f'{k} ({v})' for k, v in experiments.items())}, {args.cpus} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        local, local_table = timed_sweep(Path(tmp) / "local", seeds, experiments)
        print(f"local: {local:.1f} s", flush=True)
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        startup = time.perf_counter() - start
        try:
            on_ray, ray_table = timed_sweep(Path(tmp) / "ray", seeds, experiments, backend="ray", ray=RayOptions())
        finally:
            ray.shutdown()
    print(f"ray:   {on_ray:.1f} s, and {startup:.1f} s to start the local Ray instance")
    print("\n".join(local_table))
    print(f"ray / local wall time: {on_ray / local:.3f} ({(on_ray + startup) / local:.3f} with Ray's start)")
    print("tables " + ("agree" if ray_table == local_table else "DIFFER: the runs depend on how they were batched"))


# %%
if __name__ == "__main__":
    main()
