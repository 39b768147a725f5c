"""Fig. 6: the loss on the straight line between the scratch and the curriculum solutions."""

from __future__ import annotations

from circuitpath.analysis.barrier import run_barrier
from circuitpath.paper.claims import BARRIER
from circuitpath.paper.report.figures import seed_values_figure
from circuitpath.paper.report.page import Panel
from circuitpath.paper.report.section import Context, Section, one_shape
from circuitpath.plots import training as plots


def build(ctx: Context) -> list[Panel]:
    (name_a, run_a), (name_b, run_b) = list(ctx.runs.items())[:2]
    barrier = run_barrier(run_a, run_b)
    ctx.headlines.barrier, ctx.headlines.barrier_pair = barrier.height, (name_a, name_b)
    panels = [Panel(plots.barrier_figure(barrier, name_a, name_b),
                    f"Loss and accuracy of (1 - t) θ_{name_a} + t θ_{name_b}; the barrier is the peak of the training "
                    "loss above the higher end. " + ("The paper: a high barrier in between, so the run from scratch "
                    "cannot slide to the curriculum's solution." if ctx.paper else "A barrier above the loss of a "
                    "uniform guess (ln p) means the two solutions lie in separate basins."))]
    if "barrier" in ctx.claims:
        panels.append(Panel(seed_values_figure({"train-loss barrier": ctx.claims["barrier"].values},
                                               "Barrier height on every seed", "train loss above the higher end",
                                               {f"ln 4 = {BARRIER:.3f}": BARRIER}),
                            "One point per seed; the claim holds on a seed whose barrier rises above the loss of a "
                            "uniform guess (ln 4)."))
    return panels


SECTION = Section(
    key="fig6", title="Fig. 6 — loss barrier between the two solutions", figure=6, claims=("barrier",),
    intro="Whether the solutions found from scratch and through the curriculum lie in one basin.",
    build=build, applies=lambda runs: len(runs) >= 2 and one_shape(runs),
    needs="the loss barrier needs two runs with models of one shape to compare (`circuitpath analyze RUN_A RUN_B`)",
    heading=lambda runs: ("Fig. 6 — loss barrier between two solutions",
                          f"Whether the final weights of {' and '.join(list(runs)[:2])} lie in one basin: the loss on "
                          "the straight line between them."),
)
