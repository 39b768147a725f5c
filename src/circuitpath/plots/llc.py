"""The local learning coefficient over training, and the SGLD chains behind each estimate."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitpath.analysis.llc import LLCOverTraining

TEMPLATE = "plotly_white"


def llc_figure(result: LLCOverTraining) -> go.Figure:
    """λ̂ at each checkpoint (mean over chains, ± one standard deviation over chains)."""
    figure = go.Figure(go.Scatter(
        x=result.steps, y=[e.llc for e in result.estimates], mode="lines+markers", name="LLC",
        error_y={"type": "data", "array": [e.llc_std for e in result.estimates], "visible": True},
    ))
    for step in result.phase_switches:
        figure.add_vline(x=step, line_dash="dot", line_color="grey", annotation_text="phase switch")
    s = result.settings
    figure.update_layout(
        title=f"Local learning coefficient over training (SGLD lr {s.lr:g}, γ {s.localization:g}, "
        f"nβ {s.n_beta:.1f}, {s.num_chains} chains × {s.num_draws} draws)",
        xaxis_title="step", yaxis_title="LLC λ̂", template=TEMPLATE)
    return figure


def llc_traces_figure(result: LLCOverTraining, max_panels: int = 6) -> go.Figure:
    """Diagnostics: the mini-batch loss along each SGLD chain at up to `max_panels` checkpoints spread over
    training, with the checkpoint's loss and the end of burn-in marked. Healthy chains rise from the
    checkpoint's loss and level off."""
    estimates = result.estimates
    if len(estimates) > max_panels:
        estimates = [estimates[round(i * (len(estimates) - 1) / (max_panels - 1))] for i in range(max_panels)]
    figure = make_subplots(rows=len(estimates) or 1, cols=1, shared_xaxes=True,
                           subplot_titles=[f"step {e.step}: LLC {e.llc:.2f}" for e in estimates])
    for row, estimate in enumerate(estimates, start=1):
        for chain, trace in enumerate(estimate.trace.tolist()):
            figure.add_trace(go.Scatter(y=trace, mode="lines", name=f"chain {chain}", legendgroup=f"chain {chain}",
                                        showlegend=row == 1, line={"width": 1}), row=row, col=1)
        figure.add_hline(y=estimate.init_loss, line_dash="dot", line_color="black", row=row, col=1)
        figure.add_vline(x=result.settings.num_burnin_steps, line_dash="dash", line_color="grey", row=row, col=1)
    figure.update_xaxes(title_text="SGLD step", row=len(estimates) or 1, col=1)
    figure.update_layout(title="SGLD chains (dotted: loss at the checkpoint; dashed: end of burn-in)",
                         template=TEMPLATE, height=220 * max(len(estimates), 1) + 100)
    return figure
