"""Fig. 7: the runs' parameters along training, embedded in the plane."""

from __future__ import annotations

from circuitpath.analysis.trajectory import parameter_trajectory
from circuitpath.paper.report.page import Panel
from circuitpath.paper.report.section import Context, Section, one_shape, runs_text
from circuitpath.plots import training as plots


def build(ctx: Context) -> list[Panel]:
    trajectory = parameter_trajectory(ctx.runs)
    return [Panel(plots.trajectory_figure(trajectory),
                  "Every checkpoint of every run, its weights flattened and embedded by PCA and t-SNE (the paper draws "
                  "t-SNE of every step). " + (LOOK if ctx.paper else look_for(ctx.runs))
                  + " The paper draws no claim from this figure beyond Fig. 6's.")]


LOOK = "Look for where the curriculum's path turns at the switch and whether the two paths end apart."


def look_for(runs) -> str:
    """What to look for in the drawn runs' paths: a turn at each phase switch, and whether several end apart."""
    switches = {name: run.config.train.phase_starts()[1:] for name, run in runs.items()}
    turns = "; ".join(f"{name} at step {', '.join(map(str, s))}" for name, s in switches.items() if s)
    said = f"Look for where a path turns at its phase switch ({turns})" if turns else "Look for where the path bends"
    return said + (", and whether the paths end apart." if len(runs) > 1 else ".")


SECTION = Section(
    key="fig7", title="Fig. 7 — parameter trajectories", figure=7, claims=(),
    intro="The path of the weights through training.",
    build=build, applies=one_shape, needs="the runs' weights must share one model shape to be embedded together",
    heading=lambda runs: ("Fig. 7 — parameter trajectories", f"The path of the weights of {runs_text(runs)} "
                          "through training."),
)
