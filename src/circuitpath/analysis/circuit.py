"""The circuit a checkpoint uses: input positions -> attention -> MLP -> logits, weighted by effect.

Each component's effect is the accuracy lost when it is mean-ablated: a key position's value vector,
the whole attention output, the MLP output, and the residual path that carries the attention's
output straight to the logits, around the MLP: z_A where the model's residual is "attn_out" (the
paper's code), z̄_A where it is "normalized" (the text's equation 4). Components whose effect is
below a threshold are pruned from the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from jaxtyping import Int
from torch import Tensor

from circuitpath.analysis.ablation import ablate
from circuitpath.errors import ConfigError
from circuitpath.model import CrossAttentionTransformer

ATTENTION, MLP, LOGITS = "attention", "MLP", "logits"


@dataclass
class Circuit:
    graph: nx.DiGraph  # node attribute `effect`, edge attribute `effect`; only kept components
    effects: dict[str, float]  # every component, kept or not
    base_accuracy: float
    threshold: float

    @property
    def pruned(self) -> list[str]:
        """Components measured but left out (the residual path is an edge, not a node)."""
        kept = set(self.graph.nodes) | ({"residual"} if self.graph.has_edge(ATTENTION, LOGITS) else set())
        return [name for name in self.effects if name not in kept]


#: The hook holding what the residual connection around the MLP carries, by `ModelConfig.residual`.
RESIDUAL_HOOKS = {"attn_out": "blocks.0.hook_attn_out", "normalized": "blocks.0.ln2.hook_normalized"}


def residual_hook(model: CrossAttentionTransformer) -> str:
    """The hook of r in z_O = r + MLP(z̄_A): z_A or z̄_A, as the model is configured (runs saved
    before the option existed carry z̄_A)."""
    carries = getattr(model.cfg, "residual", "normalized")
    if carries not in RESIDUAL_HOOKS:
        raise ConfigError(f"unknown residual {carries!r}; known: {', '.join(RESIDUAL_HOOKS)}")
    return RESIDUAL_HOOKS[carries]


@torch.no_grad()
def residual_ablated_logits(model: CrossAttentionTransformer, tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Logits [batch, n_tokens] with the residual path's direct contribution replaced by its mean over
    the inputs (the MLP still sees z̄_A of each input)."""
    hook = residual_hook(model)
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    carried = cache[hook]

    def swap_residual(resid, hook):
        return resid - carried + carried.mean(0, keepdim=True)

    return model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", swap_residual)])


def _residual_effect(model: CrossAttentionTransformer, tokens: Tensor, labels: Tensor) -> float:
    """Accuracy with the residual path mean-ablated."""
    return float((residual_ablated_logits(model, tokens).argmax(-1) == labels).float().mean())


def circuit_graph(
    model: CrossAttentionTransformer,
    tokens: Int[Tensor, "batch pos"],
    labels: Int[Tensor, " batch"],
    k: int | None = None,
    threshold: float = 0.05,
) -> Circuit:
    """Measure every component's effect by mean ablation and keep those above `threshold`."""
    positions = ablate(model, tokens, labels, method="mean")
    base = positions.base_accuracy
    whole = {
        ATTENTION: ablate(model, tokens, labels, hook="blocks.0.hook_attn_out", over=(), method="mean"),
        MLP: ablate(model, tokens, labels, hook="blocks.0.hook_mlp_out", over=(), method="mean"),
    }
    effects = {f"x{i}": base - acc for i, acc in enumerate(positions.accuracy.tolist())}
    effects[ATTENTION] = base - whole[ATTENTION].accuracy.item()
    effects[MLP] = base - whole[MLP].accuracy.item()
    effects["residual"] = base - _residual_effect(model, tokens.to(model.W_E.device), labels.to(model.W_E.device))
    graph = nx.DiGraph()
    graph.add_node(LOGITS, effect=base, layer=3)
    for node, layer in ((ATTENTION, 1), (MLP, 2)):
        if effects[node] >= threshold:
            graph.add_node(node, effect=effects[node], layer=layer)
    for i in range(len(positions.names)):
        name = f"x{i}"
        if effects[name] >= threshold and ATTENTION in graph:
            graph.add_node(name, effect=effects[name], layer=0, summed=k is not None and i < k)
            graph.add_edge(name, ATTENTION, effect=effects[name])
    if ATTENTION in graph and MLP in graph:
        graph.add_edge(ATTENTION, MLP, effect=effects[MLP])
        graph.add_edge(MLP, LOGITS, effect=effects[MLP])
    if ATTENTION in graph and effects["residual"] >= threshold:
        graph.add_edge(ATTENTION, LOGITS, effect=effects["residual"], residual=True)
    return Circuit(graph, effects, base, threshold)
