# %% [markdown]
# Fig. 4: clusters of the attention output at the end of every phase, on the paper's inputs (every
# first k in F_p^k, spurious tokens 0), and the labeling they match.
# Run: python analyses/fig4_clusters.py [RUN ...]   (default: reproduce's d = 2 runs)

# %%
from common import runs_from, save, script

from circuitpath.paper.claims import clusters_on_paper_inputs
from circuitpath.plots.training import clusters_figure


def main(argv=None):
    runs = runs_from(argv, 4, "fig4_clusters")
    figures = []
    for name, run in runs.items():
        train = run.config.train
        for index, end in enumerate(train.phase_starts()[1:] + [train.total_steps]):
            found = clusters_on_paper_inputs(run, end, train.phases[index].p)
            print(f"{name} step {end}: {found.n_clusters} clusters, ARI {found.alignment}")
            figures.append(clusters_figure(found, f"{name} at step {end}"))
    return save(figures, runs, "fig4_clusters")


# %%
if __name__ == "__main__":
    script(main)
