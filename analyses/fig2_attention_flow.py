# %% [markdown]
# Fig. 2: attention-flow graphs over training, each phase's checkpoints on the first test input of
# that phase, edges coloured by the sign of the last change. Run: python analyses/fig2_attention_flow.py [RUN ...]

# %%
from common import runs_from, save

from circuitpath.analysis.flow import attention_flow
from circuitpath.plots.graphs import flow_figure


def main(argv=None):
    runs = runs_from(argv)
    figures = [flow_figure(attention_flow(run), name) for name, run in runs.items()]
    return save(figures, runs, "fig2_attention_flow")


# %%
if __name__ == "__main__":
    main()
