"""The model as a graph of the parts a circuit is made of, and the place each part can be replaced.

Nodes (T key positions, h MLP neurons), with the activation each one outputs:

    value t      v_t = z_t W_V, the value path of key position t            hook_v[:, t]
    pattern t    a_t, the attention weight of key position t                hook_pattern[:, t]
    attention    z_A = sum_t a_t v_t                                        hook_attn_out
    neuron j     GELU of the j-th MLP unit                                  hook_post[:, j]
    mlp          the MLP output                                             hook_mlp_out
    residual     what the residual path carries to the logits               hook_resid_post - hook_mlp_out
                 (z_A or z̄_A, whichever the model's `cfg.residual` adds)
    logits

Edges, as the computation flows: value t -> attention, pattern t -> attention, attention -> neuron j,
attention -> residual, neuron j -> mlp, mlp -> logits, residual -> logits.

Every node and edge reads one *site*: a place in the forward pass where what flows can be replaced.
A node's site is its output; an edge's site is what its target receives from its source. Where the
source feeds nothing else, the two coincide; the edges attention -> neuron j have sites of their own,
the neurons' pre-activations (what neuron j receives from z_A). Methods score sites; node and edge
scores are read off them, so nodes and edges come from the same passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx
import torch
from jaxtyping import Float
from torch import Tensor

from circuitpath.analysis.replacing import ATTN_OUT, MLP_OUT, PATTERN, POST, PRE, RESID_POST, VALUES
from circuitpath.errors import InputError

#: Site groups in the order their sites are numbered, with the hook each reads and the axis it is split along.
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "value": (VALUES, ("key_pos",)),
    "pattern": (PATTERN, ("key_pos",)),
    "attention": (ATTN_OUT, ()),
    "neuron_in": (PRE, ("d_mlp",)),
    "neuron": (POST, ("d_mlp",)),
    "mlp": (MLP_OUT, ()),
    "residual": (RESID_POST, ()),  # not a hook of its own: hook_resid_post - hook_mlp_out
}
LOGITS = "logits"


@dataclass(frozen=True)
class Node:
    name: str
    kind: str  # value, pattern, attention, neuron, mlp, residual or logits
    index: int | None  # key position or neuron; None for whole activations
    site: int | None  # None for the logits, which are not replaced
    layer: int  # 0 positions, 1 attention, 2 neurons, 3 mlp and residual, 4 logits


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    site: int


@dataclass(frozen=True)
class ModelGraph:
    """Nodes, edges and sites of a model with `n_ctx` key positions and `d_mlp` neurons."""

    n_ctx: int
    d_mlp: int
    residual: str = "attn_out"  # what the residual path carries: z_A ("attn_out") or z̄_A ("normalized")

    @classmethod
    def of(cls, model) -> ModelGraph:
        return cls.of_config(model.cfg)

    @classmethod
    def of_config(cls, cfg) -> ModelGraph:
        """The graph of models built from a `ModelConfig`."""
        return cls(cfg.n_ctx, cfg.d_mlp, cfg.residual)

    @cached_property
    def sizes(self) -> dict[str, int]:
        """Sites in each group."""
        per_axis = {"key_pos": self.n_ctx, "d_mlp": self.d_mlp}
        return {group: per_axis[over[0]] if over else 1 for group, (_, over) in GROUPS.items()}

    @cached_property
    def slices(self) -> dict[str, slice]:
        """Where each group's sites sit in a vector of every site."""
        out, start = {}, 0
        for group, size in self.sizes.items():
            out[group] = slice(start, start + size)
            start += size
        return out

    @property
    def n_sites(self) -> int:
        return sum(self.sizes.values())

    def site(self, group: str, index: int = 0) -> int:
        return self.slices[group].start + index

    @cached_property
    def nodes(self) -> list[Node]:
        T, h = range(self.n_ctx), range(self.d_mlp)
        return [
            *(Node(f"v{t}", "value", t, self.site("value", t), 0) for t in T),
            *(Node(f"a{t}", "pattern", t, self.site("pattern", t), 0) for t in T),
            Node("attn", "attention", None, self.site("attention"), 1),
            *(Node(f"n{j}", "neuron", j, self.site("neuron", j), 2) for j in h),
            Node("mlp", "mlp", None, self.site("mlp"), 3),
            Node("resid", "residual", None, self.site("residual"), 3),
            Node(LOGITS, LOGITS, None, None, 4),
        ]

    @cached_property
    def edges(self) -> list[Edge]:
        T, h = range(self.n_ctx), range(self.d_mlp)
        return [
            *(Edge(f"v{t}", "attn", self.site("value", t)) for t in T),
            *(Edge(f"a{t}", "attn", self.site("pattern", t)) for t in T),
            *(Edge("attn", f"n{j}", self.site("neuron_in", j)) for j in h),
            Edge("attn", "resid", self.site("residual")),
            *(Edge(f"n{j}", "mlp", self.site("neuron", j)) for j in h),
            Edge("mlp", LOGITS, self.site("mlp")),
            Edge("resid", LOGITS, self.site("residual")),
        ]

    @cached_property
    def node_by_name(self) -> dict[str, Node]:
        return {node.name: node for node in self.nodes}

    def position_scores(self, sites: Float[Tensor, "... site"]) -> Float[Tensor, "... key_pos"]:
        """How much each key position matters: |value t| + |pattern t|, the two ways it reaches z_A.

        Given `SiteScores.magnitude` (the mean over inputs of each input's |effect|), this is how much
        the output depends on the position; given signed mean effects (`SiteScores.sites`), effects of
        opposite sign on different inputs cancel."""
        return sites[..., self.slices["value"]].abs() + sites[..., self.slices["pattern"]].abs()

    def to_networkx(self, sites: Float[Tensor, " site"] | None = None) -> nx.DiGraph:
        """The graph, with `score` on every node and edge when site scores are given (None on the logits)."""
        graph = nx.DiGraph()
        value = lambda site: None if sites is None or site is None else float(sites[site])
        for node in self.nodes:
            graph.add_node(node.name, kind=node.kind, index=node.index, layer=node.layer, site=node.site,
                           score=value(node.site))
        for edge in self.edges:
            graph.add_edge(edge.source, edge.target, site=edge.site, score=value(edge.site))
        return graph


def site_activations(cache: dict[str, Tensor]) -> dict[str, Tensor]:
    """The activation each site group reads, from a `run_with_cache` of the model: [batch, ...]."""
    acts = {group: cache[hook] for group, (hook, _) in GROUPS.items() if group != "residual"}
    acts["residual"] = cache[RESID_POST] - cache[MLP_OUT]
    return acts


def site_sums(per_group: dict[str, Tensor], graph: ModelGraph) -> tuple[Float[Tensor, " site"], Float[Tensor, " site"]]:
    """Each group's [batch, units] tensor (whole activations: [batch, ...], an input's entry the sum
    over its units) summed over the batch to one number per site, and the same sum of |entries|."""
    per_input = [per_group[g] if over else per_group[g].flatten(1).sum(1, keepdim=True) for g, (_, over) in GROUPS.items()]
    signed = torch.cat([t.sum(0) for t in per_input])
    if signed.shape[0] != graph.n_sites:
        raise InputError(f"{signed.shape[0]} site scores for a graph of {graph.n_sites} sites")
    return signed, torch.cat([torch.linalg.vector_norm(t, 1, dim=0) for t in per_input])  # sum of |entries|
