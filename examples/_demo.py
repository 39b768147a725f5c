"""The run the examples train when they are given none: small enough to take seconds, and honest about it."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import circuitpath as cp

#: T = 8, k = 3, p = 4, full batch: learns the task (test acc 1.0 from about step 300 at seed 0).
DEMO = cp.RunConfig(
    task=cp.TaskConfig(n_ctx=8, k=3),
    model=cp.ModelConfig(n_ctx=8),
    train=cp.TrainConfig(phases=cp.parse_phases("4:400:1e-2"), checkpoint_every=100, dense_checkpoints=4),
)


def demo_run(name: str) -> str:
    """Train the demo run into a temporary directory, say what it is and how long it took; its path."""
    path = Path(tempfile.mkdtemp()) / name
    start = time.perf_counter()
    run = cp.train(DEMO, path, progress=False)
    final = run.final_metrics()
    task = DEMO.task
    print(f"demo run: T = {task.n_ctx}, k = {task.k}, p = 4, {DEMO.train.total_steps} full-batch steps in "
          f"{time.perf_counter() - start:.1f} s; test acc {final['test_acc']:.3f}. Not the paper's experiment "
          "(T = 12, k = 5, p = 2 then 4): run `circuitpath reproduce` and pass runs/curriculum/seed_0 for that.")
    if final["test_acc"] < 0.99:
        print("the demo run has not learned the task: what follows describes an unfinished model")
    return str(path)


def command_line(main) -> None:
    """Call `main` with the RUN_DIR given on the command line (or none); a bad run ends in one line, exit status 2."""
    if len(sys.argv) > 2:
        sys.exit(f"usage: python {sys.argv[0]} [RUN_DIR]")
    try:
        main(sys.argv[1] if len(sys.argv) > 1 else None)
    except cp.CircuitPathError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(2)
