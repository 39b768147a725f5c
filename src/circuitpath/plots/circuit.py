"""Circuit diagrams: an interactive plotly figure and a static SVG that needs no browser.

Layers run bottom to top: input positions, attention, MLP, logits. Attention, MLP and logits sit on
one vertical line, so the residual path (attention -> logits, around the MLP) is drawn as an arc to
the right of it; labels sit where no edge runs (positions below their node, the others to the
left) on a white ground.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import plotly.graph_objects as go

from circuitpath.analysis.circuit import Circuit
from circuitpath.plots.style import TEMPLATE, wrap
from circuitpath.plots.style import title as titled
from circuitpath.runs.storage import write_atomic

#: How far right of the vertical line the residual arc bulges, in layout units (one position apart = 1).
ARC_BULGE = 1.2
EDGE_COLOUR = "rgb(214, 39, 40)"


def _layout(circuit: Circuit) -> dict[str, tuple[float, float]]:
    """Layers bottom to top: positions, attention, MLP, logits; each layer centred."""
    graph, places = circuit.graph, {}
    layers: dict[int, list[str]] = {}
    for node, data in graph.nodes(data=True):
        layers.setdefault(data["layer"], []).append(node)
    width = max(len(nodes) for nodes in layers.values())
    for layer, nodes in layers.items():
        nodes.sort(key=lambda n: int(n[1:]) if n.startswith("v") and n[1:].isdigit() else 0)
        offset = (width - len(nodes)) / 2
        for i, node in enumerate(nodes):
            places[node] = (offset + i, float(layer))
    return places


def edge_path(start: tuple[float, float], end: tuple[float, float], residual: bool, points: int = 24) -> list[tuple[float, float]]:
    """Points along an edge: a straight segment, or for the residual path a quadratic Bézier arc
    whose middle lies ARC_BULGE / 2 to the right of the straight line."""
    if not residual:
        return [start, end]
    (x0, y0), (x1, y1) = start, end
    cx, cy = (x0 + x1) / 2 + ARC_BULGE, (y0 + y1) / 2
    return [((1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1, (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1)
            for t in (i / (points - 1) for i in range(points))]


def _label_side(data: dict) -> str:
    return "below" if data["layer"] == 0 else "left"


def circuit_figure(circuit: Circuit, title: str) -> go.Figure:
    places, graph = _layout(circuit), circuit.graph
    figure = go.Figure()
    for source, target, data in graph.edges(data=True):
        path = edge_path(places[source], places[target], bool(data.get("residual")))
        name = "residual path (around the MLP)" if data.get("residual") else f"{source} → {target}"
        figure.add_trace(go.Scatter(
            x=[x for x, _ in path], y=[y for _, y in path], mode="lines", showlegend=False, hoverinfo="text",
            text=f"{name}: accuracy lost when ablated {data['effect']:.3f}",
            line={"width": 1 + 12 * max(data["effect"], 0), "color": EDGE_COLOUR,
                  "dash": "dot" if data.get("residual") else "solid"}))
    nodes = list(graph.nodes(data=True))
    figure.add_trace(go.Scatter(
        x=[places[n][0] for n, _ in nodes], y=[places[n][1] for n, _ in nodes], mode="markers", showlegend=False,
        hoverinfo="text", text=[f"{n}: {d['effect']:.3f}" for n, d in nodes],
        marker={"size": [14 + 30 * max(d["effect"], 0) for _, d in nodes], "opacity": 1,
                "color": ["orange" if d.get("summed") else "rgb(60, 60, 60)" for _, d in nodes]}))
    for node, data in nodes:
        x, y = places[node]
        below = _label_side(data) == "below"
        shift = 8 + 15 * max(data["effect"], 0)
        figure.add_annotation(x=x, y=y, text=f"{escape(node)} {data['effect']:.2f}", showarrow=False,
                              xanchor="center" if below else "right", yanchor="top" if below else "middle",
                              xshift=0 if below else -shift, yshift=-shift if below else 0,
                              bgcolor="rgba(255, 255, 255, 0.9)", font={"size": 12})
    residual = next((d for _, _, d in graph.edges(data=True) if d.get("residual")), None)
    xs = [x for x, _ in places.values()]
    pruned = ", ".join(circuit.pruned) or "nothing"
    note = (f"effect = accuracy lost when mean-ablated, on {circuit.n_inputs or ''} {circuit.inputs} inputs; "
            f"pruned below {circuit.threshold}: {pruned}"
            + ("; dotted arc: the residual path around the MLP" if residual else ""))
    figure.update_layout(
        **titled(title, note), template=TEMPLATE, height=520,
        xaxis={"visible": False, "range": [min(xs) - 1.5, max(xs) + ARC_BULGE + 0.5]},
        yaxis={"visible": False, "range": [-0.5, 3.4]})
    return figure


def write_circuit_svg(circuit: Circuit, path: str | Path, title: str) -> Path:
    """A static SVG of the circuit diagram, written directly (no browser, no network)."""
    places, graph = _layout(circuit), circuit.graph
    width = max(x for x, _ in places.values()) + 1
    scale_x, scale_y, margin, line_height = 90.0, 120.0, 90.0, 20.0
    lines = wrap(title, 60)
    top = 30 + line_height * len(lines)
    point = lambda x, y: (margin + x * scale_x, top + 40 + (3 - y) * scale_y)  # noqa: E731
    size = (margin * 2 + (width + ARC_BULGE) * scale_x, top + 90 + 3 * scale_y)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size[0]:.0f}" height="{size[1]:.0f}" '
             f'font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>']
    parts += [f'<text x="20" y="{30 + line_height * i:.0f}" font-size="16">{escape(line)}</text>'
              for i, line in enumerate(lines)]
    for source, target, data in graph.edges(data=True):
        (x0, y0), (x1, y1) = point(*places[source]), point(*places[target])
        stroke = f'stroke="{EDGE_COLOUR}" stroke-width="{1 + 12 * max(data["effect"], 0):.1f}" fill="none"'
        if data.get("residual"):
            cx, cy = point((places[source][0] + places[target][0]) / 2 + ARC_BULGE, (places[source][1] + places[target][1]) / 2)
            parts.append(f'<path class="residual" d="M {x0:.1f} {y0:.1f} Q {cx:.1f} {cy:.1f} {x1:.1f} {y1:.1f}" '
                         f'{stroke} stroke-dasharray="6 4"/>')
        else:
            parts.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" {stroke}/>')
    labels = []
    for node, data in graph.nodes(data=True):
        x, y = point(*places[node])
        colour = "orange" if data.get("summed") else "rgb(60,60,60)"
        radius = 7 + 15 * max(data["effect"], 0)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{colour}"/>')
        text = f"{escape(node)} {data['effect']:.2f}"
        if _label_side(data) == "below":
            where = f'x="{x:.1f}" y="{y + radius + 14:.1f}" text-anchor="middle"'
        else:
            where = f'x="{x - radius - 6:.1f}" y="{y + 4:.1f}" text-anchor="end"'
        # drawn after every edge, on a white halo: no edge covers a label
        labels.append(f'<text {where} stroke="white" stroke-width="4" paint-order="stroke">{text}</text>')
    parts += labels
    parts.append("</svg>\n")
    path = Path(path)
    write_atomic(path, "\n".join(parts).encode())
    return path
