# %% [markdown]
# Which key positions carry the answer? Redraw one position's token at a time, patch that position's
# value vector back from the clean run, and see how much of the clean logit difference returns
# (0 = as corrupted, 1 = as clean), on the inputs whose answer the redraw flips. v3 names position 3's
# value; the effect is the change from the corrupted baseline (patched - corrupted).
# Run: python examples/patch_positions.py [RUN_DIR]   (e.g. runs/curriculum/seed_0 after `circuitpath reproduce`)

# %%
import circuitpath as cp
from _demo import command_line, demo_run
from circuitpath.analysis.patching import position_patching


def main(run_dir: str | None = None) -> None:
    if run_dir is None:
        run_dir = demo_run("patch")
    run = cp.load_run(run_dir)
    model, task, last = run.model_at(), run.config.task, run.config.train.phases[-1]
    summed = task.relevant_positions(last)  # the truth: 0..k-1, unless the task drew or was given others
    clean = run.data().x_test[:1024]
    result = position_patching(model, clean, last.p, len(summed), seed=0)
    print(f"{len(clean)} inputs, redrawn with seed {result.seed}; {result.metric}")
    rows = zip(result.labels, result.effect.tolist(), result.normalized().tolist(), result.measured.tolist())
    for t, (label, effect, restored, flipped) in enumerate(rows):
        label += " (summed)" if t in summed else ""
        if flipped == 0:
            print(f"{label:<12}: no answer flips when it is redrawn: the model ignores it")
        else:
            print(f"{label:<12}: effect {effect:+.3f}, {restored:.3f} of the way back to clean ({flipped} answers flip)")


# %%
if __name__ == "__main__":
    command_line(main)
