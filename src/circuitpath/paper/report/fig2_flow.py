"""Fig. 2: the attention flow of one input, checkpoint by checkpoint; in the paper's run, update by update."""

from __future__ import annotations

from circuitpath.analysis.flow import FlowSequence, attention_flow, readout_flow
from circuitpath.analysis.models import describe, is_paper
from circuitpath.paper.claims import SPURIOUS_PRUNED
from circuitpath.paper.probes import constant_inputs, update_changes
from circuitpath.paper.report.figures import update_changes_figure
from circuitpath.paper.report.page import Panel
from circuitpath.paper.report.section import Context, Section, is_transformer
from circuitpath.plots import training as plots
from circuitpath.plots.graphs import flow_figure, readout_flow_figures


def build(ctx: Context) -> list[Panel]:
    if ctx.paper:
        return [panel for name, run in ctx.runs.items() for panel in _paper(name, run)]
    return [panel for name, run in ctx.runs.items()
            for panel in (_graph(name, run) if is_paper(run.config.model) else _per_head(name, run, ctx))]


def _graph(name: str, run) -> list[Panel]:
    return [Panel(flow_figure(attention_flow(run), f"{name}: attention flow on one test input of each phase"),
                  "Edge width: attention of the query on each position; red: it grew since the previous checkpoint, "
                  "blue: it shrank. Each phase's checkpoints are drawn on that phase's first test input. Move the "
                  "slider: the edges of the summed (orange) positions should thicken and the spurious ones thin out.")]


def _per_head(name: str, run, ctx: Context) -> list[Panel]:
    """A standard transformer: the readout position's attention per layer and head, in place of the single
    query's graph."""
    flow = readout_flow(run, n=min(ctx.n, 256))
    mass, final = readout_flow_figures(flow, name)
    return [Panel(mass, f"{describe(run.config.model)}: the attention the readout position pays to the relevant "
                  "positions (solid) and to the spurious ones (dotted), per layer and head, at every checkpoint. The "
                  "paper's single query becomes one row of each head's pattern; in a later layer the readout may "
                  "gather the relevant tokens through other positions, so a low mass there is no verdict."),
            Panel(final, "The last checkpoint's attention of the readout position on each key position, one row per "
                  "layer and head (each row sums to 1).")]


def _paper(name: str, run) -> list[Panel]:
    p, n_ctx = run.config.train.phases[0].p, run.config.task.n_ctx
    tokens = constant_inputs(p, n_ctx)[-1]  # the paper shows the all-3s input
    label = "".join(map(str, tokens.tolist()))
    dense = leading_updates(run.steps)
    flow = attention_flow(run, tokens)
    panels = [Panel(flow_figure(flow, f"{name}: attention flow on the input {label}"),
                    f"The paper's Fig. 2: the input {label}, one slider step per checkpoint (every update of the first "
                    f"{len(dense) - 1} updates, sparser later). Red edges grew at the last update, blue ones shrank. "
                    "Early on some updates thicken a spurious edge (right of the orange positions). "
                    + final_spurious_sentence(flow))]
    if len(dense) > 1:
        changes = update_changes(run, dense, tokens)
        panels.append(Panel(update_changes_figure(changes, tokens.tolist(), f"{name}: change of the attention on "
                                                  f"{label} at each of the first {len(dense) - 1} updates"),
                            "One row per update (mini-batch). Red cells right of the black line are updates that "
                            "reinforced a spurious position: the paper says some do, while the summed positions "
                            f"tend to gain. Here {int(changes.spurious_increased.sum())} of "
                            f"{len(changes.spurious_increased)} updates raised the attention on some spurious "
                            f"position, and the first k's attention moved by "
                            f"{float(changes.first_k_mass[-1] - changes.first_k_mass[0]):+.3f} over them."))
    panels.append(Panel(plots.accuracy_curves({name: run}),
                        "Training and test accuracy of this mini-batch run, for reading the flow's steps."))
    return panels


def spurious_weights(flow: FlowSequence, index: int = -1) -> list[float]:
    """Attention on each spurious position (position >= k) in the flow graph at `steps[index]`."""
    graph = flow.graphs[index]
    return [data["weight"] for node, _, data in graph.edges(data=True)
            if graph.nodes[node].get("kind") == "input" and not graph.nodes[node]["summed"]]


def final_spurious_sentence(flow: FlowSequence) -> str:
    """What the drawn run's last frame shows of the spurious edges, in numbers, against the claim's threshold."""
    weights = spurious_weights(flow)
    if not weights:
        return "There are no spurious positions (k = T)."
    total = sum(weights)
    verdict = ("pruned, as the paper says" if total < SPURIOUS_PRUNED
               else f"not pruned: the paper's claim asks for under {SPURIOUS_PRUNED}")
    return (f"At the last step ({flow.steps[-1]}) the spurious positions hold {total:.3f} of the attention in all "
            f"(the largest edge {max(weights):.3f}): {verdict}.")


def leading_updates(steps: list[int]) -> list[int]:
    """The checkpoints 0, 1, 2, ... saved after every update from the start (Fig. 2's dense frames)."""
    dense: list[int] = []
    for step in steps:
        if step != len(dense):
            break
        dense.append(step)
    return dense


def heading(runs) -> tuple[str, str]:
    """A standard transformer's readout attention per layer and head, or the paper's graph, along the runs' checkpoints."""
    if is_transformer(runs):
        return ("Fig. 2's question — where the readout position attends, per layer and head",
                "A standard transformer has no single query: the position its logits are read at attends, in every "
                "layer and head, to the input positions. Its attention on the relevant and the spurious positions is "
                "drawn at every checkpoint, the counterpart of the paper's attention-flow graph.")
    return ("Fig. 2 — attention flow, checkpoint by checkpoint",
            "The attention of the single query on each position of one input, as a graph, at every saved checkpoint "
            "(update by update where every update was saved).")


SECTION = Section(
    key="fig2", title="Fig. 2 — attention flow, update by update", figure=2, heading=heading,
    claims=("spurious_updates", "first_epoch_focus", "spurious_pruned"),
    intro="The attention of the single query on each position of one input, as a graph, along training.",
    build=build,
)
