"""One HTML page of text, tables and plotly figures that opens offline (plotly.js inline unless asked beside)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from circuitpath.plots.html import figure_div, plotly_script
from circuitpath.runs.storage import write_atomic

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.supported { color: #1a7f37; font-weight: bold; } .refuted { color: #b42318; font-weight: bold; }
.mixed { color: #9a6700; font-weight: bold; }
p.caption { margin: 0 0 2em; color: #444; } p.tests { color: #555; font-style: italic; }
section { border-top: 2px solid #eee; margin-top: 1.5em; }
"""


@dataclass
class Panel:
    """A figure and one or two sentences on what to look for in it."""

    figure: go.Figure
    caption: str


@dataclass
class Page:
    """Blocks of HTML in order; figures become plotly divs, plotly.js embedded once."""

    title: str
    blocks: list[str | Panel] = field(default_factory=list)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f" id='{html.escape(anchor)}'" if anchor else ""
        self.blocks.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def text(self, text: str, css: str | None = None) -> None:
        kind = f" class='{css}'" if css else ""
        self.blocks.append(f"<p{kind}>{html.escape(text)}</p>")

    def items(self, lines: list[str]) -> None:
        self.blocks.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")

    def table(self, header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
              row_classes: dict[tuple[int, int], str] | None = None, css: str = "") -> None:
        """A table of text cells; `row_classes` maps (row, column) to a CSS class."""
        classes = row_classes or {}
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = []
        for r, row in enumerate(rows):
            cells = []
            for c, cell in enumerate(row):
                names = " ".join(filter(None, ["num" if c in numeric else "", classes.get((r, c), "")]))
                cells.append(f"<td{f' class={chr(39)}{names}{chr(39)}' if names else ''}>{html.escape(cell)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        self.blocks.append(f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def raw(self, markup: str) -> None:
        self.blocks.append(markup)

    def panel(self, panel: Panel) -> None:
        self.blocks.append(panel)

    @property
    def figures(self) -> int:
        return sum(isinstance(block, Panel) for block in self.blocks)

    def write(self, path: str | Path, plotlyjs: str = "inline") -> Path:
        """The page at `path`; plotly.js embedded (a self-contained file: the default) or written once
        beside it for every page of the folder ("beside", `plots.html`)."""
        path = Path(path)
        script = plotly_script(path, plotlyjs)
        parts, index = [], 0
        for block in self.blocks:
            if isinstance(block, Panel):
                parts.append(figure_div(block.figure, index, script is None and index == 0))
                parts.append(f"<p class='caption'>{html.escape(block.caption)}</p>")
                index += 1
            else:
                parts.append(block)
        page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{STYLE}</style>{script or ''}</head><body>\n<h1>{html.escape(self.title)}</h1>\n"
                + "\n".join(parts) + "\n</body></html>\n")
        write_atomic(path, page.encode())
        return path
