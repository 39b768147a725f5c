"""The circuit a checkpoint uses: input positions -> attention -> MLP -> logits, weighted by effect.

Each component's effect is the accuracy lost when it is mean-ablated: a key position's value vector,
the whole attention output, the MLP output, and the residual path that carries the attention's
output straight to the logits, around the MLP: z_A where the model's residual is "attn_out" (the
paper's code), z̄_A where it is "normalized" (the text's equation 4). Components whose effect is
below a threshold are pruned from the graph. Nodes are named as everywhere (README, "Names"): v3 is
the value vector of key position 3, then attn, mlp, residual (an edge), logits.

Where the effects are measured matters: a memorising model is at chance on test inputs, so nothing
it has can cost test accuracy. `circuit_at` measures on training inputs where test accuracy is at
chance (`on="auto"`), on test inputs otherwise, and the Circuit records which (`inputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import torch
from jaxtyping import Int
from torch import Tensor

from circuitpath.analysis.ablation import ablate
from circuitpath.analysis.models import require_paper
from circuitpath.data import positions_of, truth_of
from circuitpath.errors import ConfigError, InputError
from circuitpath.models.model import CrossAttentionTransformer
from circuitpath.runs import as_run

ATTENTION, MLP, LOGITS, RESIDUAL = "attn", "mlp", "logits", "resid"  # as discovery names them
INPUTS = ("train", "test")
#: Test accuracy within this of chance (1/p) counts as at chance: `on="auto"` then measures on training inputs.
CHANCE_MARGIN = 0.1


@dataclass
class Circuit:
    graph: nx.DiGraph  # node attribute `effect`, edge attribute `effect`; only kept components
    effects: dict[str, float]  # every component, kept or not: accuracy lost when mean-ablated
    base_accuracy: float
    threshold: float
    inputs: str = "test"  # which inputs the effects are measured on: train or test
    why: str = ""  # why those inputs (`circuit_at`)
    n_inputs: int = 0  # how many inputs the effects are measured on

    @property
    def pruned(self) -> list[str]:
        """Components measured but left out (the residual path is an edge, not a node)."""
        kept = set(self.graph.nodes) | ({RESIDUAL} if self.graph.has_edge(ATTENTION, LOGITS) else set())
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
    k: int | Sequence[int] | None = None,
    threshold: float = 0.05,
    inputs: str = "test",
) -> Circuit:
    """Measure every component's effect by mean ablation on `tokens` and keep those above `threshold`
    (`k`: the summed positions, or a number for the first k, marked `summed` on their nodes);
    `inputs` says which split the tokens come from (train or test), for captions."""
    if inputs not in INPUTS:
        raise InputError(f"inputs must be train or test, got {inputs!r}")
    positions = ablate(model, tokens, labels, method="mean")
    base = positions.base_accuracy
    whole = {
        ATTENTION: ablate(model, tokens, labels, hook="blocks.0.hook_attn_out", over=(), method="mean"),
        MLP: ablate(model, tokens, labels, hook="blocks.0.hook_mlp_out", over=(), method="mean"),
    }
    effects = dict(zip(positions.names, positions.effect.tolist()))
    effects[ATTENTION] = base - whole[ATTENTION].accuracy.item()
    effects[MLP] = base - whole[MLP].accuracy.item()
    effects[RESIDUAL] = base - _residual_effect(model, tokens.to(model.W_E.device), labels.to(model.W_E.device))
    graph = nx.DiGraph()
    graph.add_node(LOGITS, effect=base, layer=3)
    for node, layer in ((ATTENTION, 1), (MLP, 2)):
        if effects[node] >= threshold:
            graph.add_node(node, effect=effects[node], layer=layer)
    for i, name in enumerate(positions.names):
        if effects[name] >= threshold and ATTENTION in graph:
            graph.add_node(name, effect=effects[name], layer=0, summed=k is not None and i in positions_of(k))
            graph.add_edge(name, ATTENTION, effect=effects[name])
    if ATTENTION in graph and MLP in graph:
        graph.add_edge(ATTENTION, MLP, effect=effects[MLP])
        graph.add_edge(MLP, LOGITS, effect=effects[MLP])
    if ATTENTION in graph and effects[RESIDUAL] >= threshold:
        graph.add_edge(ATTENTION, LOGITS, effect=effects[RESIDUAL], residual=True)
    return Circuit(graph, effects, base, threshold, inputs, n_inputs=len(tokens))


def choose_inputs(on: str, test_accuracy: float, p: int) -> tuple[str, str]:
    """The split to measure on and why: `on` itself, or for "auto" the training inputs where test
    accuracy is at chance (within CHANCE_MARGIN of 1/p) and the test inputs otherwise."""
    if on not in (*INPUTS, "auto"):
        raise InputError(f"measure on train, test or auto, got {on!r}")
    if on != "auto":
        return on, f"{on} inputs, as asked"
    if test_accuracy <= 1 / p + CHANCE_MARGIN:
        return "train", f"training inputs: test accuracy {test_accuracy:.3f} is at chance (1/p = {1 / p:.2f})"
    return "test", f"test inputs: test accuracy {test_accuracy:.3f} is above chance (1/p = {1 / p:.2f})"


def circuit_at(run, step: int | None = None, *, on: str = "auto", n: int = 2048, threshold: float = 0.05,
               device: str | torch.device = "cpu") -> Circuit:
    """The circuit of `run` at `step` (default: the last), measured on up to `n` first inputs of the split
    `on` chooses (`choose_inputs`) from the data of the phase the step belongs to (`n_inputs`: how many).
    The diagram's path (positions -> attn -> mlp -> logits) is the paper's model's; another is refused."""
    run = as_run(run)  # a Run, or its directory
    require_paper(run.config.model, "the circuit diagram", "circuitpath ablate and patch measure its positions, "
                  "circuitpath discover scores them along training")
    model = run.model_at(step, device=device)  # refuses a run without checkpoints, or a step not saved
    step = run.steps[-1] if step is None else step
    phase = run.phase_at(step)
    split, p = run.data(phase), run.config.train.phases[phase].p
    x_test, y_test = split.x_test[:n], split.y_test[:n]
    test_accuracy = accuracy_on(model, x_test, y_test)
    which, why = choose_inputs(on, test_accuracy, p)
    x, y = (split.x_train[:n], split.y_train[:n]) if which == "train" else (x_test, y_test)
    circuit = circuit_graph(model, x, y, truth_of(run.config.task, run.config.train.phases[phase]), threshold, which)
    circuit.why = why
    return circuit


@torch.no_grad()
def accuracy_on(model: CrossAttentionTransformer, tokens: Tensor, labels: Tensor) -> float:
    device = model.W_E.device
    return float((model(tokens.to(device)).argmax(-1) == labels.to(device)).float().mean())
