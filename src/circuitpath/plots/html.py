"""Self-contained HTML: plotly.js is embedded, so a page opens offline."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from circuitpath.storage import write_atomic


def write_html(figures: list[go.Figure], path: str | Path, title: str) -> Path:
    """One page with the figures in order; plotly.js embedded once."""
    parts = []
    for index, figure in enumerate(figures):
        # auto_play off: plotly would play every frame on load and leave a slider's label on the first
        parts.append(figure.to_html(full_html=False, include_plotlyjs=index == 0, div_id=f"figure-{index}",
                                    auto_play=False))
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{title}</title></head><body style='font-family:sans-serif'>"
        f"<h1>{title}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    path = Path(path)
    write_atomic(path, page.encode())
    return path
