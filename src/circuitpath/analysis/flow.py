"""Attention-flow graphs: where the single query looks, for one input, at every checkpoint (Fig. 2).

Each graph runs from the input positions (labelled with their tokens) to the attention output; an
edge's weight is the attention on that position and its `change` the sign of the difference with
the previous checkpoint (+1 reinforced, -1 pruned, 0 unchanged or first checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from jaxtyping import Int
from torch import Tensor

from circuitpath.runs import Run

OUTPUT = "z_A"


@dataclass
class FlowSequence:
    tokens: list[int]
    k: int
    steps: list[int]
    graphs: list[nx.DiGraph]


def position_node(position: int, token: int) -> str:
    return f"x{position}={token}"


def flow_graph(pattern: Tensor, tokens: list[int], k: int, previous: Tensor | None = None) -> nx.DiGraph:
    """The flow graph of one attention pattern [key_pos] over `tokens`."""
    graph = nx.DiGraph()
    graph.add_node(OUTPUT, kind="output")
    for position, (weight, token) in enumerate(zip(pattern.tolist(), tokens)):
        node = position_node(position, token)
        graph.add_node(node, kind="input", position=position, token=token, summed=position < k)
        change = 0 if previous is None else int(torch.sign(pattern[position] - previous[position]).item())
        graph.add_edge(node, OUTPUT, weight=weight, change=change)
    return graph


@torch.no_grad()
def attention_flow(run: Run, tokens: Int[Tensor, " pos"], steps: list[int] | None = None) -> FlowSequence:
    """Flow graphs of one input sequence at each checkpoint (all by default)."""
    steps = run.steps if steps is None else steps
    sequence = tokens.reshape(1, -1)
    graphs, previous = [], None
    for step in steps:
        _, cache = run.model_at(step).run_with_cache(sequence, names_filter="blocks.0.attn.hook_pattern")
        pattern = cache["blocks.0.attn.hook_pattern"][0]
        graphs.append(flow_graph(pattern, sequence[0].tolist(), run.config.task.k, previous))
        previous = pattern
    return FlowSequence(sequence[0].tolist(), run.config.task.k, list(steps), graphs)
