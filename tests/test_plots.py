"""Figures say what they show: the residual path is visible, labels are not covered, axes and scales are named."""

import dataclasses
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import networkx as nx
import pytest
import torch

from circuitpath import CrossAttentionTransformer, ModelConfig
from circuitpath.analysis.circuit import ATTENTION, LOGITS, MLP, RESIDUAL, Circuit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SVG = "{http://www.w3.org/2000/svg}"


def hand_circuit() -> Circuit:
    """v0..v3 -> attention -> MLP -> logits, and the residual path attention -> logits kept."""
    graph = nx.DiGraph()
    graph.add_node(LOGITS, effect=1.0, layer=3)
    graph.add_node(ATTENTION, effect=0.8, layer=1)
    graph.add_node(MLP, effect=0.7, layer=2)
    for i in range(4):
        graph.add_node(f"v{i}", effect=0.6, layer=0, summed=i < 3)
        graph.add_edge(f"v{i}", ATTENTION, effect=0.6)
    graph.add_edge(ATTENTION, MLP, effect=0.7)
    graph.add_edge(MLP, LOGITS, effect=0.7)
    graph.add_edge(ATTENTION, LOGITS, effect=0.3, residual=True)
    effects = {n: d["effect"] for n, d in graph.nodes(data=True) if n != LOGITS} | {RESIDUAL: 0.3}
    return Circuit(graph, effects, 1.0, 0.05)


def test_svg_routes_the_residual_path_around_the_main_line(tmp_path):
    from circuitpath.plots.circuit import write_circuit_svg

    root = ET.parse(write_circuit_svg(hand_circuit(), tmp_path / "c.svg", "circuit")).getroot()
    circles = {round(float(c.get("cy"))): float(c.get("cx")) for c in root.iter(f"{SVG}circle")}
    (residual,) = [p for p in root.iter(f"{SVG}path") if p.get("class") == "residual"]
    x0, y0, cx, cy, x1, y1 = map(float, re.findall(r"-?\d+\.?\d*", residual.get("d")))
    main_x = circles[round(y0)]
    assert x0 == x1 == main_x  # from the attention node to the logits node ...
    middle = 0.25 * x0 + 0.5 * cx + 0.25 * x1
    assert middle - main_x > 40  # ... but bulging well clear of the attention -> MLP -> logits line
    lines = [tuple(float(l.get(a)) for a in ("x1", "y1", "x2", "y2")) for l in root.iter(f"{SVG}line")]
    assert not any(l[0] == l[2] == main_x and min(l[1], l[3]) <= y1 and max(l[1], l[3]) >= y0 for l in lines)


def _crosses(segment, box) -> bool:
    """Whether a segment passes through an axis-aligned box (sampled finely)."""
    (x0, y0, x1, y1), (left, top, right, bottom) = segment, box
    return any(left <= x0 + t * (x1 - x0) <= right and top <= y0 + t * (y1 - y0) <= bottom
               for t in (i / 200 for i in range(201)))


def test_svg_labels_sit_where_no_edge_runs_and_on_top(tmp_path):
    from circuitpath.plots.circuit import write_circuit_svg

    root = ET.parse(write_circuit_svg(hand_circuit(), tmp_path / "c.svg", "circuit")).getroot()
    lines = [tuple(float(l.get(a)) for a in ("x1", "y1", "x2", "y2")) for l in root.iter(f"{SVG}line")]
    labels = [t for t in root.iter(f"{SVG}text") if t.get("text-anchor")]
    assert len(labels) == 7
    for label in labels:
        x, y, width = float(label.get("x")), float(label.get("y")), 7.0 * len(label.text)
        left = {"end": x - width, "middle": x - width / 2}[label.get("text-anchor")]
        box = (left, y - 11, left + width, y + 2)
        assert not any(_crosses(line, box) for line in lines), label.text
        assert label.get("stroke") == "white"  # a halo, drawn after every edge
    order = [child.tag for child in root]
    assert max(i for i, tag in enumerate(order) if tag in (f"{SVG}line", f"{SVG}path")) < min(
        i for i, child in enumerate(root) if child.get("text-anchor"))


def test_plotly_diagram_draws_the_residual_path_as_an_arc_and_labels_on_white():
    from circuitpath.plots.circuit import circuit_figure

    figure = circuit_figure(hand_circuit(), "circuit")
    (arc,) = [t for t in figure.data if isinstance(t.text, str) and t.text.startswith("residual path")]
    main_x = 1.5  # four positions wide: attention, MLP and logits are centred at 1.5
    assert max(abs(x - main_x) for x in arc.x) > 0.5 and arc.x[0] == arc.x[-1] == main_x
    assert {a.bgcolor for a in figure.layout.annotations} == {"rgba(255, 255, 255, 0.9)"}
    assert len(figure.layout.annotations) == 7


@pytest.mark.parametrize("residual", ["normalized", "attn_out"])
def test_residual_ablation_replaces_what_the_residual_carries(residual):
    from circuitpath.analysis.circuit import residual_ablated_logits

    if "residual" not in {f.name for f in dataclasses.fields(ModelConfig)}:
        if residual != "normalized":
            pytest.skip("this ModelConfig has no residual option: its residual carries z̄_A")
        config = ModelConfig(d_model=8, n_ctx=6, seed=1)
    else:
        config = ModelConfig(d_model=8, n_ctx=6, seed=1, residual=residual)
    model = CrossAttentionTransformer(config)
    tokens = torch.randint(0, 4, (64, 6))
    _, cache = model.run_with_cache(tokens)
    carried = cache["blocks.0.hook_attn_out" if residual == "attn_out" else "blocks.0.ln2.hook_normalized"]
    expected = (carried.mean(0, keepdim=True) + cache["blocks.0.hook_mlp_out"]) @ model.W_U
    torch.testing.assert_close(residual_ablated_logits(model, tokens), expected, atol=1e-5, rtol=1e-5)


def test_patching_figure_says_what_0_and_1_mean_and_marks_positions_with_nothing_to_restore():
    from circuitpath.analysis.patching import PatchResult
    from circuitpath.plots.training import patching_figure

    result = PatchResult("blocks.0.attn.hook_v", ("key_pos",), patched=torch.tensor([1.0, 2.0, float("nan")]),
                         clean=torch.tensor([3.0, 3.0, float("nan")]), corrupted=torch.tensor([-1.0, 1.0, float("nan")]),
                         metric="logit diff", measured=torch.tensor([10, 4, 0]), labels=["v0", "v1", "v2"], seed=3)
    figure = patching_figure(result, "patching")
    assert list(figure.data[0].y) == [0.5, 0.5, 0.0] and figure.data[0].text[2] == ""
    texts = [a.text for a in figure.layout.annotations]
    assert "0 = as corrupted" in texts and "1 = as clean" in texts and "no answer flips" in texts
    assert "0 = as corrupted, 1 = as clean" in figure.layout.yaxis.title.text
    assert list(figure.data[0].x) == ["v0", "v1", "v2"]
    assert "effect = patched - corrupted" in figure.layout.title.text and "corruption seed 3" in figure.layout.title.text


def test_long_titles_wrap_and_the_accuracy_panel_names_its_axes(trained_run):
    from circuitpath.plots.style import TITLE_WIDTH, title
    from circuitpath.plots.training import accuracy_curves

    long = "a title " * 40
    made = title(long, "a note " * 40)
    lines = made["title"]["text"].split("<br>")
    assert len(lines) > 4 and all(len(re.sub("<[^>]+>", "", line)) <= TITLE_WIDTH * 1.3 for line in lines)
    assert made["margin"]["t"] > 150
    figure = accuracy_curves({"run": trained_run})
    assert figure.layout.yaxis.title.text == "accuracy" and "loss" in figure.layout.yaxis2.title.text
    assert figure.layout.xaxis2.title.text == "step"


def test_heatmap_marks_k_with_a_labelled_line_that_stands_out(trained_run):
    from circuitpath.analysis.dynamics import attention_over_training
    from circuitpath.plots.training import attention_heatmap

    figure = attention_heatmap(attention_over_training(trained_run, n=20), "attention")
    marks = [s for s in figure.layout.shapes if s.y0 == s.y1 == 2.5]
    assert {s.line.color for s in marks} == {"white", "red"} and max(s.line.width for s in marks) >= 4
    (label,) = [a for a in figure.layout.annotations if "k = 3" in a.text]
    assert label.bgcolor is not None


def test_trajectory_labels_a_shared_start_once(trained_run, tmp_path):
    from circuitpath import train
    from circuitpath.analysis.trajectory import parameter_trajectory
    from circuitpath.plots.training import trajectory_figure
    from conftest import tiny_config

    twin = train(tiny_config("4:40:1e-2"), tmp_path / "twin", progress=False)  # same seed: same initial weights
    figure = trajectory_figure(parameter_trajectory({"a": trained_run, "b": twin}, tsne=False))
    (labels,) = [t for t in figure.data if t.mode == "text"]
    assert "a start, b start" in labels.text
    assert not any(t in ("a start", "b start") for t in labels.text)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_diagram_and_patching_pages_render_their_labels_in_headless_chromium(tmp_path):
    from circuitpath.analysis.patching import position_patching
    from circuitpath.plots.circuit import circuit_figure
    from circuitpath.plots.html import write_html
    from circuitpath.plots.training import patching_figure

    model = CrossAttentionTransformer(ModelConfig(d_model=8, n_ctx=6))
    patched = position_patching(model, torch.randint(0, 4, (50, 6)), p=4, k=3)
    page = write_html([circuit_figure(hand_circuit(), "circuit"), patching_figure(patched, "patching")],
                      tmp_path / "page.html", "page")
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for text in ("attn 0.80", "mlp 0.70", "logits 1.00", "v3 0.60", "0 = as corrupted", "1 = as clean"):
        assert f">{text}<" in done.stdout, text
    assert not [line for line in done.stderr.splitlines() if "CONSOLE" in line and "Error" in line]


@pytest.mark.parametrize("relevant", [None, (0, 2, 4)])
def test_fig2_boundary_note_sits_above_the_cells(relevant):
    from circuitpath.paper.probes import UpdateChanges
    from circuitpath.paper.report.figures import update_changes_figure

    changes = UpdateChanges([0, 1, 2, 3], torch.rand(4, 8), k=5, relevant=relevant)
    figure = update_changes_figure(changes, [3] * 8, "t")
    (note,) = figure.layout.annotations
    assert note.yref == "paper" and note.y >= 1 and note.yanchor == "bottom", note  # its whole text above the top row
