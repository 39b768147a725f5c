"""Fig. 3: the query's attention over training; in the p = 2 phase it focuses on the 0s among the first k."""

from __future__ import annotations

from circuitpath.analysis.dynamics import attention_over_training
from circuitpath.analysis.probes import attention_at
from circuitpath.plots import training as plots
from circuitpath.plots.paper import attention_per_input_figure
from circuitpath.report.page import Panel
from circuitpath.report.section import Context, Section

#: Inputs drawn one by one, as the paper's Fig. 3 draws the first four test inputs.
SHOWN = 4


def build(ctx: Context) -> list[Panel]:
    panels = []
    for name, run in ctx.runs.items():
        if ctx.paper and len(run.config.train.phases) > 1 and run.config.train.phases[0].p == 2:
            panels.append(_p2_phase(name, run))
        attention = attention_over_training(run, n=min(ctx.n, 512))
        ctx.headlines.run(name).first_k_mass = float(attention.first_k_mass[-1])
        panels.append(Panel(
            plots.attention_heatmap(attention, f"{name}: attention of the query over training"),
            f"Mean attention on each key position over {min(ctx.n, 512)} test inputs of the last phase, at every "
            "checkpoint (log-spaced early). Look for the mass moving onto the k summed positions below the red line "
            "and the spurious positions fading."))
    return panels


def _p2_phase(name: str, run) -> Panel:
    switch = run.config.train.phase_starts()[1]
    steps = [s for s in run.steps if s <= switch]
    tokens = run.data(0).x_test[:SHOWN]
    pattern = attention_at(run, steps, tokens)
    figure = attention_per_input_figure(steps, pattern, tokens, run.config.task.k,
                                        f"{name}: attention on {SHOWN} p = 2 test inputs during the p = 2 phase")
    return Panel(figure, "Each panel is one input (title: its first k tokens, then the spurious ones); rows are "
                 "checkpoints of the p = 2 phase. The paper: the query ends up on the 0s among the first k, so the "
                 "dark cells should sit on the columns x_i=0 left of the red line.")


SECTION = Section(
    key="fig3", title="Fig. 3 — attention over the p = 2 phase", figure=3,
    claims=("focus_on_zeros", "focus_on_zeros_if_pretrained", "focus_on_zeros_d32"),
    intro="Where the single query looks, per key position, along training.",
    build=build,
)
