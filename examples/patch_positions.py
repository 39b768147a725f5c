# %% [markdown]
# Which key positions carry the answer? Patch each position's value vector from clean inputs into
# inputs whose first k tokens were redrawn, and see how much of the clean accuracy returns.
# Run: python examples/patch_positions.py [RUN_DIR]

# %%
import sys
import tempfile
from pathlib import Path

import torch

import circuitpath as cp
from circuitpath.analysis.patching import corrupt_positions, patch_values_by_position
from circuitpath.data import targets


def main(run_dir: str | None = None) -> None:
    if run_dir is None:
        run_dir = str(Path(tempfile.mkdtemp()) / "patch")
        # the paper's p = 2 phase (~10 s); better: `circuitpath reproduce`, then pass runs/curriculum
        cp.train(cp.RunConfig(train=cp.TrainConfig(phases=cp.parse_phases("2:3000:1e-3"))), run_dir)
    run = cp.load_run(run_dir)
    model, task, p = run.model_at(), run.config.task, run.config.train.phases[-1].p
    clean = run.data().x_test[:1024]
    corrupted = corrupt_positions(clean, list(range(task.k)), p, torch.Generator().manual_seed(0))
    result = patch_values_by_position(model, clean, corrupted, targets(clean, p, task.k), targets(corrupted, p, task.k),
                                      metric="accuracy")
    print(f"accuracy: clean {result.clean:.3f}, corrupted {result.corrupted:.3f}")
    for position, restored in enumerate(result.normalized().tolist()):
        print(f"position {position:>2}{' (summed)' if position < task.k else '          '}: {restored:+.3f} of the clean run restored")


# %%
if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
