"""Graph figures: attention flow with a slider over checkpoints."""

from __future__ import annotations

import networkx as nx
import plotly.graph_objects as go

from circuitpath.analysis.flow import OUTPUT, FlowSequence, ReadoutFlow
from circuitpath.plots.style import TEMPLATE, class_colour
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


def readout_flow_figures(flow: ReadoutFlow, title: str) -> list[go.Figure]:
    """Two figures of a `ReadoutFlow`: the attention mass on the relevant positions per layer and head over
    training, and the final checkpoint's attention on each key position, one row per layer and head."""
    from plotly.subplots import make_subplots

    layers, heads = flow.pattern.shape[1:3]
    names = [f"L{layer}H{head}" for layer in range(layers) for head in range(heads)]
    relevant, spurious = flow.mass().flatten(1), flow.mass(spurious=True).flatten(1)
    mass = go.Figure(layout={"template": TEMPLATE})
    for index, name in enumerate(names):
        colour = class_colour(index)
        mass.add_scatter(x=flow.steps, y=relevant[:, index].tolist(), name=f"{name} relevant", mode="lines",
                         line={"color": colour})
        mass.add_scatter(x=flow.steps, y=spurious[:, index].tolist(), name=f"{name} spurious", mode="lines",
                         line={"color": colour, "dash": "dot"})
    mass.update_layout(**titled(title + ": attention of the readout position on the relevant positions",
                                f"per layer (L) and head (H), mean over {flow.n} test inputs of each checkpoint's phase; "
                                "solid: relevant positions, dotted: spurious ones"),
                       xaxis_title="step", yaxis={"title": "attention mass", "range": [0, 1.02]}, height=420)
    final = make_subplots(rows=1, cols=1)
    final.add_heatmap(z=flow.pattern[-1].flatten(0, 1).tolist(), x=flow.labels, y=names, zmin=0, zmax=1,
                      colorscale="Blues", colorbar={"title": "attention"})
    relevant_last = set(flow.relevant[-1])
    final.update_xaxes(tickvals=flow.labels, ticktext=[f"{label}*" if label[1:].isdigit() and int(label[1:]) in relevant_last
                                                       else label for label in flow.labels])
    final.update_layout(**titled(title + f": attention of the readout position at step {flow.steps[-1]}",
                                 "one row per layer and head; starred: the relevant positions"),
                        template=TEMPLATE, height=160 + 30 * len(names), yaxis={"autorange": "reversed"})
    return [mass, final]
