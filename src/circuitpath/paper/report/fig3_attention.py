"""Fig. 3: the query's attention over training; in the p = 2 phase it focuses on the 0s among the first k."""

from __future__ import annotations

from dataclasses import replace

from circuitpath.analysis.dynamics import attention_over_training
from circuitpath.paper.probes import attention_at
from circuitpath.paper.report.figures import attention_per_input_figure
from circuitpath.paper.report.page import Panel
from circuitpath.paper.report.section import Context, Section
from circuitpath.plots import training as plots

#: Inputs drawn one by one, as the paper's Fig. 3 draws the first four test inputs.
SHOWN = 4


def build(ctx: Context) -> list[Panel]:
    panels = []
    for name, run in ctx.runs.items():
        n = min(ctx.n, 512)
        if ctx.paper and _starts_on_p2(run):  # the paper's figure: the p = 2 phase only, on its own test inputs
            panels += [_p2_phase(name, run), _p2_heatmap(name, run, n)]
            final = attention_over_training(run, n=n, steps=run.steps[-1:])  # the headline: the run's last step
        else:
            final = attention_over_training(run, n=n)
            panels.append(_whole_heatmap(name, run, final, n))
        ctx.headlines.run(name).first_k_mass = float(final.first_k_mass[-1])
    return panels


def _starts_on_p2(run) -> bool:
    phases = run.config.train.phases
    return len(phases) > 1 and phases[0].p == 2


def _probed(run, phase: int, n: int) -> int:
    return min(n, len(run.data(phase).x_test))


def _p2_heatmap(name: str, run, n: int) -> Panel:
    switch = run.config.train.phase_starts()[1]
    steps = [s for s in run.steps if s <= switch]
    attention = replace(attention_over_training(run, n=n, phase=0, steps=steps), phase_switches=[])
    return Panel(
        plots.attention_heatmap(attention, f"{name}: attention of the query during the p = 2 phase (steps "
                                           f"{steps[0]}-{steps[-1]})"),
        f"Mean attention on each key position over {_probed(run, 0, n)} p = 2 test inputs, at every checkpoint of "
        f"the p = 2 phase, steps {steps[0]} to {steps[-1]} (log-spaced early); the p = {run.config.train.phases[1].p} "
        "phase after it is not drawn. "
        "Look for the mass moving onto the k summed positions below the red line and the spurious positions fading.")


def _whole_heatmap(name: str, run, attention, n: int) -> Panel:
    phases, switches = run.config.train.phases, run.phase_boundaries()
    marked = "".join(f"; the dotted line at step {step} marks the switch to p = {phases[i + 1].p}"
                     for i, step in enumerate(switches) if step in attention.steps)
    return Panel(
        plots.attention_heatmap(attention, f"{name}: attention of the query over training (steps "
                                           f"{attention.steps[0]}-{attention.steps[-1]})"),
        f"Mean attention on each key position over {_probed(run, -1, n)} test inputs of the last phase (p = "
        f"{phases[-1].p}), at every checkpoint (log-spaced early){marked}. Look for the mass moving onto the k "
        "summed positions below the red line and the spurious positions fading.")


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
    key="fig3", title="Fig. 3 — attention of the query over training", figure=3,
    claims=("focus_on_zeros", "focus_on_zeros_if_pretrained", "focus_on_zeros_d32"),
    intro="Where the single query looks, per key position, along training; in a `circuitpath reproduce` report, "
          "over the p = 2 phase (the paper's figure).",
    build=build,
)
