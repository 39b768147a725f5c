# %% [markdown]
# Fig. 7: the runs' parameters across checkpoints in one PCA space and with t-SNE.
# Run: python analyses/fig7_trajectory.py [RUN ...]   (default: reproduce's `scratch` and `curriculum` runs)

# %%
from common import runs_from, save, script

from circuitpath.analysis.trajectory import parameter_trajectory
from circuitpath.plots.training import trajectory_figure


def main(argv=None):
    runs = runs_from(argv, 7, "fig7_trajectory")
    return save([trajectory_figure(parameter_trajectory(runs))], runs, "fig7_trajectory")


# %%
if __name__ == "__main__":
    script(main)
