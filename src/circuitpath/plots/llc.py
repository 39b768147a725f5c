"""The local learning coefficient over training or across runs, and the SGLD chains behind each estimate."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitpath.analysis.llc import LLC_HTML, LLCEstimate, LLCOverTraining, LLCSettings
from circuitpath.plots.html import write_html
from circuitpath.plots.style import TEMPLATE, class_colour, title
from circuitpath.runs import ANALYSIS_DIR, Run


def settings_note(s: LLCSettings) -> str:
    return (f"SGLD step size ε {s.lr:g}, localisation γ {s.localization:g}, nβ {s.n_beta:.1f}, {s.num_chains} chains × "
            f"({s.num_burnin_steps} burn-in + {s.num_draws} draws), mini-batches of {s.batch_size}")


def llc_figure(result: LLCOverTraining) -> go.Figure:
    """λ̂ at each checkpoint (mean over chains, ± one standard deviation over chains)."""
    figure = go.Figure(go.Scatter(
        x=result.steps, y=[e.llc for e in result.estimates], mode="lines+markers", name="LLC",
        error_y={"type": "data", "array": [e.llc_std for e in result.estimates], "visible": True},
    ))
    for step in result.phase_switches:
        figure.add_vline(x=step, line_dash="dot", line_color="grey", annotation_text="phase switch")
    figure.update_layout(**title("Local learning coefficient over training", settings_note(result.settings)),
                         xaxis_title="step", yaxis_title="LLC λ̂", template=TEMPLATE)
    return figure


def chains_figure(estimates: dict[str, LLCEstimate], settings: LLCSettings, heading: str) -> go.Figure:
    """Diagnostics: the mini-batch loss along each SGLD chain, one panel per named estimate, with the
    checkpoint's loss (dotted) and the end of burn-in (dashed). Healthy chains rise from the checkpoint's
    loss and level off; a chain that keeps climbing, or stops (diverged: NaN), means ε is too large or γ
    too small there."""
    names = list(estimates)
    figure = make_subplots(rows=len(names) or 1, cols=1, shared_xaxes=True, vertical_spacing=0.4 / max(len(names), 1),
                           subplot_titles=[f"{name}: LLC {estimates[name].llc:.2f}" for name in names])
    for row, name in enumerate(names, start=1):
        estimate = estimates[name]
        for chain, trace in enumerate(estimate.trace.tolist()):
            figure.add_trace(go.Scatter(y=trace, mode="lines", name=f"chain {chain}", legendgroup=f"chain {chain}",
                                        showlegend=row == 1, line={"width": 1, "color": class_colour(chain)}),
                             row=row, col=1)
        figure.add_hline(y=estimate.init_loss, line_dash="dot", line_color="black", row=row, col=1)
        figure.add_vline(x=settings.num_burnin_steps, line_dash="dash", line_color="grey", row=row, col=1)
    figure.update_xaxes(title_text="SGLD step", row=len(names) or 1, col=1)
    figure.update_layout(**title(heading, "mini-batch loss along each chain; dotted: loss at the checkpoint; dashed: "
                                 "end of burn-in; " + settings_note(settings)),
                         template=TEMPLATE, height=200 * max(len(names), 1) + 160)
    return figure


def llc_traces_figure(result: LLCOverTraining, max_panels: int = 6) -> go.Figure:
    """The chains at up to `max_panels` checkpoints spread over training (see `chains_figure`)."""
    estimates = result.estimates
    if len(estimates) > max_panels:
        estimates = [estimates[round(i * (len(estimates) - 1) / (max_panels - 1))] for i in range(max_panels)]
    return chains_figure({f"step {e.step}": e for e in estimates}, result.settings, "SGLD chains")


def llc_by_verdict_figure(values: dict[str, list[tuple[str, float, float]]], settings: LLCSettings) -> go.Figure:
    """λ̂ of every run, one column per verdict (e.g. memorises, generalises); each point is a run, with its
    standard deviation over chains. `values`: verdict -> [(run, llc, sd)]. Log scale: the verdicts differ
    by orders of magnitude."""
    figure = go.Figure()
    for index, (verdict, rows) in enumerate(values.items()):
        figure.add_trace(go.Box(
            y=[llc for _, llc, _ in rows], name=f"{verdict} (n = {len(rows)})", boxpoints="all", pointpos=0,
            jitter=0.4, marker={"color": class_colour(index)}, text=[run for run, _, _ in rows],
            hovertemplate="%{text}: LLC %{y:.3g}<extra></extra>",
        ))
    figure.update_layout(**title("Local learning coefficient of memorising and generalising solutions",
                                 settings_note(settings)),
                         yaxis={"title": "LLC λ̂ (log scale)", "type": "log"}, template=TEMPLATE, showlegend=False)
    return figure


def write_llc_page(result: LLCOverTraining, run: Run) -> Path:
    """RUN/analysis/llc.html: λ̂ over training, then the chains behind each estimate."""
    folder = run.path / ANALYSIS_DIR
    folder.mkdir(exist_ok=True)
    figures = [llc_figure(result), llc_traces_figure(result)]
    return write_html(figures, folder / LLC_HTML, f"LLC of {run.path.name}")
