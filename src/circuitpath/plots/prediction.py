"""How early the outcome can be told: AUROC against the fraction of training, and which features tell it."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from circuitpath.analysis.prediction import PREDICTION_HTML, PredictionResult
from circuitpath.plots.html import write_html
from circuitpath.plots.style import TEMPLATE, title

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def prediction_figure(result: PredictionResult) -> go.Figure:
    """Cross-validated AUROC (95% bootstrap interval) against x, circuit features (solid) and losses (dashed)."""
    figure = go.Figure()
    for index, group in enumerate(result.groups):
        colour = COLOURS[index % len(COLOURS)]
        x = [f.fraction for f in group.fractions]
        for key, dash in (("circuit", "solid"), ("loss", "dash")):
            scores = [getattr(f, key) for f in group.fractions]
            figure.add_trace(go.Scatter(
                x=x, y=[s.auroc for s in scores], mode="lines+markers", line={"color": colour, "dash": dash},
                name=f"{group.name}: {'circuit features' if key == 'circuit' else 'train/test loss'}",
                error_y={"type": "data", "visible": True, "array": [s.interval[1] - s.auroc for s in scores],
                         "arrayminus": [s.auroc - s.interval[0] for s in scores]},
            ))
    figure.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance")
    figure.update_layout(
        **title("Predicting which runs generalise (final test acc ≥ 0.99) from a checkpoint at a fraction of training",
                "solid: circuit features; dashed: train and test loss alone; bars: 95% bootstrap interval over runs"),
        xaxis_title="fraction of training x", yaxis_title="cross-validated AUROC", yaxis_range=[0, 1.05],
        template=TEMPLATE, legend={"orientation": "h", "y": -0.25})
    return figure


def feature_importance_figure(result: PredictionResult) -> go.Figure:
    """Each circuit feature's own AUROC at each x (one heatmap row per group and feature)."""
    rows, columns, values = [], [], []
    for group in result.groups:
        names = group.fractions[0].circuit.features if group.fractions else []
        columns = [f"x = {f.fraction:g}" for f in group.fractions]
        for name in names:
            rows.append(f"{group.name}: {name}" if len(result.groups) > 1 else name)
            values.append([f.circuit.per_feature_auroc.get(name, float("nan")) for f in group.fractions])
    figure = go.Figure(go.Heatmap(z=values, x=columns, y=rows, zmin=0, zmax=1, colorscale="RdBu", zmid=0.5,
                                  text=[[f"{v:.2f}" for v in row] for row in values], texttemplate="%{text}",
                                  colorbar={"title": "own AUROC"}))
    figure.update_layout(**title("Which features carry the prediction: each feature's own AUROC",
                                 "0.5: none; above, larger values go with generalising; below, smaller ones"),
                         template=TEMPLATE, height=160 + 28 * max(len(rows), 1))
    return figure


def write_prediction_page(result: PredictionResult, out: str | Path) -> Path:
    """prediction.html in `out`: AUROC over the fraction of training, then the features that tell the outcome."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = [prediction_figure(result), feature_importance_figure(result)]
    return write_html(figures, out / PREDICTION_HTML, "circuitpath predict")
