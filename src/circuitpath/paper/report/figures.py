"""Figures drawn the way the paper draws them: update-by-update changes (Fig. 2), attention on single
inputs over a phase (Fig. 3), and per-seed values of a claim."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from circuitpath.analysis.outcomes import FITS, GENERALISES_AT, MEMORISED_BELOW
from circuitpath.paper.probes import UpdateChanges

TEMPLATE = "plotly_white"


def update_changes_figure(changes: UpdateChanges, tokens: list[int], title: str) -> go.Figure:
    """Change of the attention on each position at each update (red: grew, blue: shrank), spurious ones marked."""
    change = changes.change
    limit = max(float(change.abs().max()), 1e-12)
    starred = set() if changes.relevant is None else set(changes.relevant)  # a truth other than the first k
    labels = [f"x{i}={t}" + "*" * (i in starred) for i, t in enumerate(tokens)]
    figure = go.Figure(go.Heatmap(
        x=labels, y=[f"{a}→{b}" for a, b in zip(changes.steps, changes.steps[1:])], z=change.tolist(),
        colorscale=[[0, "rgb(31, 119, 180)"], [0.5, "white"], [1, "rgb(214, 39, 40)"]], zmin=-limit, zmax=limit,
        colorbar={"title": "change"}, hovertemplate="update %{y}, %{x}: %{z:.2e}<extra></extra>"))
    if starred:
        figure.add_annotation(x=0, xref="paper", y=1.01, yref="paper", yanchor="bottom", text="*: the summed positions",
                              showarrow=False, xanchor="left", font={"size": 13})
    else:
        figure.add_vline(x=changes.k - 0.5, line_color="black", line_width=3)
        figure.add_annotation(x=changes.k - 0.5, y=1.01, yref="paper", yanchor="bottom", text=f"k = {changes.k}: spurious to the right",
                              showarrow=False, xanchor="left", font={"size": 13})
    figure.update_yaxes(title_text="update (step before → after)", autorange="reversed")
    figure.update_layout(title=title, template=TEMPLATE, height=640)
    return figure


def attention_per_input_figure(steps: list[int], pattern: Tensor, tokens: Tensor, k: int, title: str) -> go.Figure:
    """One heatmap per input: attention on each position (column, labelled by its token) at each step (row)."""
    count = pattern.shape[1]
    names = ["".join(str(t) for t in row[:k].tolist()) + " " + "".join(str(t) for t in row[k:].tolist())
             for row in tokens]
    figure = make_subplots(rows=1, cols=count, shared_yaxes=True, subplot_titles=names, horizontal_spacing=0.03)
    vmax = float(pattern.max())
    for i in range(count):
        figure.add_trace(go.Heatmap(
            x=[f"x{j}={t}" for j, t in enumerate(tokens[i].tolist())], y=[str(s) for s in steps],
            z=pattern[:, i].tolist(), colorscale="Blues", zmin=0, zmax=vmax, showscale=i == count - 1,
            colorbar={"title": "attention"}, hovertemplate="step %{y}, %{x}: %{z:.3f}<extra></extra>"), row=1, col=i + 1)
        figure.add_vline(x=k - 0.5, line_color="red", line_width=2, row=1, col=i + 1)
    figure.update_yaxes(title_text="training step", autorange="reversed", type="category", row=1, col=1)
    figure.update_layout(title=title, template=TEMPLATE, height=560)
    return figure


def seed_values_figure(series: dict[str, dict[int, float]], title: str, yaxis: str,
                       thresholds: dict[str, float] | None = None) -> go.Figure:
    """One point per seed for each named series (e.g. final test accuracy per experiment), thresholds dotted."""
    figure = go.Figure()
    for name, values in series.items():
        seeds = sorted(values)
        figure.add_trace(go.Box(y=[values[s] for s in seeds], name=name, boxpoints="all", jitter=0.4, pointpos=0,
                                text=[f"seed {s}: {values[s]:.4g}" for s in seeds], hoverinfo="text"))
    for label, value in (thresholds or {}).items():
        figure.add_hline(y=value, line_dash="dot", annotation_text=label)
    figure.update_layout(title=title, yaxis_title=yaxis, showlegend=False, template=TEMPLATE)
    return figure


#: Marker of each seed verdict (outcomes.memorises / generalises).
VERDICTS = {"generalised": "circle", "memorised": "x", "neither": "diamond-open"}
EXPERIMENT_COLOURS = {"scratch": "rgb(214, 39, 40)", "curriculum": "rgb(31, 119, 180)"}


def seed_outcomes_figure(outcomes: dict, switch: dict[int, float], title: str) -> go.Figure:
    """Train (left) and test (right) accuracy of every seed, one colour per experiment and one marker per
    verdict; `outcomes` maps experiment -> seed -> an object with train_acc, test_acc and verdict;
    `switch` (seed -> the curriculum's p = 2 test accuracy at the switch) is drawn in the test panel."""
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                           subplot_titles=("training accuracy", "test accuracy"))
    for offset, (name, seeds) in zip((-0.12, 0.12, 0.0), outcomes.items()):
        colour = EXPERIMENT_COLOURS.get(name, "rgb(90, 90, 90)")
        for verdict, symbol in VERDICTS.items():
            rows = [o for o in seeds.values() if o.verdict == verdict]
            if not rows:
                continue
            for col, field in ((1, "train_acc"), (2, "test_acc")):
                figure.add_trace(go.Scatter(
                    x=[o.seed + offset for o in rows], y=[getattr(o, field) for o in rows], mode="markers",
                    name=f"{name}: {verdict} ({len(rows)})", legendgroup=f"{name} {verdict}", showlegend=col == 1,
                    marker={"symbol": symbol, "size": 11, "color": colour, "line": {"width": 2, "color": colour}},
                    hovertext=[f"{name} seed {o.seed}: train {o.train_acc:.3f}, test {o.test_acc:.3f}, {verdict}"
                               for o in rows], hoverinfo="text"), row=1, col=col)
    if switch:
        seeds = sorted(switch)
        figure.add_trace(go.Scatter(
            x=seeds, y=[switch[s] for s in seeds], mode="markers", name="curriculum: p = 2 test acc at the switch",
            marker={"symbol": "triangle-up-open", "size": 9, "color": "grey"},
            hovertext=[f"seed {s}: p = 2 test acc {switch[s]:.3f} at the switch" for s in seeds], hoverinfo="text"),
            row=1, col=2)
    figure.add_hline(y=FITS, line_dash="dot", line_color="grey", annotation_text=f"fits (≥ {FITS})",
                     annotation_position="bottom left", row=1, col=1)
    figure.add_hline(y=GENERALISES_AT, line_dash="dot", line_color="grey",
                     annotation_text=f"generalised (≥ {GENERALISES_AT})", annotation_position="bottom left",
                     row=1, col=2)
    figure.add_hline(y=MEMORISED_BELOW, line_dash="dot", line_color="grey",
                     annotation_text=f"memorised below {MEMORISED_BELOW} (and train fits)",
                     annotation_position="bottom left", row=1, col=2)
    ticks = sorted({o.seed for seeds in outcomes.values() for o in seeds.values()})
    figure.update_xaxes(title_text="seed", tickvals=ticks, range=[min(ticks, default=0) - 0.5, max(ticks, default=0) + 0.5])
    figure.update_yaxes(title_text="accuracy", range=[0, 1.05], row=1, col=1)
    figure.update_layout(title=title, template=TEMPLATE, legend={"orientation": "h", "y": -0.2})
    return figure
