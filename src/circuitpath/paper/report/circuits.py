"""Beyond the paper: which components each run uses, by ablation and patching, at the end and along training."""

from __future__ import annotations

import torch
from circuitpath.analysis.ablation import ablate, position_sets
from circuitpath.analysis.circuit import circuit_at
from circuitpath.analysis.clusters import default_activation, find_clusters
from circuitpath.analysis.dynamics import circuit_over_training
from circuitpath.analysis.models import describe, is_paper
from circuitpath.analysis.patching import position_patching
from circuitpath.data import positions_of, truth_name, truth_of
from circuitpath.paper.report.page import Panel
from circuitpath.paper.report.section import Context, Section, is_transformer
from circuitpath.plots import training as plots
from circuitpath.plots.circuit import circuit_figure


def build(ctx: Context) -> list[Panel]:
    panels = []
    for name, run in ctx.runs.items():
        if not is_paper(run.config.model):
            panels.extend(_positions(name, run, ctx))
            continue
        circuit = circuit_at(run, on="auto", n=ctx.n)
        over_training = circuit_over_training(run, n=min(ctx.n, 256), on=circuit.inputs)
        panels.append(Panel(plots.circuit_over_training_figure(over_training, f"{name}: the circuit over training"),
                            f"On one time axis: the loss, the accuracy lost when each position's value is mean-ablated, "
                            f"the attention mass on the first k and the cluster count of z_A, all on {circuit.inputs} "
                            f"inputs, as the final circuit below ({circuit.why}). Look for the summed positions' "
                            "effects rising as the spurious ones vanish, and when that happens relative to the drop "
                            "of the test loss."))
        panels.extend(_final(name, run, ctx, circuit))
    return panels


def _measured(name: str, run, ctx: Context):
    """Each position's (and each set's) mean-ablation and patching at the last checkpoint, with the headlines."""
    split, task, model = run.data(), run.config.task, run.model_at()
    n = ctx.n
    truth = truth_of(task, run.config.train.phases[-1])
    sets = position_sets(truth, task.n_ctx)
    ablations = {label: ablate(model, x[:n], y[:n], sets=sets, generator=torch.Generator().manual_seed(0))
                 for label, x, y in (("train", split.x_train, split.y_train), ("test", split.x_test, split.y_test))}
    by_name = dict(zip(ablations["test"].names, ablations["test"].accuracy.tolist()))
    headline = ctx.headlines.run(name)
    headline.test_acc = run.final_metrics()["test_acc"]
    headline.truth = "first k" if truth_name(truth) == "first k" else "relevant positions"
    headline.first_k_ablated_test_acc = by_name[list(sets)[0]]
    headline.spurious_ablated_test_acc = by_name.get(list(sets)[-1], float("nan")) if len(sets) > 1 else float("nan")
    p = run.config.train.phases[-1].p
    patched = position_patching(model, split.x_test[:n], p, len(positions_of(truth)),
                                generator=torch.Generator().manual_seed(0))
    return ablations, patched


def _positions(name: str, run, ctx: Context) -> list[Panel]:
    """A standard transformer: its input positions ablated and patched; the component diagram and the circuit
    over training read the paper's single attention and MLP, and are left out."""
    ablations, patched = _measured(name, run, ctx)
    train, task = run.config.train, run.config.task
    hook, phase = default_activation(run.config.model), len(train.phases) - 1
    found = find_clusters(run.model_at(), run.data(phase).x_test[: ctx.n], train.phases[phase].p,
                          truth_of(task, train.phases[phase]), activation=hook)
    ctx.headlines.run(name).clustered = f"{hook} at the readout position"
    ctx.headlines.run(name).clusters = {run.steps[-1]: (found.n_clusters, found.best_labeling,
                                                        found.alignment[found.best_labeling])}
    return [
        Panel(plots.clusters_figure(found, f"{name} at step {run.steps[-1]}: clusters of {hook} at the readout position"),
              "Fig. 4's analysis on the standard transformer: each point is one test input's last residual stream at "
              "the readout position (its first two principal axes), coloured by the sum of its summed tokens; "
              "the title gives the cluster count (1: no group stands out from a structureless cloud) and the adjusted "
              "Rand index with each labeling. `circuitpath clusters RUN --hook NAME` clusters any other hook."),
        Panel(plots.ablation_figure(ablations, f"{name}: accuracy with each input position mean-ablated"),
              "Accuracy on training and test inputs when one position's first residual stream (token and position "
              "embedding, blocks.0.hook_resid_pre; pos 3: position 3's, cls: the CLS token's) or a set of them is "
              "replaced by its mean. A "
              "model that uses exactly the relevant positions drops to chance for each of them and not at all for "
              "the spurious set."),
        Panel(plots.patching_figure(patched, f"{name}: patching each position's first-layer value ({patched.hook}, "
                                    "every head) from clean inputs"),
              f"One position at a time is given another token, then its value vectors in the first layer ({patched.hook}, "
              "every head) are patched back from the clean input; the bar is the fraction of the logit difference restored, on "
              "the inputs whose answer the corruption flips. Later layers still see the corrupted token at its own "
              "position, so a small fraction need not mean the position is unused. Not drawn for "
              f"{describe(run.config.model)}: the component diagram and the circuit over training, which read the "
              "paper's single attention output and MLP; `circuitpath discover` scores its input positions along "
              "training."),
    ]


def _final(name: str, run, ctx: Context, circuit=None) -> list[Panel]:
    ablations, patched = _measured(name, run, ctx)
    n = ctx.n
    circuit = circuit or circuit_at(run, on="auto", n=n)
    return [
        Panel(plots.ablation_figure(ablations, f"{name}: accuracy with each position's value (v0, v1, ...) mean-ablated"),
              "Accuracy on training and test inputs when one position's value vector (v3: position 3's) or a set of them is replaced by its mean; the circuit below counts the drop from the intact bar as the effect. A circuit "
              "that uses exactly the first k drops to chance for each summed position and not at all for the "
              "spurious set."),
        Panel(plots.patching_figure(patched, f"{name}: patching each key position's value from clean inputs"),
              "One position at a time is given another token, then its value vector is patched back from the clean "
              "input; the bar is the fraction of the logit difference restored (0: as corrupted, 1: as clean), on "
              "the inputs whose answer the corruption flips. A circuit of the first k restores them fully; a "
              "position whose corruption flips no answer is marked, not drawn."),
        Panel(circuit_figure(circuit, f"{name}: the circuit at step {run.steps[-1]}, on {circuit.inputs} inputs"),
              f"Components kept because mean-ablating them costs accuracy (edge width: that cost), measured on "
              f"{circuit.n_inputs} {circuit.why}: the values of the positions (v0, v1, ...), attn, mlp, the "
              f"residual path (resid), logits. Compare with the {circuit.inputs} bars of the ablation panel above."),
    ]


SECTION_INTRO = ("Ablation and patching of the runs' components, at the end of training and along it (an extension of "
                 "the paper, which reads its circuits from the figures above).")

SECTION = Section(
    key="circuits", title="Circuits: which components the final models use", figure=None, claims=(),
    intro=SECTION_INTRO,
    build=build, experiments=("scratch", "curriculum"),
    heading=lambda runs: ("Circuits: which input positions the final models read",
                          "Mean-ablation and patching of each input position of the final checkpoint, and the clusters "
                          "of the last residual stream at the readout position (an extension of the paper).")
    if is_transformer(runs) else ("Circuits: which components the final models use", SECTION_INTRO),
)
