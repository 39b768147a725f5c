# %% [markdown]
# Fig. 2: the attention flow of the all-3s input (the paper's), update by update: edges coloured by
# the sign of the last change, and how many first-epoch updates raised a spurious position.
# Run: python analyses/fig2_attention_flow.py [RUN ...]   (default: reproduce's `minibatch` run)

# %%
from common import runs_from, save, script

from circuitpath.analysis.flow import attention_flow
from circuitpath.paper.probes import constant_inputs, update_changes
from circuitpath.paper.report.fig2_flow import leading_updates
from circuitpath.paper.report.figures import update_changes_figure
from circuitpath.plots.graphs import flow_figure


def main(argv=None):
    runs = runs_from(argv, 2, "fig2_attention_flow")
    figures = []
    for name, run in runs.items():
        tokens = constant_inputs(run.config.train.phases[0].p, run.config.task.n_ctx)[-1]
        figures.append(flow_figure(attention_flow(run, tokens), f"{name}: input {''.join(map(str, tokens.tolist()))}"))
        dense = leading_updates(run.steps)  # checkpoints saved after every update from the start
        if len(dense) > 1:
            changes = update_changes(run, dense, tokens)
            raised = changes.spurious_increased
            print(f"{name}: {int(raised.sum())} of the first {len(raised)} updates raised a spurious position; "
                  f"final spurious mass {update_changes(run, [run.steps[-1]], tokens).spurious_mass[0]:.3f}")
            figures.append(update_changes_figure(changes, tokens.tolist(), f"{name}: change at each update"))
    return save(figures, runs, "fig2_attention_flow")


# %%
if __name__ == "__main__":
    script(main)
