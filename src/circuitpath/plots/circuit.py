"""Circuit diagrams: an interactive plotly figure and a static SVG that needs no browser."""

from __future__ import annotations

from html import escape
from pathlib import Path

import plotly.graph_objects as go

from circuitpath.analysis.circuit import Circuit
from circuitpath.storage import write_atomic


def _layout(circuit: Circuit) -> dict[str, tuple[float, float]]:
    """Layers bottom to top: positions, attention, MLP, logits; each layer centred."""
    graph, places = circuit.graph, {}
    layers: dict[int, list[str]] = {}
    for node, data in graph.nodes(data=True):
        layers.setdefault(data["layer"], []).append(node)
    width = max(len(nodes) for nodes in layers.values())
    for layer, nodes in layers.items():
        nodes.sort(key=lambda n: int(n[1:]) if n.startswith("x") and n[1:].isdigit() else 0)
        offset = (width - len(nodes)) / 2
        for i, node in enumerate(nodes):
            places[node] = (offset + i, float(layer))
    return places


def circuit_figure(circuit: Circuit, title: str) -> go.Figure:
    places, graph = _layout(circuit), circuit.graph
    figure = go.Figure()
    for source, target, data in graph.edges(data=True):
        (x0, y0), (x1, y1) = places[source], places[target]
        figure.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="text",
            text=f"{source} → {target}: accuracy lost when ablated {data['effect']:.3f}",
            line={"width": 1 + 12 * max(data["effect"], 0), "color": "rgb(214, 39, 40)",
                  "dash": "dot" if data.get("residual") else "solid"}))
    nodes = list(graph.nodes(data=True))
    figure.add_trace(go.Scatter(
        x=[places[n][0] for n, _ in nodes], y=[places[n][1] for n, _ in nodes], mode="markers+text",
        text=[f"{n}<br>{d['effect']:.2f}" for n, d in nodes], textposition="middle right", showlegend=False,
        marker={"size": [14 + 30 * max(d["effect"], 0) for _, d in nodes],
                "color": ["orange" if d.get("summed") else "rgb(60, 60, 60)" for _, d in nodes]}))
    pruned = ", ".join(circuit.pruned) or "nothing"
    figure.update_layout(
        title=f"{title}<br><sup>effect = accuracy lost when mean-ablated; pruned below {circuit.threshold}: {pruned}</sup>",
        xaxis={"visible": False}, yaxis={"visible": False}, template="plotly_white", height=500)
    return figure


def write_circuit_svg(circuit: Circuit, path: str | Path, title: str) -> Path:
    """A static SVG of the circuit diagram, written directly (no browser, no network)."""
    places, graph = _layout(circuit), circuit.graph
    width = max(x for x, _ in places.values()) + 1
    scale_x, scale_y, margin = 90.0, 120.0, 60.0
    point = lambda node: (margin + places[node][0] * scale_x, margin + 40 + (3 - places[node][1]) * scale_y)
    size = (margin * 2 + width * scale_x + 80, margin * 2 + 40 + 3 * scale_y)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size[0]:.0f}" height="{size[1]:.0f}" '
             f'font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{margin}" y="30" font-size="16">{escape(title)}</text>']
    for source, target, data in graph.edges(data=True):
        (x0, y0), (x1, y1) = point(source), point(target)
        dash = ' stroke-dasharray="6 4"' if data.get("residual") else ""
        parts.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="rgb(214,39,40)" '
                     f'stroke-width="{1 + 12 * max(data["effect"], 0):.1f}"{dash}/>')
    for node, data in graph.nodes(data=True):
        x, y = point(node)
        colour = "orange" if data.get("summed") else "rgb(60,60,60)"
        radius = 7 + 15 * max(data["effect"], 0)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{colour}"/>')
        parts.append(f'<text x="{x + radius + 5:.1f}" y="{y + 4:.1f}">{escape(node)} {data["effect"]:.2f}</text>')
    parts.append("</svg>\n")
    path = Path(path)
    write_atomic(path, "\n".join(parts).encode())
    return path
