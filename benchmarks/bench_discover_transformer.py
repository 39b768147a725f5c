"""Position discovery on the standard transformer: three methods over 100 checkpoints of a 2-layer, 4-head run.

Run: python benchmarks/bench_discover_transformer.py [RUN] [--quick]
With no RUN it first trains one (d = 32, T = 12, k = 5 random positions, the study's curriculum
schedule 2:900:1e-3:32,4:2100:1e-2:32 of analyses/transformer_study.py, a checkpoint every 30 steps)
into a temporary directory (about half a minute). --quick: a tiny run (about 50 checkpoints) and 64 inputs, only to check
that the script works.

Prints the wall time of `discover_positions` (attribution, patching, ablation; 1 024 inputs a
checkpoint, as `circuitpath discover RUN` runs them) over 100 checkpoints, one checkpoint a core as
`discover` runs it and one at a time, side by side (target: < 2 minutes on 2 cores), and the run's
discovery timeline: when each method's AUROC against the relevant positions first reaches 0.9.
"""

# %%
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import table

from circuitpath import load_run, train
from circuitpath.analysis.discovery import positions
from circuitpath.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases

PHASES, QUICK_PHASES = "2:900:1e-3:32,4:2100:1e-2:32", "2:40:1e-2:16,4:80:1e-2:16"


def train_run(root: Path, quick: bool):
    size = dict(n_ctx=8, n_train=128) if quick else {}
    config = RunConfig(
        task=TaskConfig(positions="random", **size),
        model=ModelConfig(arch="transformer", n_layers=2, n_heads=4, d_model=8 if quick else 32,
                          n_ctx=size.get("n_ctx", 12)),
        train=TrainConfig(phases=parse_phases(QUICK_PHASES if quick else PHASES), log_every=100,
                          checkpoint_every=4 if quick else 30))
    return train(config, root / "run", progress=False)


def timed(run, steps: list[int], n: int, workers: int | None):
    start = time.perf_counter()
    timeline = positions.discover_positions(run, n=n, steps=steps, workers=workers)
    return time.perf_counter() - start, timeline


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        run = load_run(args.run) if args.run else train_run(Path(root), args.quick)
        steps = run.steps[-100:]
        n = 64 if args.quick else 1024
        print(f"{run.path.name}: {run.config.model.n_layers} layers, {run.config.model.n_heads} heads, "
              f"d = {run.config.model.d_model}; {len(steps)} checkpoints ({steps[0]}..{steps[-1]}), {n} inputs, "
              f"{os.cpu_count()} cores")
        default, timeline = timed(run, steps, n, None)
        alone, _ = timed(run, steps, n, 1)
        print(table([("a checkpoint a core (discover)", f"{default:.1f}"), ("one checkpoint at a time", f"{alone:.1f}")],
                    ("three methods, every checkpoint", "seconds")))
        print(f"relevant positions {list(timeline.relevant[-1])}; test acc at the end {float(timeline.accuracy[-1]):.3f}")
        for method in timeline.methods:
            print(f"{method:12} AUROC first >= 0.9 at step {timeline.first_reaching(method, 0.9)}, stays >= 0.9 "
                  f"from step {timeline.stays_from(method, 0.9)}; "
                  f"at the end {float(timeline.auroc(method)[-1]):.2f}")


# %%
if __name__ == "__main__":
    main()
