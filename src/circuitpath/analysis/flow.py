"""Attention-flow graphs: where the single query looks, for one input, at every checkpoint (Fig. 2).

Each graph runs from the input positions (labelled with their tokens) to the attention output; an
edge's weight is the attention on that position and its `change` the sign of the difference with
the previous checkpoint (+1 reinforced, -1 pruned, 0 unchanged, first checkpoint, or first on a new
input). Each checkpoint is drawn on an input of its own phase: a p = 2 checkpoint never saw the
tokens 2 and 3, so a p = 4 input would show it something it was not trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import torch
from jaxtyping import Int
from torch import Tensor

from circuitpath.analysis.models import key_labels, readout_attention, require_paper
from circuitpath.data import positions_of, truth_of
from circuitpath.errors import InputError
from circuitpath.runs import Run, as_run

OUTPUT = "z_A"


@dataclass
class FlowSequence:
    inputs: dict[int, list[int]]  # phase -> the input its checkpoints are drawn on
    k: int  # the task's k; each graph marks its phase's summed positions (node attribute `summed`)
    steps: list[int]
    phases: list[int]  # phase of each step's checkpoint
    graphs: list[nx.DiGraph]
    moduli: dict[int, int]  # phase -> its p

    def tokens_at(self, index: int) -> list[int]:
        """The input the graph of `steps[index]` is drawn on."""
        return self.inputs[self.phases[index]]


def position_node(position: int, token: int) -> str:
    return f"x{position}={token}"


def flow_graph(pattern: Tensor, tokens: list[int], k: int | Sequence[int], previous: Tensor | None = None) -> nx.DiGraph:
    """The flow graph of one attention pattern [key_pos] over `tokens`; `k`: the summed positions (a number:
    the first k), marked `summed` on their nodes."""
    graph, relevant = nx.DiGraph(), positions_of(k)
    graph.add_node(OUTPUT, kind="output")
    for position, (weight, token) in enumerate(zip(pattern.tolist(), tokens)):
        node = position_node(position, token)
        graph.add_node(node, kind="input", position=position, token=token, summed=position in relevant)
        change = 0 if previous is None else int(torch.sign(pattern[position] - previous[position]).item())
        graph.add_edge(node, OUTPUT, weight=weight, change=change)
    return graph


def phase_inputs(
    run: Run, phases: list[int], tokens: Tensor | dict[int, Tensor] | None
) -> dict[int, Tensor]:
    """The input [pos] of each phase: given once, given per phase, or the phase's first test input.

    Refuses an input holding a token outside F_p of a phase it would be drawn at.
    """
    if isinstance(tokens, dict):
        missing = sorted(set(phases) - set(tokens))
        if missing:
            raise InputError(f"no input given for phase {missing[0]}; the steps drawn span phases {sorted(set(phases))}")
        chosen = {phase: tokens[phase] for phase in set(phases)}
    elif tokens is None:
        chosen = {phase: run.data(phase).x_test[0] for phase in set(phases)}
    else:
        chosen = {phase: tokens for phase in set(phases)}
    n_ctx = run.config.task.n_ctx
    for phase, sequence in chosen.items():
        sequence = torch.as_tensor(sequence)
        if sequence.numel() != n_ctx:
            raise InputError(f"the input for phase {phase} has {sequence.numel()} tokens; the run's sequences have {n_ctx}")
        p = run.config.train.phases[phase].p
        if int(sequence.min()) < 0 or int(sequence.max()) >= p:
            bad = next(t for t in sequence.reshape(-1).tolist() if not 0 <= t < p)
            raise InputError(f"token {bad} is not in F_{p}: phase {phase} (p = {p}) never saw it; "
                             "give each phase its own input, e.g. tokens={phase: tensor}")
        chosen[phase] = sequence.reshape(-1)
    return chosen


@torch.no_grad()
def attention_flow(
    run: Run,
    tokens: Int[Tensor, " pos"] | dict[int, Int[Tensor, " pos"]] | None = None,
    steps: list[int] | None = None,
) -> FlowSequence:
    """Flow graphs at each checkpoint (all by default), each drawn on an input of its own phase.

    `tokens`: None (each phase's first test input), {phase index: tokens [pos]}, or one input [pos]
    for every phase (refused if it holds a token >= the p of a phase it is drawn at). The graph's single
    query is the paper's model's; `readout_flow` is the per-layer, per-head counterpart for any model.
    """
    require_paper(run.config.model, "the flow graph of a single query", "readout_flow gives its attention per "
                  "layer and head")
    steps = list(run.steps if steps is None else steps)
    phases = [run.phase_at(step) for step in steps]
    inputs = phase_inputs(run, phases, tokens)
    task, graphs, previous = run.config.task, [], None
    for index, (step, phase) in enumerate(zip(steps, phases)):
        sequence = inputs[phase].reshape(1, -1)
        _, cache = run.model_at(step).run_with_cache(sequence, names_filter="blocks.0.attn.hook_pattern")
        pattern = cache["blocks.0.attn.hook_pattern"][0]
        same_input = index > 0 and torch.equal(inputs[phases[index - 1]], inputs[phase])
        truth = truth_of(task, run.config.train.phases[phase])
        graphs.append(flow_graph(pattern, sequence[0].tolist(), truth, previous if same_input else None))
        previous = pattern
    drawn = sorted(set(phases))
    return FlowSequence({phase: inputs[phase].tolist() for phase in drawn}, task.k, steps, phases, graphs,
                        {phase: run.config.train.phases[phase].p for phase in drawn})


@dataclass
class ReadoutFlow:
    """The attention the readout position pays to each key position, per layer and head, at each checkpoint:
    the mean over the first n test inputs of each checkpoint's phase (each row sums to 1)."""

    steps: list[int]
    phases: list[int]
    labels: list[str]  # each key position's name: x0, x1, ... (and cls)
    pattern: Tensor  # [step, layer, head_index, key_pos]
    relevant: list[tuple[int, ...]]  # the truth of each step's phase
    n: int  # inputs averaged over

    def mass(self, spurious: bool = False) -> Tensor:
        """[step, layer, head_index] attention on the relevant positions (or on the spurious ones: the other
        input positions, never a CLS token)."""
        n_ctx = sum(label.startswith("x") for label in self.labels)
        rows = []
        for pattern, relevant in zip(self.pattern, self.relevant):
            chosen = [t for t in range(n_ctx) if (t in relevant) != spurious]
            rows.append(pattern[..., chosen].sum(-1))
        return torch.stack(rows)


@torch.no_grad()
def readout_flow(run: Run, steps: list[int] | None = None, n: int = 256) -> ReadoutFlow:
    """`ReadoutFlow` at each checkpoint (all by default), on the first `n` test inputs of its phase; either model
    (the paper's has one layer and one head)."""
    run = as_run(run)  # a Run, or its directory
    steps = list(run.steps if steps is None else steps)
    phases = [run.phase_at(step) for step in steps]
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    patterns = [readout_attention(run.model_at(step), run.data(phase).x_test[:n]).mean(0)
                for step, phase in zip(steps, phases)]
    task = run.config.task
    return ReadoutFlow(steps, phases, key_labels(run.config.model), torch.stack(patterns),
                       [positions_of(truth_of(task, run.config.train.phases[phase])) for phase in phases],
                       min(n, *(len(run.data(phase).x_test) for phase in set(phases))))
