"""The report opens offline in a real headless browser, with every figure drawn and no console error."""

import re
import shutil
import subprocess

import pytest

from circuitpath import train
from circuitpath.cli import main
from conftest import tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    for name, phases in (("scratch", "4:30:1e-2"), ("curriculum", "2:10:1e-3,4:20:1e-2")):
        train(tiny_config(phases), root / name, progress=False)
    assert main(["analyze", str(root / "scratch"), str(root / "curriculum"), "--out", str(root / "report.html")]) == 0
    return root / "report.html"


def test_report_is_self_contained(report):
    html = report.read_text()
    assert not re.findall(r"<script[^>]*\bsrc=", html)  # plotly.js is inline, nothing is fetched
    assert len(html) > 3_000_000
    # curves, 2 x (attention, circuit over training, flow, ablation, patching, circuit), 3 x clusters,
    # circuit timeline (AUROC, 2 x (circuit slider, faithfulness), pruning story), barrier, trajectory
    assert html.count('class="plotly-graph-div"') == 24


def render(page):
    """The page's DOM after headless chromium ran its scripts, and the console errors it logged."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    return done.stdout, errors


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_report_renders_every_figure_in_headless_chromium(report):
    dom, console_errors = render(report)
    drawn = len(re.findall(r'<svg class="main-svg"', dom))
    assert drawn >= 24, f"only {drawn} plotly surfaces were drawn"
    assert not console_errors, console_errors
    assert "Headline numbers" in dom and "<table" in dom


def test_report_says_what_was_run_and_what_to_look_for(report):
    html = report.read_text()
    head = html[: html.index('class="plotly-graph-div"')]
    assert "circuitpath 0." in head and "written 20" in head  # version and date
    for cell in ("scratch", "curriculum", "p=2: 10 steps, lr 0.001", "T=6, k=3, n=40", "data 0, weights 0"):
        assert cell in head, cell
    assert "Headline numbers" in head and "loss barrier between scratch and curriculum" in head
    assert html.count("class='caption'") == html.count('class="plotly-graph-div"') == 24
    for number in range(2, 8):  # one section per paper figure, each naming the claims it tests
        assert f"Fig. {number} —" in html
    assert "tests the claims spurious_updates, first_epoch_focus, spurious_pruned" in html


def test_headline_numbers_are_saved_beside_each_run(report):
    import json

    saved = json.loads((report.parent / "curriculum" / "analysis" / "headlines.json").read_text())
    assert saved["run"] == "curriculum" and 0 <= saved["first_k_mass"] <= 1
    assert saved["barrier"]["between"] == ["scratch", "curriculum"] and saved["barrier"]["train_loss_height"] >= 0
    assert all(isinstance(v, list) and len(v) == 3 for v in saved["clusters"].values())


def test_circuit_timeline_is_drawn_and_saved_beside_each_run(report):
    import json

    html = report.read_text()
    assert "Circuit timeline" in html and "AUROC of the position scores" in html
    for name in ("scratch", "curriculum"):
        # the report's own copy: RUN/analysis/discovery/ belongs to `circuitpath discover` and is left alone
        assert not (report.parent / name / "analysis" / "discovery").exists()
        saved = json.loads((report.parent / name / "analysis" / "discovery_report" / "timeline.json").read_text())
        assert list(saved["methods"]) == ["attribution"] and len(saved["steps"]) == len(saved["methods"]["attribution"]["auroc"])
        assert all(0 <= a <= 1 for a in saved["methods"]["attribution"]["auroc"])
        headline = json.loads((report.parent / name / "analysis" / "headlines.json").read_text())
        first = saved["methods"]["attribution"]["first_step_auroc_ge_0.99"]
        assert headline["circuit_found_at"] == (-1 if first is None else first)
        stays = saved["methods"]["attribution"]["auroc_ge_0.99_from_step"]
        assert headline["circuit_stays_from"] == (-1 if stays is None else stays)
        assert stays is None or first is not None and stays >= first


def test_analyze_refuses_what_is_not_a_run(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_flow_slider_names_the_checkpoint_it_shows(tmp_path):
    from circuitpath.analysis.flow import attention_flow
    from circuitpath.plots.graphs import flow_figure
    from circuitpath.plots.html import write_html

    run = train(tiny_config("4:30:1e-2"), tmp_path / "run", progress=False)
    flow = attention_flow(run, run.data().x_test[0])
    page = write_html([flow_figure(flow, "flow")], tmp_path / "flow.html", "flow")
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=600)
    shown = set(re.findall(r">step (\d+)<", done.stdout))  # the slider's current-value label
    assert shown == {str(flow.steps[-1])}, (shown, flow.steps)


def test_a_headline_of_one_cluster_says_none_stands_out_instead_of_naming_a_labeling():
    from circuitpath.paper.report.headlines import Headlines

    headlines = Headlines()
    headlines.run("a").clusters = {64: (6, "sum of first k", 1.0), 128: (1, "counts in first k", 0.0)}
    assert headlines.lines() == ["a step 64: 6 clusters of z_A, best aligned with sum of first k (ARI 1.000)",
                                 "a step 128: no well-separated clusters of z_A"]
