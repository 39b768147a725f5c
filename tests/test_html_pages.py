"""Pages of figures: plotly.js embedded, or written once beside the pages of a folder; both open offline."""

import re
import shutil
import subprocess

import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from circuitpath.errors import ConfigError
from circuitpath.paper.report.page import Page, Panel
from circuitpath.plots.html import PLOTLY_JS, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def figure(name: str) -> go.Figure:
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2], name=name)).update_layout(title=name)


def sources(page) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", page.read_text())


def test_pages_of_one_folder_share_one_plotly_js(tmp_path):
    first = write_html([figure("a"), figure("b")], tmp_path / "first.html", "first", plotlyjs="beside")
    page = Page("second")
    page.panel(Panel(figure("c"), "caption"))
    second = page.write(tmp_path / "second.html", plotlyjs="beside")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.html", PLOTLY_JS, "second.html"]
    assert (tmp_path / PLOTLY_JS).read_text() == get_plotlyjs()
    for html in (first, second):
        assert sources(html) == [PLOTLY_JS] and html.stat().st_size < 100_000  # nothing else is fetched
    # a stale copy beside the pages (another plotly version) is replaced, not trusted
    (tmp_path / PLOTLY_JS).write_text("stale")
    write_html([figure("a")], first, "first", plotlyjs="beside")
    assert (tmp_path / PLOTLY_JS).read_text() == get_plotlyjs()


def test_an_inline_page_fetches_nothing(tmp_path):
    page = write_html([figure("a"), figure("b")], tmp_path / "page.html", "page")
    assert sources(page) == [] and page.stat().st_size > 3_000_000 and not (tmp_path / PLOTLY_JS).exists()
    assert page.read_text().count("Plotly.newPlot") == 2


def test_an_unknown_place_for_plotly_is_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="plotlyjs must be one of inline, beside, got 'cdn'"):
        write_html([figure("a")], tmp_path / "page.html", "page", plotlyjs="cdn")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_a_page_with_plotly_beside_it_draws_offline(tmp_path):
    page = write_html([figure("a"), figure("b")], tmp_path / "page.html", "page", plotlyjs="beside")
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(re.findall(r'<svg class="main-svg"', done.stdout)) >= 2
    assert not [line for line in done.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
