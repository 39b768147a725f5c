"""Figures of circuit discovery along training: the circuit at each checkpoint, AUROC per method,
faithfulness curves, the pruning story; and each circuit as a static SVG that needs no browser."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitpath.analysis.discovery.graph import ModelGraph
from circuitpath.analysis.discovery.prune import DiscoveredCircuit, describe_rule
from circuitpath.analysis.discovery.pruning import PruningStory, pruning_story
from circuitpath.analysis.discovery.timeline import LEVEL, DiscoveryTimeline
from circuitpath.data import positions_of
from circuitpath.plots.style import TEMPLATE, mark_truth
from circuitpath.plots.style import title as titled
from circuitpath.runs.storage import write_atomic

METHOD_COLOURS = {"attribution": "rgb(31, 119, 180)", "patching": "rgb(214, 39, 40)", "ablation": "rgb(44, 160, 44)"}
RUN_DASHES = ["solid", "dash", "dot", "dashdot"]
RUN_COLOURS = ["rgb(214, 39, 40)", "rgb(31, 119, 180)", "rgb(44, 160, 44)", "rgb(148, 103, 189)"]
METHOD_DASHES = {"attribution": "solid", "patching": "dash", "ablation": "dot"}
#: Where the labels of a cluster of nodes that would touch go, in x order (a lone node's label: top center).
CLUSTER_PLACES = ("top left", "top right", "bottom right", "bottom left")
SIGN_COLOURS = {True: "rgb(214, 39, 40)", False: "rgb(31, 119, 180)"}  # the score helps / hurts the metric
WIDTHS = (1.0, 2.5, 4.5, 7.0, 10.0)  # edge widths by fifth of the largest |score|
NEURON_ROW, NEURON_STAGGER = 2.6, 0.25  # height of the neurons' row; when many, they alternate this much below/above

DISCOVERY_NOTES = (
    "Circuit discovery along training, scored against the truth (the task's relevant positions are summed, "
    "the rest are not; 0..k-1 in the paper's task). What to look for: AUROC per method against step (1 = the method ranks every summed "
    "position above every spurious one; 0.5 = no better than chance) and the step where each first "
    "reaches 0.99; whether the cheap attribution estimate tracks activation patching; the circuit "
    "slider, where spurious positions (grey) should fade as training prunes them; faithfulness "
    "(accuracy with only the top-n nodes kept, the rest mean-ablated: a curve that reaches the "
    "model's accuracy with few nodes means a small circuit); and the pruning story, the share of "
    "strengthened position edges that are spurious per update interval, which the paper's thesis "
    "predicts falls to 0, and earlier for the curriculum than from scratch."
)


# ---- layout --------------------------------------------------------------------------------------
def node_places(graph: ModelGraph, neurons: Sequence[str] = ()) -> dict[str, tuple[float, float]]:
    """Fixed coordinates of every node, so circuits of different steps line up: values and patterns
    along the bottom, attention, neurons, the MLP and residual path, the logits on top.

    `neurons`: the neurons a figure draws (over all its steps). They take evenly spaced slots in index
    order, alternating below and above the row when there are more than the positions, so neighbours such
    as n33 and n34 never overlap; the other neurons keep a place by index."""
    width, centre = max(graph.n_ctx - 1, 1), (graph.n_ctx - 1) / 2
    slots = {name: i for i, name in enumerate(sorted(set(neurons), key=lambda n: graph.node_by_name[n].index))}
    places = {}
    for node in graph.nodes:
        if node.kind in ("value", "pattern"):
            places[node.name] = (float(node.index), 0.0 if node.kind == "value" else 0.6)
        elif node.name in slots:
            slot, staggered = slots[node.name], len(slots) > graph.n_ctx
            places[node.name] = (slot * width / max(len(slots) - 1, 1),
                                 NEURON_ROW + (NEURON_STAGGER * (1 if slot % 2 else -1) if staggered else 0.0))
        elif node.kind == "neuron":
            places[node.name] = (node.index * width / max(graph.d_mlp - 1, 1), NEURON_ROW)
        else:
            x = {"attention": centre, "mlp": centre - 1.5, "residual": centre + 1.5, "logits": centre}[node.kind]
            places[node.name] = (x, {"attention": 1.6, "mlp": 3.6, "residual": 3.6, "logits": 4.6}[node.kind])
    return places


def _colour(graph: ModelGraph, name: str, relevant: int | Sequence[int]) -> str:
    """Orange for a relevant position's nodes (the first k for a number), grey for a spurious one's."""
    node = graph.node_by_name[name]
    if node.kind in ("value", "pattern"):
        return "orange" if node.index in positions_of(relevant) else "rgb(170, 170, 170)"
    return "rgb(60, 60, 60)"


def _width_class(score: float, largest: float) -> int:
    return min(int(5 * abs(score) / largest), 4) if largest > 0 else 0


def _largest(circuit: DiscoveredCircuit) -> float:
    scores = [abs(s) for s in circuit.nodes.values() if s is not None] + [abs(e[2]) for e in circuit.edges]
    return max(scores, default=0.0)


# ---- the circuit timeline ------------------------------------------------------------------------
def _circuit_traces(circuit: DiscoveredCircuit, graph: ModelGraph, relevant: Sequence[int],
                    places: dict[str, tuple[float, float]]) -> list[go.Scatter]:
    """Always 2 x 5 edge traces (sign x width class) and one node trace, so slider frames line up."""
    largest = _largest(circuit)
    segments = {(sign, w): ([], []) for sign in (True, False) for w in range(len(WIDTHS))}
    for source, target, score in circuit.edges:
        xs, ys = segments[(score >= 0, _width_class(score, largest))]
        xs += [places[source][0], places[target][0], None]
        ys += [places[source][1], places[target][1], None]
    traces = [go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                         line={"width": WIDTHS[w], "color": SIGN_COLOURS[sign]})
              for (sign, w), (xs, ys) in segments.items()]
    names = list(circuit.nodes)
    lower = NEURON_ROW - NEURON_STAGGER  # staggered: the lower neurons label to their right, clear of attn and the upper
    spots = [("middle right" if places[n][1] == lower and graph.node_by_name[n].kind == "neuron" else spot)
             for n, spot in zip(names, label_places([places[n] for n in names]))]
    traces.append(go.Scatter(
        x=[places[n][0] for n in names], y=[places[n][1] for n in names], mode="markers+text", showlegend=False,
        text=names, textposition=spots, hoverinfo="text",
        textfont={"shadow": "auto"},  # a halo in the background colour: labels stay readable where edges cross
        hovertext=[f"{n}: score {s:.4g}" if s is not None else n for n, s in circuit.nodes.items()],
        marker={"size": [10 + 20 * abs(s) / largest if s is not None and largest > 0 else 14 for s in circuit.nodes.values()],
                "color": [_colour(graph, n, relevant) for n in names]}))
    return traces


def label_places(points: list[tuple[float, float]], near: float = 0.06) -> list[str]:
    """Text positions: nodes of one row closer than `near` x the row span fan their labels out around
    them (CLUSTER_PLACES in x order); a lone node's label sits on top."""
    if not points:
        return []
    xs = [x for x, _ in points]
    span = (max(xs) - min(xs)) or 1.0
    clusters: list[list[int]] = []
    for i in sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0])):
        last = clusters[-1][-1] if clusters else None
        if last is not None and points[last][1] == points[i][1] and points[i][0] - points[last][0] < near * span:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    places = ["top center"] * len(points)
    for cluster in (c for c in clusters if len(c) > 1):
        for rank, i in enumerate(cluster):
            places[i] = CLUSTER_PLACES[rank % len(CLUSTER_PLACES)]
    return places


def circuit_timeline_figure(timeline: DiscoveryTimeline, method: str, title: str) -> go.Figure:
    """The circuit a method finds at each checkpoint, one slider step per checkpoint."""
    circuits, graph = timeline.circuits[method], timeline.graph
    places = node_places(graph, [n for c in circuits for n in c.nodes if graph.node_by_name[n].kind == "neuron"])
    frames = [go.Frame(data=_circuit_traces(c, graph, timeline.relevant_at(row), places), name=str(c.step))
              for row, c in enumerate(circuits)]
    figure = go.Figure(data=frames[-1].data, frames=frames)
    rule = describe_rule(circuits[-1].rule, circuits[-1].parameter)
    figure.update_layout(
        **titled(title, f"{method}, {rule}; orange: the k summed positions (v: value, a: attention weight), "
                        "grey: spurious; width: |score|; red: raises the metric, blue: lowers it"),
        xaxis={"visible": False}, yaxis={"visible": False, "range": [-0.4, 5.0]}, template=TEMPLATE, height=520,
        sliders=[{"active": len(frames) - 1, "currentvalue": {"prefix": "step "},
                  "steps": [{"label": f.name, "method": "animate",
                             "args": [[f.name], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}]}
                            for f in frames]}])
    return figure


# ---- AUROC, faithfulness, pruning -----------------------------------------------------------------
def _phase_lines(figure: go.Figure, switches: list[int]) -> None:
    for step in switches:
        figure.add_vline(x=step, line={"dash": "dot", "color": "grey"})


def auroc_figure(timelines: dict[str, DiscoveryTimeline], title: str = "AUROC of the position scores against step") -> go.Figure:
    """AUROC per run (colour) and method (dash) against step, with the 0.99 and chance levels."""
    figure = go.Figure()
    for i, (name, timeline) in enumerate(timelines.items()):
        for method in timeline.methods:
            figure.add_trace(go.Scatter(
                x=timeline.steps, y=timeline.auroc(method).tolist(), mode="lines+markers",
                name=f"{name}: {method} ({timeline.reaching(method)})",
                line={"color": RUN_COLOURS[i % len(RUN_COLOURS)], "dash": METHOD_DASHES.get(method, "dashdot")}))
        _phase_lines(figure, timeline.phase_switches)
    figure.add_hline(y=LEVEL, line={"dash": "dash", "color": "black"})
    figure.add_hline(y=0.5, line={"dash": "dot", "color": "grey"})
    figure.update_layout(**titled(title, "1: every summed position outranks every spurious one; 0.5: chance"),
                         xaxis_title="step", yaxis={"title": "AUROC", "range": [0, 1.05]}, template=TEMPLATE)
    return figure


def faithfulness_figure(timeline: DiscoveryTimeline, title: str, steps: list[int] | None = None) -> go.Figure:
    """Accuracy with only each method's top-n nodes kept (the rest mean-ablated), at the given steps (default: the last)."""
    figure = go.Figure()
    for d, step in enumerate(steps or [timeline.steps[-1]]):
        row = timeline.steps.index(step)
        for method in timeline.methods:
            figure.add_trace(go.Scatter(
                x=timeline.counts, y=timeline.faithfulness[method][row].tolist(), mode="lines+markers",
                name=f"{method}, step {step}", line={"color": METHOD_COLOURS.get(method), "dash": RUN_DASHES[d % 4]}))
        figure.add_hline(y=float(timeline.accuracy[row]), line={"dash": "dot", "color": "grey"})
    figure.update_layout(**titled(title, "dotted: the intact model's accuracy"), xaxis_title="nodes kept (top n by |score|)",
                         yaxis={"title": "accuracy", "range": [0, 1.05]}, template=TEMPLATE)
    return figure


def pruning_figure(stories: dict[str, PruningStory], title: str = "The pruning story") -> go.Figure:
    """Top: the fraction of the position edges each update strengthened that are spurious, every run
    on one axis. Below, one row per run: which position edges each update strengthened (red) or
    weakened (blue), the paper's arrows. Log step axis: most of the story is in the first steps."""
    rows = 1 + len(stories)
    figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[2] + [1] * len(stories),
                           subplot_titles=["spurious share of the strengthened edges"] + [f"{n}: edges per update" for n in stories])
    for i, (name, story) in enumerate(stories.items()):
        last = story.last_spurious_strengthened
        figure.add_trace(go.Scatter(
            x=story.ends, y=story.spurious_fraction.tolist(), mode="lines+markers", connectgaps=False,
            name=f"{name} ({story.method}; spurious edges last strengthened at step {last if last is not None else 'never'})",
            line={"dash": RUN_DASHES[i % len(RUN_DASHES)]}), row=1, col=1)
        change = (story.strengthened.float() - story.weakened.float()).T  # [key_pos, interval]
        change[:, ~story.same_phase] = float("nan")
        figure.add_trace(go.Heatmap(x=story.ends, y=list(range(change.shape[0])), z=change.tolist(), zmin=-1, zmax=1,
                                    colorscale=[[0, SIGN_COLOURS[False]], [0.5, "white"], [1, SIGN_COLOURS[True]]],
                                    showscale=False, hovertemplate="step %{x}, position %{y}: %{z}<extra></extra>"),
                         row=2 + i, col=1)
        truth = story.relevant[-1].nonzero().flatten().tolist() if len(story.ends) else list(range(story.k))
        if mark_truth(figure, truth, change.shape[0], row=2 + i, col=1):
            figure.add_hline(y=len(truth) - 0.5, line={"color": "black", "width": 1}, row=2 + i, col=1)
        figure.update_yaxes(title_text="position", row=2 + i, col=1)
        if last is not None:
            figure.add_vline(x=last, line={"dash": "dot", "color": "grey"})
    tol = next(iter(stories.values())).tol if stories else 0
    figure.update_xaxes(type="log")
    figure.update_xaxes(title_text="step (end of the interval)", row=rows, col=1)
    figure.update_yaxes(title_text="spurious fraction", range=[-0.05, 1.05], row=1, col=1)
    figure.update_layout(
        **titled(title, f"an edge is strengthened when its share of the position score grows by more than {tol:g} "
                        "between two checkpoints (rows: red strengthened, blue weakened; below the black line, or starred, the "
                        "summed positions); gaps: nothing strengthened, or a phase switch"),
        template=TEMPLATE, height=320 + 180 * len(stories))
    return figure


def discovery_figures(run_results: dict[str, DiscoveryTimeline], method: str | None = None) -> list[go.Figure]:
    """The "circuit timeline" section: AUROC of every run, each run's circuit slider and faithfulness
    curves, and the pruning story of all runs on one axis (see DISCOVERY_NOTES for what to look for).
    `method` picks the circuits drawn and the story told (default: each run's first method)."""
    figures = [auroc_figure(run_results)]
    stories = {}
    for name, timeline in run_results.items():
        chosen = method or timeline.methods[0]
        figures.append(circuit_timeline_figure(timeline, chosen, f"{name}: the circuit over training"))
        figures.append(faithfulness_figure(timeline, f"{name}: faithfulness at step {timeline.steps[-1]}"))
        if len(timeline.steps) >= 2:
            stories[name] = pruning_story(timeline, chosen)
    if stories:
        figures.append(pruning_figure(stories))
    return figures


# ---- static SVG ----------------------------------------------------------------------------------
def write_discovered_svg(circuit: DiscoveredCircuit, graph: ModelGraph, relevant: int | Sequence[int], path: str | Path,
                         title: str) -> Path:
    """A static SVG of one circuit, written directly (no browser, no network); `relevant`: the summed positions
    (a number k: the first k)."""
    places = node_places(graph, [n for n in circuit.nodes if graph.node_by_name[n].kind == "neuron"])
    largest = _largest(circuit)
    scale_x, scale_y, margin = 60.0, 90.0, 50.0
    top = max(y for _, y in places.values())
    point = lambda name: (margin + places[name][0] * scale_x, margin + 40 + (top - places[name][1]) * scale_y)
    size = (2 * margin + max(graph.n_ctx - 1, 1) * scale_x + 60, 2 * margin + 60 + top * scale_y)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size[0]:.0f}" height="{size[1]:.0f}" '
             'font-family="sans-serif" font-size="11">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{margin}" y="28" font-size="15">{escape(title)}</text>']
    for source, target, score in circuit.edges:
        (x0, y0), (x1, y1) = point(source), point(target)
        parts.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="{SIGN_COLOURS[score >= 0]}" '
                     f'stroke-width="{WIDTHS[_width_class(score, largest)]:.1f}" stroke-opacity="0.8">'
                     f'<title>{escape(source)} → {escape(target)}: {score:.4g}</title></line>')
    for name, score in circuit.nodes.items():
        x, y = point(name)
        radius = 5 + 10 * abs(score) / largest if score is not None and largest > 0 else 7
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{_colour(graph, name, relevant)}">'
                     f'<title>{escape(name)}: {"" if score is None else f"{score:.4g}"}</title></circle>')
        parts.append(f'<text x="{x:.1f}" y="{y - radius - 3:.1f}" text-anchor="middle">{escape(name)}</text>')
    parts.append("</svg>\n")
    path = Path(path)
    write_atomic(path, "\n".join(parts).encode())
    return path


def position_figures(timelines: dict, title: str = "input positions against the truth") -> list[go.Figure]:
    """Figures of `discovery.positions.PositionTimeline`s: each method's AUROC against step, and each run's
    position scores per step (one heatmap per run and method; the last step's relevant positions left of a red
    line when they are the first k, else starred on the axis)."""
    auroc = go.Figure(layout={"template": TEMPLATE})
    for name, timeline in timelines.items():
        for method in timeline.methods:
            auroc.add_scatter(x=timeline.steps, y=timeline.auroc(method).tolist(), mode="lines+markers",
                              name=f"{name}: {method} ({timeline.reaching(method)})")
    auroc.add_hline(y=LEVEL, line={"dash": "dash", "color": "black"})
    auroc.add_hline(y=0.5, line_dash="dot", line_color="grey")
    auroc.update_layout(**titled(f"AUROC of the {title}", f"position t = the first residual stream at t; 1: every "
                                 "relevant position outscores every spurious one, 0.5: chance"),
                        xaxis_title="step", yaxis={"title": "AUROC", "range": [0, 1.02]}, height=420,
                        showlegend=True)  # the legend says when each curve holds the level, even for one curve
    figures = [auroc]
    for name, timeline in timelines.items():
        for method in timeline.methods:
            heat = go.Figure(layout={"template": TEMPLATE})
            heat.add_heatmap(z=timeline.scores[method].tolist(), x=list(range(timeline.n_ctx)), y=timeline.steps,
                             colorscale="Blues", colorbar={"title": "score"})
            if mark_truth(heat, timeline.relevant[-1], timeline.n_ctx, axis="x"):  # the first k: one block
                heat.add_vline(x=len(timeline.relevant[-1]) - 0.5, line={"color": "red", "width": 2})
            heat.update_layout(**titled(f"{name}: {method} score of each input position", f"mean over {timeline.n} "
                                        f"test inputs of each input's |change| ({timeline.metric if method != 'ablation' else 'loss'})"),
                               xaxis_title="position", yaxis={"title": "step", "type": "category"}, height=420)
            figures.append(heat)
    return figures
