"""Per run-step cost of branching S runs at one step and training them on, against S fresh runs.

Run: python benchmarks/bench_branch.py            (the paper's size: 32 runs, 500 steps each way)
     python benchmarks/bench_branch.py --small    (a tiny size, to check that it runs)

Both sides train S runs of the same phases ("4:STEPS:1e-2") batched, end to end, wall clock: the
branches start from S parents' checkpoints at step PREFIX (their records up to it are copied), the
fresh runs from their initial weights. Neither has dense early checkpoints, so both write about the
same records. Interleaved rounds, best of each; the parents are trained once, before timing.
"""

# %%
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import table

from circuitpath.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.training.branch import branch_many, plan_branch
from circuitpath.training.train import train_many

SIZES = {
    "paper": dict(runs=32, prefix=500, steps=500, task=TaskConfig(), model=ModelConfig()),
    "small": dict(runs=4, prefix=20, steps=20, task=TaskConfig(n_ctx=6, k=3, n_train=40, n_test=50),
                  model=ModelConfig(d_model=8, n_ctx=6)),
}


def configs(size: dict, phases: str) -> list[RunConfig]:
    train = TrainConfig(phases=parse_phases(phases), dense_checkpoints=0, checkpoint_every=250, log_every=50)
    return [RunConfig(task=TaskConfig(**{**vars(size["task"]), "seed": s}),
                      model=ModelConfig(**{**vars(size["model"]), "seed": s}), train=train)
            for s in range(size["runs"])]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny size, to check that the script runs")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = SIZES["small" if args.small else "paper"]
    runs, steps = size["runs"], size["steps"]
    new = f"4:{steps}:1e-2"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        parents = train_many(configs(size, f"2:{size['prefix']}:1e-3"), [root / "parents" / f"s{s}" for s in range(runs)],
                             progress=False)
        fresh_configs = configs(size, new)

        def branches():
            shutil.rmtree(root / "branches", ignore_errors=True)
            plans = [plan_branch(p, size["prefix"], parse_phases(new), root / "branches" / p.path.name) for p in parents]
            branch_many(plans, progress=False)

        def fresh():
            train_many(fresh_configs, [root / "fresh" / f"s{s}" for s in range(runs)], force=True, progress=False)

        best = {"branches": float("inf"), "fresh": float("inf")}
        for _ in range(args.rounds):
            best["branches"] = min(best["branches"], timed(branches))
            best["fresh"] = min(best["fresh"], timed(fresh))
    rows = [(name, f"{seconds:.2f}", f"{1e3 * seconds / (runs * steps):.3f}") for name, seconds in best.items()]
    print(f"{runs} runs x {steps} steps of {new}; branches start at step {size['prefix']} of '2:{size['prefix']}:1e-3' "
          f"parents; best of {args.rounds} interleaved rounds")
    print(table(rows, ("what", "wall s", "ms per run-step")))
    print(f"branches / fresh: {best['branches'] / best['fresh']:.2f}x")


if __name__ == "__main__":
    main()
