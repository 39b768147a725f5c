"""Each report figure's caption states what the drawn run's own numbers say, and the figures agree with each other."""

import re

import pytest

from circuitpath import train
from conftest import tiny_config


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """scratch and curriculum runs of seeds 0-2, laid out as `reproduce` lays them out (EXPERIMENT/seed_N)."""
    root = tmp_path_factory.mktemp("seeds")
    runs = {}
    for name, phases in (("scratch", "4:40:3e-2"), ("curriculum", "2:20:1e-2,4:20:3e-2")):
        runs[name] = {seed: train(tiny_config(phases, seed=seed), root / name / f"seed_{seed}", progress=False)
                      for seed in range(3)}
    return runs


def test_fig2_caption_states_the_final_spurious_attention_the_claim_measures(seeds):
    from circuitpath.analysis.flow import attention_flow
    from circuitpath.paper.claims import SPURIOUS_PRUNED
    from circuitpath.paper.probes import constant_inputs, update_changes
    from circuitpath.paper.report.fig2_flow import final_spurious_sentence, spurious_weights

    run = seeds["scratch"][0]
    tokens = constant_inputs(4, run.config.task.n_ctx)[-1]
    flow = attention_flow(run, tokens)
    sentence = final_spurious_sentence(flow)
    claimed = update_changes(run, [run.steps[-1]], tokens).spurious_mass[0].item()  # what spurious_pruned reads
    total, largest = map(float, re.search(r"hold ([\d.]+) .*largest edge ([\d.]+)", sentence).groups())
    assert total == pytest.approx(claimed, abs=6e-4) and largest == pytest.approx(max(spurious_weights(flow)), abs=6e-4)
    assert f"({run.steps[-1]})" in sentence
    assert ("not pruned" in sentence) == (claimed >= SPURIOUS_PRUNED)


def test_fig5_seed_panel_shows_train_and_test_and_each_verdict_as_experiments_rule(seeds):
    from circuitpath.paper.experiments import generalises, memorises
    from circuitpath.paper.report.fig5_accuracy import seed_outcomes, seeds_caption
    from circuitpath.paper.report.figures import seed_outcomes_figure

    outcomes = {name: seed_outcomes(runs[0], [0, 1, 2]) for name, runs in seeds.items()}
    for name, by_seed in outcomes.items():
        for seed, outcome in by_seed.items():
            metrics = seeds[name][seed].final_metrics()
            assert (outcome.train_acc, outcome.test_acc) == (metrics["train_acc"], metrics["test_acc"])
            expected = "generalised" if generalises(metrics) else "memorised" if memorises(metrics) else "neither"
            assert outcome.verdict == expected
    figure = seed_outcomes_figure(outcomes, {}, "seeds")
    for name, by_seed in outcomes.items():
        for seed, outcome in by_seed.items():
            drawn = [t for t in figure.data if t.name.startswith(f"{name}: {outcome.verdict} (")]
            train_trace = next(t for t in drawn if t.xaxis == "x")
            test_trace = next(t for t in drawn if t.xaxis == "x2")
            i = [round(x) for x in train_trace.x].index(seed)
            assert train_trace.y[i] == outcome.train_acc and test_trace.y[i] == outcome.test_acc
    caption = seeds_caption(outcomes)
    for name, by_seed in outcomes.items():
        for verdict in {o.verdict for o in by_seed.values()}:
            assert f"{sum(o.verdict == verdict for o in by_seed.values())} {verdict}" in caption


def test_the_report_circuit_is_measured_where_the_ablation_bars_say_it_matters(seeds):
    from circuitpath.analysis.circuit import choose_inputs
    from circuitpath.paper.report.circuits import _final
    from circuitpath.paper.report.section import Context

    run = seeds["scratch"][0]
    ablation, _, diagram = _final("scratch", run, Context(runs={"scratch": run}, n=40))
    split = run.data()
    model = run.model_at()
    test_acc = float((model(split.x_test[:40]).argmax(-1) == split.y_test[:40]).float().mean())
    inputs = choose_inputs("auto", test_acc, 4)[0]
    assert f"on {inputs} inputs" in diagram.figure.layout.title.text and inputs in diagram.caption
    bars = next(t for t in ablation.figure.data if t.name.startswith(inputs))
    intact = float(re.search(r"intact ([\d.]+)", bars.name).group(1))
    labels = {a.text.split()[0]: float(a.text.split()[1]) for a in diagram.figure.layout.annotations}
    assert any(name in labels for name in bars.x), labels
    for name, accuracy in zip(bars.x, bars.y):
        if name in labels:  # every position drawn carries the effect its bar shows: intact - ablated
            assert labels[name] == pytest.approx(intact - accuracy, abs=0.006)


def test_timeline_keeps_every_strong_position_beside_at_most_the_neuron_budget(seeds):
    from circuitpath.analysis.discovery import DiscoveryConfig, discover
    from circuitpath.analysis.discovery.prune import DEFAULTS, NEURON_BUDGET
    from circuitpath.plots.discovery import circuit_timeline_figure

    run = seeds["curriculum"][0]
    timeline = discover(run, DiscoveryConfig(methods=("attribution",), n=40), progress=False)
    circuits = timeline.circuits["attribution"]
    assert [c.step for c in circuits] == timeline.steps
    assert {c.rule for c in circuits} == {"budgets"}
    graph, share = timeline.graph, DEFAULTS["budgets"]
    for circuit, magnitude in zip(circuits, timeline.magnitude["attribution"]):
        size = {n.name: float(magnitude[n.site]) for n in graph.nodes if n.site is not None}
        positions = [n.name for n in graph.nodes if n.kind in ("value", "pattern")]
        largest = max(size[p] for p in positions)
        strong = {p for p in positions if largest > 0 and size[p] >= share * largest}
        assert strong == {n for n in circuit.nodes if n in positions}
        neurons = sorted((n.name for n in graph.nodes if n.kind == "neuron"), key=lambda name: -size[name])
        assert {n for n in circuit.nodes if n.startswith("n")} == set(neurons[:NEURON_BUDGET])
        assert {"attn", "mlp", "logits"} <= set(circuit.nodes)
    subtitle = circuit_timeline_figure(timeline, "attribution", "t").layout.title.text
    assert f"positions scoring >= {share:g} x the largest position, top {NEURON_BUDGET} neurons" in subtitle
    assert "budgets 0.1" not in subtitle


def test_circuit_over_training_measures_on_the_inputs_it_is_asked_for(seeds):
    from circuitpath import InputError
    from circuitpath.analysis.ablation import ablate
    from circuitpath.analysis.dynamics import circuit_over_training

    run = seeds["scratch"][0]
    over = circuit_over_training(run, n=30, points=3, on="train")
    split, step = run.data(), over.steps[-1]
    knocked = ablate(run.model_at(step), split.x_train[:30], split.y_train[:30], method="mean")
    assert over.inputs == "train"
    assert over.position_effects[-1].tolist() == pytest.approx(knocked.effect.tolist())
    with pytest.raises(InputError, match="got 'valid'"):
        circuit_over_training(run, on="valid")


def _drawn_steps(figure) -> set[int]:
    """The checkpoint steps a Fig. 3 panel draws: the heatmaps' step axis (x of the summary heatmap, y per input)."""
    steps = set()
    for trace in figure.data:
        if trace.type == "heatmap":
            axis = trace.y if trace.y is not None and str(trace.y[0]).isdigit() and trace.x[0].startswith("x0=") else trace.x
            steps |= {int(s) for s in axis}
    return steps


@pytest.mark.parametrize("paper", [True, False])
def test_fig3_titles_and_captions_say_the_range_and_inputs_they_draw(seeds, paper):
    from circuitpath.analysis.dynamics import attention_over_training
    from circuitpath.paper.report.fig3_attention import SECTION
    from circuitpath.paper.report.section import Context

    run = seeds["curriculum"][0]
    switch, n = run.config.train.phase_starts()[1], 30
    panels = SECTION.build(Context(runs={"curriculum": run}, n=n, paper=paper))
    assert panels and "p = 2 phase" not in SECTION.title  # the section also draws whole runs (`analyze`)
    for panel in panels:
        title, steps = panel.figure.layout.title.text, _drawn_steps(panel.figure)
        said_p2 = "p = 2 phase" in title
        assert said_p2 == paper and ("p = 2 phase" in panel.caption) == paper, (title, panel.caption)
        if said_p2:
            assert steps == {s for s in run.steps if s <= switch}, (title, steps)
        else:  # the whole run: the switch is marked on the figure and named in the caption
            assert steps == set(run.steps)
            assert f"the dotted line at step {switch} marks the switch to p = 4" in panel.caption
            assert any(shape.line.dash == "dot" for shape in panel.figure.layout.shapes)
        if "mean attention" in [a.text for a in panel.figure.layout.annotations]:  # the summary heatmap
            phase = 0 if said_p2 else -1
            assert f"over {min(n, len(run.data(phase).x_test))} {'p = 2 test inputs' if said_p2 else 'test inputs of the last phase (p = 4)'}" in panel.caption
            expected = attention_over_training(run, n=n, phase=phase, steps=sorted(steps)).pattern
            assert panel.figure.data[0].z == pytest.approx(expected.T.tolist())
            assert f"(steps {min(steps)}-{max(steps)})" in title


def test_fig4_colours_each_point_by_its_sum_and_says_which_labeling_fits(seeds):
    from circuitpath.analysis.clusters import FITS_ARI, find_clusters
    from circuitpath.paper.report.fig4_clusters import SECTION
    from circuitpath.paper.report.section import Context

    run, n = seeds["curriculum"][0], 40
    panels = SECTION.build(Context(runs={"curriculum": run}, n=n))
    train = run.config.train
    assert len(panels) == len(train.phases)  # the end of each phase
    for panel, index, end in zip(panels, range(len(train.phases)), train.phase_starts()[1:] + [train.total_steps]):
        p, tokens = train.phases[index].p, run.data(index).x_test[:n]
        found = find_clusters(run.model_at(end), tokens, p, run.config.task.k)
        points = panel.figure.data[0]  # each point coloured by its sum of the first k, the labeling the claims test
        assert list(points.marker.color) == tokens[:, : run.config.task.k].sum(1).tolist() and len(points.x) == len(tokens)
        assert points.marker.colorscale and not any(t.showlegend is not False for t in panel.figure.data[:1])
        title = re.sub(r"</sup><br><sup>|<br>", " ", panel.figure.layout.title.text)
        best = found.best_labeling
        score = (found.alignment if found.n_clusters > 1 else found.separation)[best]
        assert (f"Fits: {best} (ARI >= {FITS_ARI})" in title) == (score >= FITS_ARI) != ("No labeling fits" in title)
        assert "coloured by the sum of its first k" in panel.caption


def _texts(html: str) -> list[str]:
    """The page's paragraphs (intros, captions, notes) as plain text: what points the reader somewhere."""
    from html import unescape

    return [unescape(text) for text in re.findall(r"<p[^>]*>(.*?)</p>", html, flags=re.S)]


def test_quick_tour_texts_point_only_to_claims_rows_that_exist(tmp_path, monkeypatch):
    """`reproduce --seeds 1 --vis-seeds 1` where the drawn d = 2 seed's pretraining failed: no _if_pretrained rows,
    and no text sends the reader to them."""
    import json

    from circuitpath.cli import main
    from circuitpath.paper import presets
    from circuitpath.paper.claims import PRETRAINED
    from circuitpath.paper.report import SECTIONS
    from tiny_presets import tiny_experiments

    monkeypatch.setattr(presets, "experiments", lambda **kwargs: tiny_experiments(kwargs.get("residual", "attn_out")))
    out = tmp_path / "runs"
    assert main(["reproduce", "--out", str(out), "--seeds", "1", "--vis-seeds", "1", "--figures", "3,4",
                 "--n", "32"]) == 0
    keys = {c["key"] for c in json.loads((out / "claims.json").read_text())["claims"]}
    assert "vis_p2_solved" in keys and not any(key.endswith(PRETRAINED) for key in keys)  # the case of the tour
    texts = _texts((out / "report.html").read_text())
    assert any("1 seed (0)" in text for text in texts)
    known = {key for section in SECTIONS for key in section.claims} | keys
    for text in texts:
        named = set(re.findall(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b", text)) & known
        assert named <= keys, (named - keys, text)
        assert PRETRAINED not in text, text
    assert any("no rows over the pretrained seeds" in text for text in texts)


def test_fig4_names_the_pretrained_rows_only_when_the_table_has_them():
    from circuitpath.paper.claims import PRETRAINED, Claim
    from circuitpath.paper.report.fig4_clusters import claims_note
    from circuitpath.paper.report.section import Context

    row = lambda key: Claim(key, 4, "paper", "test")
    with_rows = claims_note(Context(runs={}, claims={k: row(k) for k in ("clusters_p2", "clusters_p2" + PRETRAINED)}))
    without = claims_note(Context(runs={}, claims={"clusters_p2": row("clusters_p2")}))
    assert f"the {PRETRAINED} rows" in with_rows and PRETRAINED not in without and "no rows over" in without
    assert claims_note(Context(runs={})) == ""  # `analyze`: no claims table
