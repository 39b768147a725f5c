"""Graph figures: attention flow with a slider over checkpoints."""

from __future__ import annotations

import networkx as nx
import plotly.graph_objects as go

from circuitpath.analysis.flow import OUTPUT, FlowSequence
from circuitpath.plots.style import TEMPLATE
from circuitpath.plots.style import title as titled

CHANGE_COLOURS = {1: "rgb(214, 39, 40)", -1: "rgb(31, 119, 180)", 0: "rgb(150, 150, 150)"}


def _flow_positions(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    inputs = [n for n, data in graph.nodes(data=True) if data["kind"] == "input"]
    layout = {node: (float(i), 0.0) for i, node in enumerate(inputs)}
    layout[OUTPUT] = ((len(inputs) - 1) / 2, 1.0)
    return layout


def _flow_traces(graph: nx.DiGraph) -> list[go.Scatter]:
    layout = _flow_positions(graph)
    traces = []
    for source, target, data in graph.edges(data=True):
        (x0, y0), (x1, y1) = layout[source], layout[target]
        traces.append(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text", showlegend=False,
                                 text=f"{source}: attention {data['weight']:.3f}",
                                 line={"width": 1 + 14 * data["weight"], "color": CHANGE_COLOURS[data["change"]]}))
    nodes = list(graph.nodes(data=True))
    traces.append(go.Scatter(
        x=[layout[n][0] for n, _ in nodes], y=[layout[n][1] for n, _ in nodes], mode="markers+text",
        text=[n for n, _ in nodes], textposition=["bottom center" if d["kind"] == "input" else "top center" for _, d in nodes],
        marker={"size": 18, "color": ["black" if d["kind"] == "output" else ("orange" if d["summed"] else "lightgrey")
                                      for _, d in nodes]},
        hoverinfo="text", showlegend=False))
    return traces


def flow_figure(flow: FlowSequence, title: str) -> go.Figure:
    """The flow graph at each checkpoint, one slider step per checkpoint (red: attention grew, blue: shrank)."""
    frames = [go.Frame(data=_flow_traces(graph), name=str(step)) for step, graph in zip(flow.steps, flow.graphs)]
    figure = go.Figure(data=frames[-1].data, frames=frames)
    inputs = "; ".join(f"p = {flow.moduli[phase]} checkpoints (phase {phase}) on x = {' '.join(map(str, tokens))}"
                       for phase, tokens in flow.inputs.items())
    figure.update_layout(
        **titled(title, "orange: the k summed positions; edge width: attention; red: grew, blue: shrank since "
                 f"the previous checkpoint on the same input. {inputs}."),
        xaxis={"visible": False}, yaxis={"visible": False, "range": [-0.4, 1.3]}, template=TEMPLATE, height=440,
        sliders=[{"active": len(frames) - 1, "currentvalue": {"prefix": "step "},
                  "steps": [{"label": f.name, "method": "animate",
                             "args": [[f.name], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}]}
                            for f in frames]}],
    )
    return figure
