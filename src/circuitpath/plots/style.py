"""What every figure shares: the template, a categorical palette, and titles that wrap instead of being cut."""

from __future__ import annotations

import textwrap

from collections.abc import Sequence

import plotly.colors
import plotly.graph_objects as go

TEMPLATE = "plotly_white"

#: Distinct colours for class labels (48, then repeated): classes are categories, not a scale.
CATEGORICAL = plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24

#: Characters of title text per line: fits a 900 px wide figure at plotly's title font size.
TITLE_WIDTH = 95


def class_colour(index: int) -> str:
    return CATEGORICAL[index % len(CATEGORICAL)]


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters (plotly draws <br> as a line break, never wraps by itself)."""
    return [line for part in text.split("<br>") for line in textwrap.wrap(part, width) or [""]]


def title(text: str, note: str = "") -> dict:
    """Layout arguments for a title and a smaller note under it, wrapped, with room above the plot."""
    lines = wrap(text, TITLE_WIDTH)
    notes = wrap(note, int(TITLE_WIDTH * 1.3)) if note else []
    body = "<br>".join(lines + [f"<sup>{line}</sup>" for line in notes])
    return {"title": {"text": body, "x": 0.01, "xanchor": "left", "y": 1, "yanchor": "top", "pad": {"t": 14}},
            "margin": {"t": 50 + 24 * len(lines) + 18 * len(notes)}}


def mark_truth(figure: go.Figure, relevant: Sequence[int], n_ctx: int, axis: str = "y", **cell) -> bool:
    """Mark the relevant positions on a position axis. The paper's first k are one block, which the
    caller marks with a boundary line: this returns True and draws nothing. Other truths get a star on
    each relevant position's tick (e.g. 3*) and False."""
    relevant = set(relevant)
    if relevant == set(range(len(relevant))):
        return True
    ticks = {"tickvals": list(range(n_ctx)), "ticktext": [f"{t}*" if t in relevant else str(t) for t in range(n_ctx)]}
    (figure.update_yaxes if axis == "y" else figure.update_xaxes)(**ticks, **cell)
    return False
