"""Fig. 4: clusters of the attention output z_A at the end of each phase, and what they encode."""

from __future__ import annotations

from circuitpath.analysis.clusters import FITS_ARI, find_clusters
from circuitpath.paper.claims import PRETRAINED, clusters_on_paper_inputs
from circuitpath.paper.presets import VIS_RESET
from circuitpath.paper.report.page import Panel
from circuitpath.paper.report.section import Context, Section
from circuitpath.plots import training as plots

CAPTION = ("Each point is one input's z_A (its first two principal axes when d > 2), coloured by the sum of its first "
           "k (as the paper's figure; its label y is that sum mod p); the title gives the cluster count (1: no group stands out from a structureless "
           f"cloud), the adjusted Rand index with each labeling, and the labeling that fits (ARI >= {FITS_ARI}) or that "
           "none does. ")
PAPER = ("The paper (d = 2): 6 clusters, one per count of ones among the first k, after p = 2; 16, one per sum of the "
         "first k, after fine-tuning on p = 4; not so from p = 4 alone.")
VARIANTS = ("Which fine-tune each panel shows: vis_finetune is finetune.py's (a new Adam at lr 3e-3 on p = 4 after the "
            "p = 2 phase); vis_finetune_reset is the same with the embedding rows of the tokens unseen during p = 2 "
            "(2 and 3) put back to their initial values at the switch, the one variant of `analyses/finetune_study.py` "
            "that moved anything (README, 'Why the d = 2 fine-tune fails', has the rates of every variant tried: a "
            "lower learning rate, a warm-up, the notebook's p = 3).")


def claims_note(ctx: Context) -> str:
    """Where the claims table has each fine-tune's rate: over all d = 2 seeds, and over the pretrained ones only
    when such rows exist (no seed's p = 2 pretraining succeeded: none)."""
    if not ctx.claims:
        return ""
    if any(key.endswith(PRETRAINED) for key in ctx.claims):
        return (" The claims table gives each one's rate over all d = 2 seeds and over the seeds whose pretraining "
                f"succeeded (the {PRETRAINED} rows).")
    return (" The claims table gives each one's rate over all d = 2 seeds; no seed's p = 2 pretraining succeeded "
            "(vis_p2_solved), so it has no rows over the pretrained seeds.")


def build(ctx: Context) -> list[Panel]:
    panels = []
    for name, run in ctx.runs.items():
        train, k = run.config.train, run.config.task.k
        found_at = {}
        ends = train.phase_starts()[1:] + [train.total_steps]
        if name == VIS_RESET:  # its p = 2 phase is vis_finetune's: only the fine-tune's end differs
            ends = ends[-1:]
        for index, end in enumerate(ends, start=len(train.phases) - len(ends)):
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
    claims=("vis_p2_solved",) + tuple(key + suffix for key in ("clusters_p2", "clusters_p4", "finetune_solved",
                                                               "clusters_p4_reset", "finetune_solved_reset")
                                      for suffix in ("", PRETRAINED)) + ("clusters_scratch",),
    intro="What the attention output z_A encodes at the end of each phase: its clusters and the labelings they match. "
    + VARIANTS,
    build=build,
    claims_note=claims_note,
)
