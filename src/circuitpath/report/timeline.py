"""Beyond the paper: the circuit found at every checkpoint, scored against the task's exact truth.

The paper's thesis, that training reinforces the useful circuit and prunes the spurious one, read
off `circuitpath.analysis.discovery` for the scratch and curriculum runs. The report runs only the
cheapest method, attribution patching (one forward and one backward per checkpoint): all three
methods cost 3.5x as much (see `METHODS_COST`), and `reproduce` is already past its time budget
on training alone. `circuitpath discover RUN` runs every method on any run.
"""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go

from circuitpath.analysis.discovery import DiscoveryConfig, discover, discovery_dir, save_timeline
from circuitpath.analysis.discovery.prune import DiscoveredCircuit
from circuitpath.analysis.discovery.timeline import LEVEL, DiscoveryTimeline
from circuitpath.plots.discovery import discovery_figures
from circuitpath.report.page import Panel
from circuitpath.report.section import Context, Section

METHOD = "attribution"
#: The circuit drawn at each checkpoint keeps positions and neurons on separate budgets, so that neurons
#: never crowd out a position: every position node whose score (the same mean |change| the AUROC ranks)
#: is at least POSITION_SHARE of the largest position's, and the NEURON_BUDGET neurons of largest score.
POSITION_SHARE, NEURON_BUDGET = 0.1, 8
BUDGET_RULE = f"positions >= {POSITION_SHARE:g} x the largest, top {NEURON_BUDGET} neurons"
RUN_COLOURS = ["rgb(214, 39, 40)", "rgb(31, 119, 180)", "rgb(44, 160, 44)", "rgb(148, 103, 189)"]
METHODS_COST = ("Cost, measured on one seed's two runs (61 checkpoints each, 1 024 inputs, one thread): attribution "
                "2.4-2.7 s of CPU a run, all three methods (with activation patching and ablation) 8.4-9.3 s. "
                "Attribution is a first-order estimate; on seed 0 of the paper's runs it reaches 0.99 at the same "
                "checkpoint as the other two (step 1 250 of the curriculum). `circuitpath discover RUN` runs all three.")

CAPTIONS = {
    "auroc": "AUROC of the position scores against the truth (positions 0..k-1 summed, the rest not) at each "
             "checkpoint: 1 means every summed position outranks every spurious one, 0.5 is chance. Look for the "
             "step each run first reaches 0.99 (in the legend), and for the curriculum's p = 2 phase.",
    "circuit": "The circuit attribution patching keeps at each checkpoint (move the slider): orange nodes are the "
               "summed positions (v3: position 3's value, a3: its attention weight), grey the spurious ones, n12 "
               f"MLP neuron 12; width is the score. Positions and neurons have separate budgets ({BUDGET_RULE}), "
               "so a position the AUROC counts is never dropped for a neuron. Spurious nodes should fade as "
               "training prunes them.",
    "faithfulness": "Accuracy with only the top-n nodes kept, the rest mean-ablated, at the last checkpoint: a "
                    "curve that reaches the model's own accuracy (dotted) with few nodes means a small circuit.",
    "pruning": "The paper's red and blue arrows, measured: per interval between checkpoints, which position edges "
               "grew (red) or shrank (blue), and the share of the grown ones that are spurious, which the thesis "
               "says falls to 0. Look for when each run last strengthens a spurious edge.",
}


def timelines(ctx: Context) -> dict:
    """Attribution scores at every checkpoint of every run, saved to RUN/analysis/discovery/."""
    config = DiscoveryConfig(methods=(METHOD,), n=max(2, min(ctx.n, 1024)))
    out = {}
    for name, run in ctx.runs.items():
        out[name] = discover(run, config, progress=False)
        save_timeline(out[name], discovery_dir(run))
    return out


def build(ctx: Context) -> list[Panel]:
    found = timelines(ctx)
    for name, timeline in found.items():
        first = timeline.first_reaching(METHOD)
        ctx.headlines.run(name).circuit_found_at = first if first is not None else -1
    drawn = {name: with_circuits(timeline, budget_circuits(timeline, METHOD)) for name, timeline in found.items()}
    figures = discovery_figures(drawn, METHOD)
    recolour_runs(figures[0], list(found))
    for figure in figures[1:1 + 2 * len(found):2]:
        spread_labels(figure)
    kinds = ["auroc"] + ["circuit", "faithfulness"] * len(found) + (["pruning"] if len(figures) > 1 + 2 * len(found) else [])
    return [Panel(figure, CAPTIONS[kind]) for figure, kind in zip(figures, kinds)]


def budget_circuits(timeline: DiscoveryTimeline, method: str) -> list[DiscoveredCircuit]:
    """At each checkpoint: every whole component, the position nodes (values and weights) scoring at least
    POSITION_SHARE of the largest position node, and the NEURON_BUDGET top neurons; scores are the mean
    |change| (what the AUROC ranks), the drawn values the signed scores."""
    graph, circuits = timeline.graph, []
    for row, (step, signed, magnitude) in enumerate(zip(timeline.steps, timeline.sites[method], timeline.magnitude[method])):
        size = {n.name: float(magnitude[n.site]) for n in graph.nodes if n.site is not None}
        positions = [n.name for n in graph.nodes if n.kind in ("value", "pattern")]
        neurons = sorted((n.name for n in graph.nodes if n.kind == "neuron"), key=lambda name: -size[name])
        largest = max((size[name] for name in positions), default=0.0)
        kept = {n.name for n in graph.nodes if n.kind not in ("value", "pattern", "neuron")}
        kept |= {name for name in positions if largest > 0 and size[name] >= POSITION_SHARE * largest}
        kept |= set(neurons[:NEURON_BUDGET])
        value = lambda site: None if site is None else float(signed[site])  # noqa: E731
        circuits.append(DiscoveredCircuit(
            rule="budgets", parameter=POSITION_SHARE, method=method, step=step,
            nodes={n.name: value(n.site) for n in graph.nodes if n.name in kept},
            edges=[(e.source, e.target, value(e.site)) for e in graph.edges if e.source in kept and e.target in kept]))
    return circuits


def with_circuits(timeline: DiscoveryTimeline, circuits: list[DiscoveredCircuit]) -> DiscoveryTimeline:
    """The timeline with `circuits` drawn for their method (the saved timeline keeps discovery's own)."""
    return replace(timeline, circuits={**timeline.circuits, circuits[0].method: circuits} if circuits else timeline.circuits)


def recolour_runs(figure: go.Figure, names: list[str]) -> None:
    """One colour per run in the AUROC plot, and "not reached" where a run never reaches the level."""
    for trace in figure.data:
        run = next((i for i, name in enumerate(names) if trace.name.startswith(f"{name}: ")), None)
        if run is not None:
            trace.line.color = RUN_COLOURS[run % len(RUN_COLOURS)]
        trace.name = trace.name.replace(f"(≥ {LEVEL} from step never)", f"(≥ {LEVEL}: not reached)")


#: Where the labels of a cluster of nodes that would touch go, in x order (a lone node's label: top center).
CLUSTER_PLACES = ("top left", "top right", "bottom right", "bottom left")


def spread_labels(figure: go.Figure) -> None:
    """Labels of nodes of one row that would touch fan out around them (CLUSTER_PLACES), in every frame."""
    for trace in [*figure.data, *(t for frame in figure.frames for t in frame.data)]:
        if trace.mode != "markers+text" or not trace.x:
            continue
        span = (max(trace.x) - min(trace.x)) or 1.0
        order = sorted(range(len(trace.x)), key=lambda i: (trace.y[i], trace.x[i]))
        clusters: list[list[int]] = []
        for i in order:
            last = clusters[-1][-1] if clusters else None
            if last is not None and trace.y[last] == trace.y[i] and trace.x[i] - trace.x[last] < 0.06 * span:
                clusters[-1].append(i)
            else:
                clusters.append([i])
        places = ["top center"] * len(trace.x)
        for cluster in (c for c in clusters if len(c) > 1):
            for rank, i in enumerate(cluster):
                places[i] = CLUSTER_PLACES[rank % len(CLUSTER_PLACES)]
        trace.textposition = places


def applies(runs) -> bool:
    return any(run.config.task.k < run.config.task.n_ctx and run.steps for run in runs.values())


SECTION = Section(
    key="timeline", title="Circuit timeline: the circuit at every checkpoint, scored against the truth", figure=None,
    claims=(),
    intro=f"Attribution patching scores every node and edge of the model at every saved checkpoint; its position "
          f"scores are compared with the truth (the first k positions are summed). An extension of the paper's "
          f"thesis, on the runs of Fig. 5; AUROC >= {LEVEL} counts as having found the circuit. {METHODS_COST}",
    build=build, applies=applies, experiments=("scratch", "curriculum"),
)
