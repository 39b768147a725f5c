# %% [markdown]
# Fig. 6: loss and accuracy on the straight line between the final checkpoints of two runs.
# Run: python analyses/fig6_barrier.py [RUN_A RUN_B]   (default: reproduce's `scratch` and `curriculum` runs)

# %%
from common import runs_from, save, script

from circuitpath.analysis.barrier import run_barrier
from circuitpath.plots.training import barrier_figure


def main(argv=None):
    runs = runs_from(argv, 6, "fig6_barrier", need=2)
    (name_a, run_a), (name_b, run_b) = list(runs.items())[:2]
    result = run_barrier(run_a, run_b)
    print(f"train loss barrier {result.height:.4g}, test loss barrier {result.test_height:.4g}")
    return save([barrier_figure(result, name_a, name_b)], runs, "fig6_barrier")


# %%
if __name__ == "__main__":
    script(main)
