"""One self-contained HTML report of one or more runs, and its headline numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from circuitpath.analysis.ablation import ablate, position_sets
from circuitpath.analysis.barrier import run_barrier
from circuitpath.analysis.circuit import circuit_graph
from circuitpath.analysis.clusters import find_clusters
from circuitpath.analysis.dynamics import attention_over_training, circuit_over_training
from circuitpath.analysis.flow import attention_flow
from circuitpath.analysis.patching import corrupt_positions, patch
from circuitpath.data import targets
from circuitpath.analysis.trajectory import parameter_trajectory
from circuitpath.plots import training as plots
from circuitpath.plots.circuit import circuit_figure
from circuitpath.plots.graphs import flow_figure
from circuitpath.plots.html import write_html
from circuitpath.runs import ANALYSIS_DIR, Run
from circuitpath.storage import write_json


@dataclass
class RunHeadline:
    test_acc: float
    first_k_mass: float  # final attention mass on the summed positions
    spurious_ablated_test_acc: float  # test accuracy with every spurious position mean-ablated
    first_k_ablated_test_acc: float
    clusters: dict[int, tuple[int, str, float]] = field(default_factory=dict)  # phase end step -> (count, labeling, ARI)


@dataclass
class Headlines:
    runs: dict[str, RunHeadline] = field(default_factory=dict)
    barrier: float | None = None  # train loss barrier between the first two runs' final checkpoints
    barrier_pair: tuple[str, str] | None = None

    def lines(self) -> list[str]:
        out = []
        for name, h in self.runs.items():
            out.append(f"{name}: final attention mass on the first k {h.first_k_mass:.3f}; test acc {h.test_acc:.4f}, "
                       f"{h.spurious_ablated_test_acc:.4f} with the spurious positions ablated, "
                       f"{h.first_k_ablated_test_acc:.4f} with the first k ablated")
            for step, (count, labeling, ari) in h.clusters.items():
                out.append(f"{name} step {step}: {count} clusters of z_A, best aligned with {labeling} (ARI {ari:.3f})")
        if self.barrier is not None:
            out.append(f"loss barrier between {self.barrier_pair[0]} and {self.barrier_pair[1]}: {self.barrier:.4g}")
        return out


def build_report(runs: dict[str, Run], path: str | Path, n: int = 1024) -> Headlines:
    """Write the report of `runs` to `path` and return its headline numbers."""
    figures = [plots.accuracy_curves(runs)]
    headlines = Headlines()
    for name, run in runs.items():
        attention = attention_over_training(run, n=min(n, 512))
        figures.append(plots.attention_heatmap(attention, f"{name}: attention of the query over training"))
        figures.append(plots.circuit_over_training_figure(
            circuit_over_training(run, n=min(n, 256)), f"{name}: the circuit over training"))
        flow = attention_flow(run)
        figures.append(flow_figure(flow, f"{name}: attention flow on one test input"))
        split, task, model = run.data(), run.config.task, run.model_at()
        sets = position_sets(task.k, task.n_ctx)
        ablations = {label: ablate(model, x[:n], split_y[:n], sets=sets, generator=torch.Generator().manual_seed(0))
                     for label, x, split_y in (("train", split.x_train, split.y_train), ("test", split.x_test, split.y_test))}
        figures.append(plots.ablation_figure(ablations, f"{name}: accuracy with key positions mean-ablated"))
        p = run.config.train.phases[-1].p
        clean = split.x_test[:n]
        corrupted = corrupt_positions(clean, list(range(task.k)), p, torch.Generator().manual_seed(0))
        patched = patch(model, "blocks.0.attn.hook_v", clean, corrupted, targets(clean, p, task.k),
                        targets(corrupted, p, task.k), over=("key_pos",), metric="accuracy")
        figures.append(plots.patching_figure(patched, f"{name}: patching each key position's value from clean inputs"))
        circuit = circuit_graph(model, split.x_test[:n], split.y_test[:n], task.k)
        figures.append(circuit_figure(circuit, f"{name}: the circuit at step {run.steps[-1]}"))
        clusters = {}
        for index, end in enumerate(run.config.train.phase_starts()[1:] + [run.config.train.total_steps]):
            if end in run.steps:
                phase = run.config.train.phases[index]
                found = find_clusters(run.model_at(end), run.data(index).x_test[:n], phase.p, task.k, max_clusters=64)
                figures.append(plots.clusters_figure(found, f"{name} at step {end} (p = {phase.p})"))
                clusters[end] = (found.n_clusters, found.best_labeling, found.alignment[found.best_labeling])
        test = ablations["test"]
        by_name = dict(zip(test.names, test.accuracy.tolist()))
        headlines.runs[name] = RunHeadline(
            test_acc=run.final_metrics()["test_acc"],
            first_k_mass=float(attention.first_k_mass[-1]),
            spurious_ablated_test_acc=by_name.get(list(sets)[-1], float("nan")) if len(sets) > 1 else float("nan"),
            first_k_ablated_test_acc=by_name[list(sets)[0]],
            clusters=clusters,
        )
    shapes = {run.config.model.to_shape() for run in runs.values()}
    if len(runs) >= 2 and len(shapes) == 1:
        (name_a, run_a), (name_b, run_b) = list(runs.items())[:2]
        barrier = run_barrier(run_a, run_b)
        headlines.barrier, headlines.barrier_pair = barrier.height, (name_a, name_b)
        figures.append(plots.barrier_figure(barrier, name_a, name_b))
    if len(shapes) == 1:
        figures.append(plots.trajectory_figure(parameter_trajectory(runs)))
    write_html(figures, path, "circuitpath report: " + ", ".join(runs))
    for name, run in runs.items():
        (run.path / ANALYSIS_DIR).mkdir(exist_ok=True)
        summary = {"run": name, **asdict(headlines.runs[name])}
        if headlines.barrier is not None and name in headlines.barrier_pair:
            summary["barrier"] = {"between": list(headlines.barrier_pair), "train_loss_height": headlines.barrier}
        write_json(run.path / ANALYSIS_DIR / "headlines.json", summary)
    return headlines
