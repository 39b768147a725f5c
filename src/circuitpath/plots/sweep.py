"""How often each experiment of a sweep succeeds, and the spread of its final test accuracy."""

from __future__ import annotations

import plotly.graph_objects as go

from circuitpath.sweep import ExperimentSummary


def sweep_figure(summaries: dict[str, ExperimentSummary]) -> go.Figure:
    """Final test accuracy of every seed (one point each) per experiment, success rate in the label."""
    figure = go.Figure()
    for s in summaries.values():
        label = f"{s.name}<br>{len(s.successes)}/{len(s.seeds)} reach test acc ≥ 0.99"
        figure.add_trace(go.Box(
            y=s.test_acc, name=label, boxpoints="all", jitter=0.4, pointpos=0,
            text=[f"seed {seed}: train {tr:.3f}, test {te:.3f}" for seed, tr, te in zip(s.seeds, s.train_acc, s.test_acc)],
            hoverinfo="text",
        ))
    figure.add_hline(y=0.99, line_dash="dot", annotation_text="success: test acc ≥ 0.99")
    figure.update_layout(title="Final test accuracy over seeds", yaxis_title="test accuracy (p = 4)",
                         yaxis_range=[0, 1.05], showlegend=False, template="plotly_white")
    return figure
