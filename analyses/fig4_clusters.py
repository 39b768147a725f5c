# %% [markdown]
# Fig. 4: clusters of the attention output at the end of every phase, and what they encode.
# Run: python analyses/fig4_clusters.py [RUN ...]

# %%
from common import runs_from, save

from circuitpath.analysis.clusters import find_clusters
from circuitpath.plots.training import clusters_figure


def main(argv=None):
    runs = runs_from(argv)
    figures = []
    for name, run in runs.items():
        train, k = run.config.train, run.config.task.k
        for index, end in enumerate(train.phase_starts()[1:] + [train.total_steps]):
            found = find_clusters(run.model_at(end), run.data(index).x_test[:1024], train.phases[index].p, k)
            print(f"{name} step {end}: {found.n_clusters} clusters (1: none well separated), ARI {found.alignment}")
            figures.append(clusters_figure(found, f"{name} at step {end}"))
    return save(figures, runs, "fig4_clusters")


# %%
if __name__ == "__main__":
    main()
