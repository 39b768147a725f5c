"""Fig. 7: the runs' parameters along training, embedded in the plane."""

from __future__ import annotations

from circuitpath.analysis.trajectory import parameter_trajectory
from circuitpath.plots import training as plots
from circuitpath.report.page import Panel
from circuitpath.report.section import Context, Section, one_shape


def build(ctx: Context) -> list[Panel]:
    trajectory = parameter_trajectory(ctx.runs)
    return [Panel(plots.trajectory_figure(trajectory),
                  "Every checkpoint of every run, its weights flattened and embedded by PCA and t-SNE (the paper draws "
                  "t-SNE of every step). Look for where the curriculum's path turns at the switch and whether the two "
                  "paths end apart. The paper draws no claim from this figure beyond Fig. 6's.")]


SECTION = Section(
    key="fig7", title="Fig. 7 — parameter trajectories", figure=7, claims=(),
    intro="The path of the weights through training.",
    build=build, applies=one_shape,
)
