# %% [markdown]
# Ablate attention positions: knock out each key position's value (and the sets "first k", or "relevant"
# when the task sums other positions, and "spurious") with its mean over the inputs, and see which positions the model cannot do without.
# v3 names position 3's value; the effect is the accuracy lost (intact - ablated). Measured on training
# inputs: a memorising model is at chance on test inputs and has nothing to lose there.
# Run: python examples/ablate_positions.py [RUN_DIR]   (e.g. runs/curriculum/seed_0 after `circuitpath reproduce`)

# %%
import circuitpath as cp
from _demo import command_line, demo_run
from circuitpath.analysis.ablation import ablate, position_sets
from circuitpath.data import truth_of


def main(run_dir: str | None = None) -> None:
    if run_dir is None:
        run_dir = demo_run("ablate")
    run = cp.load_run(run_dir)
    split, task = run.data(), run.config.task
    truth = truth_of(task, run.config.train.phases[-1])  # k for the paper's first k, else the relevant positions
    result = ablate(run.model_at(), split.x_train[:1024], split.y_train[:1024],
                    sets=position_sets(truth, task.n_ctx), method="mean")
    print(f"intact, on {min(1024, len(split.x_train))} training inputs: accuracy {result.base_accuracy:.3f}, "
          f"loss {result.base_loss:.3f}")
    for (name, accuracy, loss), effect in zip(result.rows(), result.effect.tolist()):
        print(f"{name:>16}: accuracy {accuracy:.3f} (effect {effect:+.3f}), loss {loss:.3f}")


# %%
if __name__ == "__main__":
    command_line(main)
