"""Plotly figure builders: results in, `go.Figure` out. Nothing here computes an analysis or shows a figure."""

from circuitpath.plots.html import write_html
from circuitpath.plots.sweep import sweep_figure

__all__ = ["sweep_figure", "write_html"]
