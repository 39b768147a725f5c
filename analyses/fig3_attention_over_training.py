# %% [markdown]
# Fig. 3: attention on single inputs along the p = 2 phase (the paper's view), and whether the query
# ends up on the 0s among the first k; for runs without a p = 2 phase, the mean attention over training.
# Run: python analyses/fig3_attention_over_training.py [RUN ...]   (default: reproduce's `curriculum` run)

# %%
from common import runs_from, save, script

from circuitpath.analysis.dynamics import attention_over_training
from circuitpath.paper.probes import attention_at, token_focus
from circuitpath.paper.report.figures import attention_per_input_figure
from circuitpath.plots.training import attention_heatmap


def main(argv=None):
    runs = runs_from(argv, 3, "fig3_attention_over_training")
    figures = []
    for name, run in runs.items():
        train, k = run.config.train, run.config.task.k
        if train.phases[0].p == 2:
            end = train.phase_starts()[1] if len(train.phases) > 1 else train.total_steps
            steps = [s for s in run.steps if s <= end]
            tokens = run.data(0).x_test[:1024]
            pattern = attention_at(run, steps, tokens)
            focus = token_focus(pattern[-1], tokens, k)
            print(f"{name} step {end}: attention on a 0 among the first k {focus.on_zero:.3f}, on a 1 "
                  f"{focus.on_one:.3f} (ratio {focus.ratio:.2f}, {focus.inputs} inputs)")
            figures.append(attention_per_input_figure(steps, pattern[:, :4], tokens[:4], k, f"{name}: p = 2 phase"))
        figures.append(attention_heatmap(attention_over_training(run), name))
    return save(figures, runs, "fig3_attention_over_training")


# %%
if __name__ == "__main__":
    script(main)
