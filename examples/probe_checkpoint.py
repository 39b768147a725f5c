# %% [markdown]
# Probe a checkpoint: train a small run, load it back, and read the attention pattern through hooks.
# Run: python examples/probe_checkpoint.py [RUN_DIR]

# %%
from transformer_lens import ActivationCache

import circuitpath as cp
from _demo import command_line, demo_run


def main(run_dir: str | None = None) -> None:
    if run_dir is None:
        run_dir = demo_run("probe")
    run = cp.load_run(run_dir)
    model = run.model_at()  # the last checkpoint
    step = run.steps[-1]
    split = run.data()
    logits, raw = model.run_with_cache(split.x_test[:512])
    cache = ActivationCache(raw, model)
    pattern = cache["pattern", 0].mean(0)  # [key_pos]
    summed = list(run.config.task.relevant_positions(run.config.train.phases[-1]))  # 0..k-1 in the paper's task
    print(f"step {step}: test accuracy {(logits.argmax(-1) == split.y_test[:512]).float().mean():.3f}")
    print("mean attention per position:", " ".join(f"{a:.2f}" for a in pattern.tolist()))
    print(f"attention mass on the {len(summed)} summed positions {summed}: {pattern[summed].sum():.3f}")


# %%
if __name__ == "__main__":
    command_line(main)
