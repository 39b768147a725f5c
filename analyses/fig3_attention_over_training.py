# %% [markdown]
# Fig. 3: attention per key position against step, the boundary k marked, with the mass on the first
# k and the largest spurious attention. Run: python analyses/fig3_attention_over_training.py [RUN ...]

# %%
from common import runs_from, save

from circuitpath.analysis.dynamics import attention_over_training
from circuitpath.plots.training import attention_heatmap


def main(argv=None):
    runs = runs_from(argv)
    figures = [attention_heatmap(attention_over_training(run), name) for name, run in runs.items()]
    return save(figures, runs, "fig3_attention_over_training")


# %%
if __name__ == "__main__":
    main()
