# %% [markdown]
# Fig. 5: train and test accuracy and loss of the runs against step, phase switches marked.
# Run: python analyses/fig5_accuracy.py [RUN ...]   (default: reproduce's `scratch` and `curriculum` runs)

# %%
from common import runs_from, save, script

from circuitpath.plots.training import accuracy_curves


def main(argv=None):
    runs = runs_from(argv, 5, "fig5_accuracy")
    return save([accuracy_curves(runs)], runs, "fig5_accuracy")


# %%
if __name__ == "__main__":
    script(main)
