"""`circuitpath discover`: the table, the files it writes, and one-line errors that leave the run as it was."""

import dataclasses
import hashlib
import xml.etree.ElementTree as ET

import pytest
import torch

from circuitpath import train
from circuitpath.analysis.discovery import DiscoveredCircuit, discovery_dir, load_timeline
from circuitpath.cli import main
from circuitpath.runs import load_run
from circuitpath.runs.storage import read_json, save_tensors
from conftest import tiny_config


def snapshot(path):
    """Every file of the run outside analysis/, with a hash of its bytes."""
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file() and "analysis" not in f.relative_to(path).parts}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train(tiny_config("2:20:1e-2,4:20:1e-2"), tmp_path_factory.mktemp("discover") / "run", progress=False).path


def test_discover_prints_the_table_and_writes_every_file(run_dir, capsys):
    before = snapshot(run_dir)
    assert main(["discover", str(run_dir), "--steps", "0,20-40", "--n", "20", "--force"]) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "precision@k" in out and "AUROC (of the 4 steps scored, 0-40): " in out
    assert "4 checkpoints, 20 test inputs each;" in out
    assert out.count("\n     30  ") == 1 and "pruning story (attribution)" in out
    assert snapshot(run_dir) == before  # nothing but analysis files changed
    timeline = load_timeline(discovery_dir(load_run(run_dir)))
    assert timeline.steps == [0, 20, 30, 40] and timeline.methods == ["attribution", "patching", "ablation"]
    assert timeline.phases == [0, 0, 1, 1]
    summary = read_json(discovery_dir(load_run(run_dir)) / "timeline.json")
    assert summary["methods"]["patching"]["auroc"] == pytest.approx(timeline.auroc("patching").tolist())
    circuits = discovery_dir(load_run(run_dir)) / "circuits"
    assert len(list(circuits.glob("*.json"))) == len(list(circuits.glob("*.svg"))) == 12
    page = discovery_dir(load_run(run_dir)) / "discovery.html"
    assert page.stat().st_size < 1_000_000 and '<script src="plotly.min.js"' in page.read_text()
    assert (page.parent / "plotly.min.js").stat().st_size > 3_000_000


def test_circuit_json_and_svg_round_trip(run_dir):
    assert main(["discover", str(run_dir), "--steps", "40", "--n", "20", "--method", "patching", "--rule", "top-n", "--keep", "5", "--force"]) == 0
    directory = discovery_dir(load_run(run_dir)) / "circuits"
    data = read_json(directory / "patching_step_0000040.json")
    circuit = DiscoveredCircuit.from_json(data)
    assert circuit.to_json() == data and circuit.method == "patching" and circuit.step == 40
    assert len(circuit.nodes) == 6 and circuit.nodes["logits"] is None  # 5 kept and the logits
    assert all(s in circuit.nodes and t in circuit.nodes for s, t, _ in circuit.edges)
    timeline = load_timeline(directory.parent)
    assert timeline.circuits["patching"][0].nodes == circuit.nodes
    svg = ET.parse(directory / "patching_step_0000040.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(f"{ns}circle")) == len(circuit.nodes) and len(svg.findall(f"{ns}line")) == len(circuit.edges)
    assert {t.text for t in svg.findall(f"{ns}text")} >= set(circuit.nodes)


def test_greedy_rule_keeps_a_connected_circuit(run_dir, capsys):
    assert main(["discover", str(run_dir), "--steps", "40", "--n", "20", "--method", "attribution", "--rule", "acdc",
                 "--threshold", "0.001", "--force"]) == 0
    circuit = load_timeline(discovery_dir(load_run(run_dir))).circuits["attribution"][0]
    assert circuit.rule == "acdc" and circuit.extra["kl"] >= 0
    targets = {t for _, t, _ in circuit.edges} | {"logits"}
    assert all(s in targets or s.startswith(("v", "a")) for s, _, _ in circuit.edges)


@pytest.mark.parametrize("args, message", [
    (["--method", "attribution,probing"], "unknown method 'probing'"),
    (["--steps", "7"], "step 7 was not saved"),
    (["--steps", "11-19"], "no checkpoint of"),
    (["--rule", "threshold", "--threshold", "1.5"], "threshold must be between 0 and 1"),
    (["--rule", "budgets", "--threshold", "1.5"], "budgets keeps positions above a fraction of the largest, 0 to 1"),
    (["--rule", "acdc", "--threshold", "-0.1"], "acdc threshold must be a KL increase >= 0"),
    (["--rule", "greedy"], "unknown rule 'greedy'"),
    (["--keep", "4", "--rule", "threshold"], "--keep 4 applies to --rule top-n"),
    (["--n", "1"], "n must be >= 2"),
    (["--metric", "accuracy"], "unknown metric 'accuracy'"),
    (["--out", "/nonexistent/dir/page.html"], "directory /nonexistent/dir does not exist"),
    (["--tol", "1"], "--tol must be in [0, 1)"),
    (["--n", "999999"], "--n 999999 is more than the"),
])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, args, message):
    run = train(tiny_config("4:10:1e-2"), tmp_path / "run", progress=False)
    before = snapshot(run.path)
    assert main(["discover", str(run.path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("circuitpath: error:") and "\n" not in err
    assert snapshot(run.path) == before and not (run.path / "analysis").exists()



def discovery_snapshot(run_path):
    return {str(f.relative_to(run_path)): f.read_bytes() for f in sorted((run_path / "analysis").rglob("*")) if f.is_file()}


def test_an_earlier_discovery_is_replaced_only_with_force(tmp_path, capsys):
    run = train(tiny_config("4:30:1e-2"), tmp_path / "run", progress=False)
    directory = discovery_dir(run)
    assert main(["discover", str(run.path), "--n", "20"]) == 0
    steps = len(run.steps)
    (directory / "notes.txt").write_text("mine")  # not discover's: stays through --force
    before = discovery_snapshot(run.path)
    capsys.readouterr()
    for args in (["--steps", "30"], ["--steps", "30", "--out", str(tmp_path / "page.html")]):
        assert main(["discover", str(run.path), "--n", "20", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"circuitpath: error: {directory} already holds a discovery ({2 + 2 * 3 * steps} files); "
                       "add --force to replace it")
        assert discovery_snapshot(run.path) == before and not (tmp_path / "page.html").exists()
    assert main(["discover", str(run.path), "--n", "20", "--steps", "30", "--method", "patching", "--force"]) == 0
    out = capsys.readouterr().out
    assert f"removed the earlier discovery in {directory} ({2 + 2 * 3 * steps + 2} files)" in out
    assert "AUROC (of the 1 step scored, 30): patching >= 0.99" in out
    assert sorted(f.name for f in (directory / "circuits").iterdir()) == ["patching_step_0000030.json", "patching_step_0000030.svg"]
    assert sorted(f.name for f in directory.iterdir()) == ["circuits", "discovery.html", "notes.txt", "plotly.min.js",
                                                          "scores.safetensors", "timeline.json"]
    assert load_timeline(directory).steps == [30]


def test_a_page_at_out_is_replaced_only_with_force(tmp_path, capsys):
    run = train(tiny_config("4:10:1e-2"), tmp_path / "run", progress=False)
    page = tmp_path / "page.html"
    page.write_text("an earlier page")
    assert main(["discover", str(run.path), "--n", "20", "--out", str(page)]) == 2
    assert capsys.readouterr().err.strip() == f"circuitpath: error: {page} already exists; add --force to replace it"
    assert page.read_text() == "an earlier page" and not (run.path / "analysis").exists()
    assert main(["discover", str(run.path), "--n", "20", "--out", str(page), "--force"]) == 0
    assert "Plotly.newPlot" in page.read_text()


def test_the_inputs_used_are_printed_when_a_phase_has_fewer_than_asked(run_dir, capsys):
    run = load_run(run_dir)
    sizes = [min(1024, run.data(phase).x_test.shape[0]) for phase in (0, 1)]
    assert sizes[0] < 1024  # the tiny p = 2 phase has fewer test inputs than the default
    assert main(["discover", str(run_dir), "--steps", "20,40", "--method", "attribution", "--force"]) == 0
    assert f"2 checkpoints, test inputs: {sizes[0]} in phase 0, {sizes[1]} in phase 1;" in capsys.readouterr().out

def test_a_run_without_test_data_is_refused(tmp_path, capsys):
    run = train(tiny_config("4:10:1e-2"), tmp_path / "run", progress=False)
    data = run.path / "data" / "phase_0.safetensors"
    data.unlink()
    assert main(["discover", str(run.path)]) == 2
    assert "has no test data for phase 0" in capsys.readouterr().err
    save_tensors(data, {"x_train": torch.zeros(4, 6, dtype=torch.long), "y_train": torch.zeros(4, dtype=torch.long),
                        "x_test": torch.zeros(0, 6, dtype=torch.long), "y_test": torch.zeros(0, dtype=torch.long)}, {})
    assert main(["discover", str(run.path)]) == 2
    assert "has 0 test inputs for phase 0" in capsys.readouterr().err
    assert not (run.path / "analysis").exists()


def test_help_explains_with_examples(capsys):
    with pytest.raises(SystemExit) as done:
        main(["discover", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--rule" in out and "AUROC" in out
    examples = out.split("examples:")[1].split()
    runs = [word for word in examples if word.startswith("runs/") and not word.endswith(".html")]
    assert runs and all("/seed_" in word for word in runs), runs  # reproduce writes runs/EXPERIMENT/seed_N


def test_example_runs_on_a_saved_run_beside_the_command_s_discovery(run_dir, monkeypatch, capsys):
    import importlib
    from pathlib import Path

    directory = discovery_dir(load_run(run_dir))
    before = snapshot(directory)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    importlib.import_module("discover_circuit").main(str(run_dir))
    out = capsys.readouterr().out
    assert "AUROC" in out and (directory.parent / "discovery_example" / "final_patching.svg").is_file()
    assert snapshot(directory) == before  # what `circuitpath discover` wrote (or its absence) is left as it was


def test_several_runs_share_one_page_and_are_all_checked_first(tmp_path, capsys):
    scratch = train(tiny_config("4:20:1e-2"), tmp_path / "scratch", progress=False).path
    curriculum = train(tiny_config("2:10:1e-2,4:10:1e-2"), tmp_path / "curriculum", progress=False).path
    assert main(["discover", str(scratch), str(curriculum), "--steps", "0,10,20", "--n", "20", "--method", "attribution"]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err  # no progress bar where stderr is not a terminal (a log file)
    assert out.count("AUROC (of the") == 2 and f"figures written to {tmp_path / 'discovery.html'}" in out
    html = (tmp_path / "discovery.html").read_text()
    assert "scratch: attribution" in html and "curriculum: attribution" in html  # one AUROC axis, one pruning axis
    # a step that one run lacks stops both before anything is written
    later = train(tiny_config("4:30:1e-2"), tmp_path / "later", progress=False).path
    before = snapshot(scratch), snapshot(later)
    assert main(["discover", str(later), str(scratch), "--steps", "30", "--n", "20"]) == 2
    assert "step 30 was not saved" in capsys.readouterr().err
    assert not (later / "analysis").exists() and (snapshot(scratch), snapshot(later)) == before


def test_a_task_without_spurious_positions_has_no_truth_to_score(tmp_path, capsys):
    run = train(tiny_config("4:10:1e-2", k=6), tmp_path / "run", progress=False)
    assert main(["discover", str(run.path)]) == 2
    assert "sums all 6 positions (k = 6)" in capsys.readouterr().err


def test_figures_of_the_section(run_dir):
    from circuitpath.plots.discovery import DISCOVERY_NOTES, discovery_figures

    assert main(["discover", str(run_dir), "--n", "20", "--steps", "0,20-40", "--force"]) == 0
    timeline = load_timeline(discovery_dir(load_run(run_dir)))
    figures = discovery_figures({"a": timeline, "b": timeline})
    assert len(figures) == 1 + 2 * 2 + 1  # AUROC, (circuit slider, faithfulness) per run, pruning story
    assert len(figures[1].frames) == len(timeline.steps) and "AUROC" in DISCOVERY_NOTES
    assert sum(trace.type == "heatmap" for trace in figures[-1].data) == 2  # strengthened / weakened per run


CHROMIUM = __import__("shutil").which("chromium") or __import__("shutil").which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_page_renders_in_headless_chromium(run_dir):
    import re
    import subprocess

    assert main(["discover", str(run_dir), "--n", "20", "--method", "attribution,ablation", "--force"]) == 0
    page = discovery_dir(load_run(run_dir)) / "discovery.html"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=20000", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(re.findall(r'<svg class="main-svg"', done.stdout)) >= 4
    errors = [line for line in done.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    assert not errors, errors


def test_budgets_keep_a_position_that_every_neuron_outscores():
    from circuitpath.analysis.discovery import ModelGraph
    from circuitpath.analysis.discovery.prune import NEURON_BUDGET, prune

    graph = ModelGraph(n_ctx=6, d_mlp=16)
    magnitude = torch.zeros(graph.n_sites)
    for node in graph.nodes:
        if node.kind == "neuron":
            magnitude[node.site] = 10.0 + node.index  # every neuron outscores every position
    v2, v4 = graph.node_by_name["v2"].site, graph.node_by_name["v4"].site
    magnitude[v2], magnitude[v4] = 1.0, 0.05  # v4: below 0.1 x the largest position
    budgets = prune(graph, -magnitude, "budgets", magnitude=magnitude)
    assert "v2" in budgets.nodes and "v4" not in budgets.nodes and budgets.nodes["v2"] == -1.0
    assert {n for n in budgets.nodes if n.startswith("n")} == {f"n{i}" for i in range(16 - NEURON_BUDGET, 16)}
    assert "v2" not in prune(graph, magnitude, "top-n", 16).nodes  # the old rule, still there by name


def test_auroc_has_one_colour_per_run_and_a_dash_per_method(run_dir):
    from circuitpath.analysis.discovery import DiscoveryConfig, discover
    from circuitpath.plots.discovery import auroc_figure

    run = load_run(run_dir)
    timeline = discover(run, DiscoveryConfig(methods=("attribution", "ablation"), n=20), steps=[0, 40], progress=False)
    figure = auroc_figure({"a": timeline, "b": timeline})
    colours = {t.name.split(":")[0]: set() for t in figure.data}
    dashes = {t.name.split(":")[1].split()[0]: set() for t in figure.data}
    for trace in figure.data:
        colours[trace.name.split(":")[0]].add(trace.line.color)
        dashes[trace.name.split(":")[1].split()[0]].add(trace.line.dash)
    assert all(len(c) == 1 for c in colours.values()) and colours["a"] != colours["b"]
    assert all(len(d) == 1 for d in dashes.values()) and dashes["attribution"] != dashes["ablation"]
    chance = dataclasses.replace(timeline, magnitude={m: torch.ones_like(v) for m, v in timeline.magnitude.items()})
    assert chance.first_reaching("attribution") is None  # all positions tie: AUROC 0.5
    names = [t.name for t in auroc_figure({"a": chance}).data]
    assert all("(>= 0.99: not reached)" in n and "never" not in n for n in names), names


def test_labels_of_close_nodes_fan_out():
    from circuitpath.analysis.discovery import ModelGraph
    from circuitpath.plots.discovery import circuit_timeline_figure, label_places, node_places

    graph = ModelGraph(n_ctx=12, d_mlp=128)
    places = node_places(graph)
    names = ["v0", "n10", "n55", "n58", "n59", "v11", "attn"]
    spread = label_places([places[n] for n in names])
    assert len({spread[2], spread[3], spread[4]}) == 3  # n55, n58, n59: three places
    assert spread[0] == spread[5] == spread[6] == "top center"
    circuit = DiscoveredCircuit(rule="budgets", parameter=0.1, nodes={n: 1.0 for n in names} | {"logits": None},
                                edges=[], method="attribution", step=0)
    timeline = type("T", (), {"circuits": {"attribution": [circuit]}, "graph": graph, "k": 5,
                              "relevant_at": lambda self, row: (0, 1, 2, 3, 4)})()
    drawn = circuit_timeline_figure(timeline, "attribution", "t").data[-1]
    shown = node_places(graph, ["n10", "n55", "n58", "n59"])  # the drawn neurons spread evenly: apart, labels on top
    assert list(drawn.textposition) == label_places([shown[n] for n in drawn.text]) == ["top center"] * len(drawn.text)


@pytest.mark.parametrize("neurons", [[33, 34], [33, 34, 35, 40, 56, 68, 85, 94], list(range(30, 60))])
def test_drawn_neurons_never_overlap_and_line_up_across_steps(neurons):
    from circuitpath.analysis.discovery import ModelGraph
    from circuitpath.plots.discovery import circuit_timeline_figure

    graph = ModelGraph(n_ctx=12, d_mlp=128)
    names = [f"n{i}" for i in neurons]
    steps = [DiscoveredCircuit(rule="budgets", parameter=0.1, nodes={"attn": 1.0} | {n: 1.0 for n in half},
                               edges=[], method="attribution", step=step)
             for step, half in enumerate((names[::2], names[1::2], names))]
    timeline = type("T", (), {"circuits": {"attribution": steps}, "graph": graph, "k": 5,
                              "relevant_at": lambda self, row: (0, 1, 2, 3, 4)})()
    figure = circuit_timeline_figure(timeline, "attribution", "t")
    places = {}
    for frame in figure.frames:
        nodes = frame.data[-1]
        for name, x, y in zip(nodes.text, nodes.x, nodes.y):
            assert places.setdefault(name, (x, y)) == (x, y), name  # one place at every step
    # a unit of x is about 75 px, of y about 70 px; the largest marker is 30 px across, a label about 12 px tall
    for a in names:
        for b in names:
            dx, dy = abs(places[a][0] - places[b][0]), abs(places[a][1] - places[b][1])
            assert a == b or dx >= 0.35 and (dx >= 0.7 or dy >= 0.45), (a, b, places[a], places[b])


def test_the_auroc_level_is_said_from_where_it_stays_not_where_it_first_touched():
    from circuitpath.analysis.discovery.truth import reaching_text, stays_from

    steps = [0, 10, 20, 30, 40]
    fell_back = torch.tensor([0.5, 1.0, 0.7, 0.995, 1.0])
    assert stays_from(steps, fell_back) == 30
    assert reaching_text(10, 30) == ">= 0.99 from step 30 on (first at step 10, then fell back)"
    assert stays_from(steps, torch.tensor([0.5, 1.0, 1.0, 1.0, 0.7])) is None
    assert reaching_text(10, None) == ">= 0.99 first at step 10, below it at the last step"
    assert stays_from(steps, torch.tensor([0.5, 0.6, 1.0, 1.0, 1.0])) == 20
    assert reaching_text(20, 20) == ">= 0.99 from step 20 on"
    assert reaching_text(None, None) == ">= 0.99: not reached"
