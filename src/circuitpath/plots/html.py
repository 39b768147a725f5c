"""HTML pages of plotly figures that open offline: plotly.js is embedded, or written once beside the pages.

`plotlyjs="inline"` embeds plotly.js (~3.6 MB) in the page: one self-contained file. `"beside"`
writes it once as plotly.min.js in the page's folder and the page loads it from there, so every
page of a folder shares one copy (a page is then ~100 KB; move the folder, not the page alone).
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from circuitpath.errors import ConfigError
from circuitpath.runs.storage import write_atomic

PLOTLY_JS = "plotly.min.js"
PLACES = ("inline", "beside")


def write_html(figures: list[go.Figure], path: str | Path, title: str, plotlyjs: str = "inline") -> Path:
    """One page with the figures in order; plotly.js embedded once, or beside the page (see the module)."""
    path = Path(path)
    script = plotly_script(path, plotlyjs)
    parts = [figure_div(figure, index, script is None and index == 0) for index, figure in enumerate(figures)]
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{title}</title>{script or ''}</head><body style='font-family:sans-serif'>"
        f"<h1>{title}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    write_atomic(path, page.encode())
    return path


def figure_div(figure: go.Figure, index: int, with_plotlyjs: bool) -> str:
    # auto_play off: plotly would play every frame on load and leave a slider's label on the first
    return figure.to_html(full_html=False, include_plotlyjs=with_plotlyjs, div_id=f"figure-{index}", auto_play=False)


def plotly_script(page: Path, plotlyjs: str) -> str | None:
    """For "beside": write plotly.min.js beside `page` (unless the same file is there) and return the
    tag that loads it; for "inline": None (the first figure embeds it)."""
    if plotlyjs not in PLACES:
        raise ConfigError(f"plotlyjs must be one of {', '.join(PLACES)}, got {plotlyjs!r}")
    if plotlyjs == "inline":
        return None
    from plotly.offline import get_plotlyjs

    code, beside = get_plotlyjs().encode(), page.parent / PLOTLY_JS
    if not beside.is_file() or beside.stat().st_size != len(code) or beside.read_bytes() != code:
        write_atomic(beside, code)
    return f'<script src="{PLOTLY_JS}" charset="utf-8"></script>'
