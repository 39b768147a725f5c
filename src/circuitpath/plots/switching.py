"""The curriculum's switch step against the rate of generalising, overall and split by the p = 2 phase."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from circuitpath.analysis.stats import Rate
from circuitpath.plots.html import write_html
from circuitpath.plots.style import TEMPLATE, title
from circuitpath.sweep.switching import FIGURE, SwitchResult


def _trace(switches: list[int], rates: list[Rate], name: str, colour: str, dash: str, offset: float) -> go.Scatter:
    shown = [(s, r) for s, r in zip(switches, rates) if r.n]
    x = [s * (1 + offset) if s else offset * 50 for s, _ in shown]  # small offsets keep the error bars apart
    y = [r.rate for _, r in shown]
    low = [r.rate - r.interval[0] for _, r in shown]
    high = [r.interval[1] - r.rate for _, r in shown]
    return go.Scatter(
        x=x, y=y, name=name, mode="lines+markers", line={"color": colour, "dash": dash},
        error_y={"type": "data", "array": high, "arrayminus": low, "visible": True},
        text=[f"switch {s}: {r.k}/{r.n} ({r.rate:.0%}), 95% [{r.interval[0]:.2f}, {r.interval[1]:.2f}]" for s, r in shown],
        hoverinfo="text",
    )


def switch_figure(result: SwitchResult) -> go.Figure:
    """Rate of generalising (final test acc >= 0.99) per switch step with Wilson 95% intervals: all seeds,
    and the seeds whose p = 2 phase had (had not) generalised at the switch."""
    switches = [row.switch for row in result.rows]
    splits = [row.split() for row in result.rows]
    figure = go.Figure([
        _trace(switches, [row.rate() for row in result.rows], "all seeds", "black", "solid", 0.0),
        _trace(switches, [s[0] for s in splits], "p = 2 had generalised at the switch", "seagreen", "dot", 0.02),
        _trace(switches, [s[1] for s in splits], "p = 2 had not generalised at the switch", "firebrick", "dash", -0.02),
    ])
    s = result.settings
    figure.update_layout(
        **title(f"Generalising against the switch step ({len(s.seeds)} seeds)",
                f"{s.schedule()}; switch step 0 = p = 4 from scratch; bars: Wilson 95% intervals"),
        xaxis_title="switch step (p = 2 → p = 4)", yaxis_title="fraction reaching test acc ≥ 0.99",
        yaxis_range=[-0.05, 1.05], template=TEMPLATE, legend={"orientation": "h", "y": -0.2},
    )
    return figure


def write_switch_page(result: SwitchResult, out: str | Path) -> Path:
    """switch.html in `out`: the switch figure."""
    return write_html([switch_figure(result)], Path(out) / FIGURE, "circuitpath switch")
