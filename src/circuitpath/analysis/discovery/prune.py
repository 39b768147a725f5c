"""A circuit is the graph pruned by a rule: separate budgets for positions and neurons, the top n
nodes, the nodes above a threshold, or greedy removal of edges while the output stays close (ACDC-style).

budgets (the default) keeps every whole component, every position node (value or attention weight)
whose magnitude (the mean |change| the AUROC ranks) is at least a fraction of the largest position
node's, and the NEURON_BUDGET neurons of largest magnitude: a position is never dropped for a neuron.

top-n and threshold rank nodes by |score| and keep the edges between kept nodes. The greedy rule
walks the edges from the weakest (by the method's score) to the strongest and removes each one for
good when mean-ablating it, on top of those already removed, raises the KL divergence of the
model's output distribution from the full model's (mean over the inputs) by less than tau.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from circuitpath.analysis.discovery.forward import run_kept
from circuitpath.analysis.discovery.graph import LOGITS, ModelGraph
from circuitpath.analysis.discovery.truth import node_order
from circuitpath.errors import InputError

RULES = ("budgets", "top-n", "threshold", "acdc")
#: Default parameter of each rule: share of the largest position kept, nodes kept, fraction of the
#: largest |score|, KL increase allowed.
DEFAULTS = {"budgets": 0.1, "top-n": 16, "threshold": 0.1, "acdc": 0.01}
#: Neurons the budgets rule keeps (those of largest magnitude).
NEURON_BUDGET = 8
POSITION_KINDS = ("value", "pattern")


def describe_rule(rule: str, parameter: float) -> str:
    """The rule in words, for a figure's subtitle."""
    return {"budgets": f"positions scoring >= {parameter:g} x the largest position, top {NEURON_BUDGET} neurons",
            "top-n": f"top {parameter:g} nodes by |score|",
            "threshold": f"nodes with |score| >= {parameter:g} x the largest",
            "acdc": f"edges removed while KL grows by < {parameter:g} each"}.get(rule, f"{rule} {parameter:g}")


@dataclass
class DiscoveredCircuit:
    """The nodes and edges a rule kept, with the method's scores (None on the logits)."""

    rule: str
    parameter: float
    nodes: dict[str, float | None]
    edges: list[tuple[str, str, float]]  # source, target, score
    method: str = ""
    step: int | None = None
    metric: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the greedy rule's final KL

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["nodes"] = [{"name": name, "score": score} for name, score in self.nodes.items()]
        data["edges"] = [{"source": s, "target": t, "score": score} for s, t, score in self.edges]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiscoveredCircuit:
        try:
            return cls(method=data["method"], step=data["step"], rule=data["rule"], parameter=data["parameter"],
                       nodes={n["name"]: n["score"] for n in data["nodes"]},
                       edges=[(e["source"], e["target"], e["score"]) for e in data["edges"]],
                       metric=data.get("metric", ""), extra=data.get("extra", {}))
        except (KeyError, TypeError) as error:
            raise InputError(f"not a circuit: missing or malformed {error}") from None


def check_rule(rule: str, parameter: float | None) -> float:
    """The rule's parameter (its default when None), or InputError naming what is out of range."""
    if rule not in RULES:
        raise InputError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    value = DEFAULTS[rule] if parameter is None else parameter
    if rule == "top-n" and (value != int(value) or value < 0):
        raise InputError(f"top-n keeps a whole number of nodes >= 0, got {value}")
    if rule == "budgets" and not 0 <= value <= 1:
        raise InputError(f"budgets keeps positions above a fraction of the largest, 0 to 1, got {value}")
    if rule == "threshold" and not 0 <= value <= 1:
        raise InputError(f"threshold must be between 0 and 1 (a fraction of the largest score), got {value}")
    if rule == "acdc" and not 0 <= value < float("inf"):
        raise InputError(f"acdc threshold must be a KL increase >= 0, got {value}")
    return value


def _circuit(graph: ModelGraph, sites: Tensor, kept: set[str], rule: str, parameter: float, **info) -> DiscoveredCircuit:
    kept, values = kept | {LOGITS}, sites.tolist()
    score = lambda site: None if site is None else values[site]
    nodes = {n.name: score(n.site) for n in graph.nodes if n.name in kept}
    edges = [(e.source, e.target, score(e.site)) for e in graph.edges if e.source in kept and e.target in kept]
    return DiscoveredCircuit(rule=rule, parameter=parameter, nodes=nodes, edges=edges, **info)


def prune(graph: ModelGraph, sites: Tensor, rule: str, parameter: float | None = None,
          magnitude: Tensor | None = None, **info) -> DiscoveredCircuit:
    """The circuit by budgets, top-n or threshold (the greedy rule needs the model: `greedy`). `magnitude`:
    the mean |change| per site that budgets ranks by (default |sites|). `info`: method, step, metric."""
    value = check_rule(rule, parameter)
    by_site = {n.site: n.name for n in graph.nodes}
    if rule == "budgets":
        size = (sites.abs() if magnitude is None else magnitude).tolist()
        scored = [n for n in graph.nodes if n.site is not None]
        positions = [n for n in scored if n.kind in POSITION_KINDS]
        neurons = sorted((n for n in scored if n.kind == "neuron"), key=lambda n: -size[n.site])
        largest = max((size[n.site] for n in positions), default=0.0)
        kept = {n.name for n in scored if n.kind not in (*POSITION_KINDS, "neuron")}
        kept |= {n.name for n in positions if largest > 0 and size[n.site] >= value * largest}
        kept |= {n.name for n in neurons[:NEURON_BUDGET]}
    elif rule == "top-n":
        kept = {by_site[s] for s in node_order(graph, sites)[: int(value)]}
    elif rule == "threshold":
        values = sites.abs().tolist()
        magnitudes = {n.name: values[n.site] for n in graph.nodes if n.site is not None}
        largest = max(magnitudes.values())
        kept = {name for name, m in magnitudes.items() if largest > 0 and m >= value * largest}
    else:
        raise InputError("the acdc rule needs the model and inputs: call prune.greedy")
    return _circuit(graph, sites, kept, rule, value, **info)


@torch.no_grad()
def greedy(model, graph: ModelGraph, acts: dict[str, Tensor], sites: Tensor, tau: float | None = None,
           **info) -> DiscoveredCircuit:
    """ACDC-style: remove edges weakest first while KL(full || circuit) grows by less than tau each."""
    tau = check_rule("acdc", tau)
    full = F.log_softmax(run_kept(model, graph, acts, torch.ones(1, graph.n_sites, dtype=torch.bool))[0], -1)

    def divergence(keep: Tensor) -> float:
        logits = run_kept(model, graph, acts, keep[None])[0]
        return float(F.kl_div(F.log_softmax(logits, -1), full, log_target=True, reduction="batchmean"))

    keep, current = torch.ones(graph.n_sites, dtype=torch.bool), 0.0
    removed = set()
    for edge in sorted(graph.edges, key=lambda e: abs(float(sites[e.site]))):
        if edge.site in removed:  # another edge already took this site away (node and edge share it)
            continue
        keep[edge.site] = False
        trial = divergence(keep)
        if trial - current < tau:
            current = trial
            removed.add(edge.site)
        else:
            keep[edge.site] = True
    edges = [(e.source, e.target, float(sites[e.site])) for e in graph.edges if keep[e.site]]
    reached = _reaching_logits(edges)
    nodes = {n.name: (None if n.site is None else float(sites[n.site])) for n in graph.nodes if n.name in reached}
    edges = [e for e in edges if e[0] in reached and e[1] in reached]
    return DiscoveredCircuit(rule="acdc", parameter=tau, nodes=nodes, edges=edges,
                             extra={"kl": current, "metric": "KL(full || circuit), mean over inputs"}, **info)


def _reaching_logits(edges: list[tuple[str, str, float]]) -> set[str]:
    """Nodes with a path of kept edges to the logits."""
    parents: dict[str, list[str]] = {}
    for source, target, _ in edges:
        parents.setdefault(target, []).append(source)
    reached, frontier = {LOGITS}, [LOGITS]
    while frontier:
        for source in parents.get(frontier.pop(), []):
            if source not in reached:
                reached.add(source)
                frontier.append(source)
    return reached
