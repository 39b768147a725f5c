"""Fig. 4: clusters of the attention output z_A at the end of each phase, and what they encode."""

from __future__ import annotations

from circuitpath.analysis.clusters import find_clusters
from circuitpath.claims import clusters_on_paper_inputs
from circuitpath.plots import training as plots
from circuitpath.report.page import Panel
from circuitpath.report.section import Context, Section

CAPTION = ("Each point is one input's z_A (its first two principal axes when d > 2), coloured by the labeling its "
           "clusters match best; the title gives the cluster count (1: no group stands out from a structureless "
           "cloud) and the adjusted Rand index with each labeling. ")
PAPER = ("The paper (d = 2): 6 clusters, one per count of ones among the first k, after p = 2; 16, one per sum of the "
         "first k, after fine-tuning on p = 4; not so from p = 4 alone.")
#: The fine-tune study's headline (analyses/finetune_study.py, seeds 0-31 of the d = 2 pipeline's presets).
FINETUNE_STUDY = ("The fine-tune of the paper's d = 2 pipeline (vis_finetune) fails in every variant tried: p = 4 solved "
                  "(train and test acc >= 0.99) on 0/32 seeds [0.00, 0.11] at finetune.py's lr 3e-3 (collapsed to "
                  "chance on 30/32), at lr 3e-4 (32/32 collapsed), with a warm-up (31/32), with the unseen token rows "
                  "reset to their initial values (19/32 collapsed, best train acc 0.971), and the notebook's p = 3 "
                  "fine-tune 0/32 (29/32 collapsed); `python analyses/finetune_study.py`, README 'Why the d = 2 "
                  "fine-tune fails'. The figure below shows the factorization.ipynb curriculum (small_curriculum), "
                  "not a fine-tune that worked.")


def build(ctx: Context) -> list[Panel]:
    panels = []
    for name, run in ctx.runs.items():
        train, k = run.config.train, run.config.task.k
        found_at = {}
        for index, end in enumerate(train.phase_starts()[1:] + [train.total_steps]):
            if end not in run.steps:
                continue
            p = train.phases[index].p
            if ctx.paper:
                found = clusters_on_paper_inputs(run, end, p)
                where = f"the {p ** k} inputs with first k in F_{p}^{k}, spurious 0"
            else:
                found = find_clusters(run.model_at(end), run.data(index).x_test[: ctx.n], p, k)
                where = f"{min(ctx.n, len(run.data(index).x_test))} test inputs"
            found_at[end] = (found.n_clusters, found.best_labeling, found.alignment[found.best_labeling])
            panels.append(Panel(plots.clusters_figure(found, f"{name} at step {end} (p = {p})"),
                                CAPTION + f"Probed on {where}. " + PAPER))
        ctx.headlines.run(name).clusters = found_at
    return panels


SECTION = Section(
    key="fig4", title="Fig. 4 — clusters of the attention output", figure=4,
    claims=("small_p2_solved", "clusters_p2", "clusters_p4", "clusters_scratch"),
    intro="What the attention output z_A encodes at the end of each phase: its clusters and the labelings they match. "
    + FINETUNE_STUDY,
    build=build,
)
