"""Figures of training: accuracy curves (Fig. 5), attention over training (Fig. 3), the loss barrier
(Fig. 6), the parameter trajectory (Fig. 7) and ablation effects."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitpath.analysis.ablation import AblationResult
from circuitpath.analysis.barrier import BarrierResult
from circuitpath.analysis.dynamics import AttentionOverTraining
from circuitpath.analysis.trajectory import Trajectory
from circuitpath.runs import Run

TEMPLATE = "plotly_white"


def _mark_switches(figure: go.Figure, steps: list[int], **where) -> None:
    for step in steps:
        figure.add_vline(x=step, line_dash="dot", line_color="grey", annotation_text="phase switch", **where)


def accuracy_curves(runs: dict[str, Run]) -> go.Figure:
    """Train and test accuracy (top) and loss (bottom) of each run against step."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=("accuracy", "loss"))
    for index, (name, run) in enumerate(runs.items()):
        colour = f"hsl({(index * 137) % 360}, 60%, 45%)"
        steps = [m["step"] for m in run.metrics]
        for split, dash in (("train", "solid"), ("test", "dash")):
            for row, key in ((1, f"{split}_acc"), (2, f"{split}_loss")):
                figure.add_trace(go.Scatter(x=steps, y=[m[key] for m in run.metrics], name=f"{name} {split}",
                                            legendgroup=f"{name} {split}", showlegend=row == 1,
                                            line={"color": colour, "dash": dash}), row=row, col=1)
        for step in run.phase_boundaries():
            figure.add_vline(x=step, line_dash="dot", line_color=colour)
    figure.update_yaxes(type="log", row=2, col=1)
    figure.update_layout(title="Accuracy and loss over training (dotted: phase switch)", template=TEMPLATE, height=600)
    return figure


def attention_heatmap(result: AttentionOverTraining, title: str) -> go.Figure:
    """Mean attention per key position at each checkpoint, with the boundary k and the summary curves."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35],
                           subplot_titles=("mean attention per key position", "mass on the first k / largest spurious"))
    labels = [str(s) for s in result.steps]
    figure.add_trace(go.Heatmap(x=labels, y=list(range(result.pattern.shape[1])), z=result.pattern.T.tolist(),
                                colorscale="Viridis", colorbar={"title": "attention", "len": 0.6, "y": 0.7}), row=1, col=1)
    figure.add_hline(y=result.k - 0.5, line_color="red", annotation_text=f"k = {result.k}", row=1, col=1)
    figure.add_trace(go.Scatter(x=labels, y=result.first_k_mass.tolist(), name="mass on first k"), row=2, col=1)
    figure.add_trace(go.Scatter(x=labels, y=result.max_spurious.tolist(), name="largest spurious"), row=2, col=1)
    for step in result.phase_switches:
        if str(step) in labels:
            figure.add_vline(x=labels.index(str(step)), line_dash="dot", line_color="grey")
    figure.update_xaxes(title_text="checkpoint step (log-spaced early)", row=2, col=1)
    figure.update_yaxes(title_text="key position", row=1, col=1)
    figure.update_layout(title=title, template=TEMPLATE, height=620,
                         legend={"orientation": "h", "x": 0, "y": -0.22})
    return figure


def barrier_figure(result: BarrierResult, label_a: str, label_b: str) -> go.Figure:
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for split, dash in (("train", "solid"), ("test", "dash")):
        figure.add_trace(go.Scatter(x=result.t.tolist(), y=getattr(result, f"{split}_loss").tolist(), name=f"{split} loss",
                                    line={"dash": dash}), row=1, col=1)
        figure.add_trace(go.Scatter(x=result.t.tolist(), y=getattr(result, f"{split}_acc").tolist(), name=f"{split} accuracy",
                                    line={"dash": dash}), row=1, col=2)
    figure.update_xaxes(title_text=f"t: 0 = {label_a}, 1 = {label_b}")
    figure.update_layout(title=f"Straight line between the solutions: train loss barrier {result.height:.3g}",
                         template=TEMPLATE)
    return figure


def trajectory_figure(result: Trajectory) -> go.Figure:
    panels = [("PCA", result.pca)] + ([("t-SNE", result.tsne)] if result.tsne is not None else [])
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[p for p, _ in panels])
    for col, (label, coords) in enumerate(panels, start=1):
        for index, name in enumerate(dict.fromkeys(result.runs)):
            rows = [i for i, r in enumerate(result.runs) if r == name]
            colour = f"hsl({(index * 137) % 360}, 60%, 45%)"
            figure.add_trace(go.Scatter(
                x=coords[rows, 0].tolist(), y=coords[rows, 1].tolist(), mode="lines+markers", name=name,
                legendgroup=name, showlegend=col == 1, line={"color": colour}, marker={"size": 4},
                text=[f"{name} step {result.steps[i]}" for i in rows], hoverinfo="text"), row=1, col=col)
            marks = {"start": rows[0], "end": rows[-1]}
            marks |= {f"switch {s}": i for i in rows for s in result.phase_switches[name] if result.steps[i] == s}
            figure.add_trace(go.Scatter(
                x=[coords[i, 0].item() for i in marks.values()], y=[coords[i, 1].item() for i in marks.values()],
                mode="markers+text", text=list(marks), textposition="top center", showlegend=False,
                marker={"size": 10, "color": colour, "symbol": "diamond"}), row=1, col=col)
    explained = ", ".join(f"{v:.0%}" for v in result.explained.tolist())
    figure.update_layout(title=f"Parameter trajectories (PCA explains {explained})", template=TEMPLATE)
    return figure


def ablation_figure(results: dict[str, AblationResult], title: str) -> go.Figure:
    """Accuracy with each part ablated, one bar group per result (e.g. train and test)."""
    figure = go.Figure()
    for label, result in results.items():
        figure.add_trace(go.Bar(x=result.names, y=result.accuracy.tolist(), name=f"{label} (intact {result.base_accuracy:.3f})"))
    figure.update_layout(title=title, yaxis_title="accuracy", yaxis_range=[0, 1.05], template=TEMPLATE, barmode="group")
    return figure


def clusters_figure(result, title: str) -> go.Figure:
    """The activations in their first two principal axes, coloured by the best-aligned labeling."""
    import torch

    points = result.points.double()
    centred = points - points.mean(0)
    if points.shape[1] > 2:
        _, _, basis = torch.linalg.svd(centred, full_matrices=False)
        coords = centred @ basis[:2].T
    else:
        coords = centred
    best = result.best_labeling
    figure = go.Figure(go.Scattergl(
        x=coords[:, 0].tolist(), y=coords[:, 1].tolist(), mode="markers",
        marker={"color": result.candidates[best].tolist(), "colorscale": "Turbo", "size": 5,
                "colorbar": {"title": best}},
        text=[f"cluster {c}, {best} {v}" for c, v in zip(result.labels.tolist(), result.candidates[best].tolist())],
        hoverinfo="text"))
    alignment = ", ".join(f"{name} {ari:.2f}" for name, ari in result.alignment.items())
    figure.update_layout(title=f"{title}: {result.n_clusters} clusters of {result.activation} (ARI: {alignment})",
                         xaxis_title="PC 1", yaxis_title="PC 2", template=TEMPLATE)
    return figure


def circuit_over_training_figure(result, title: str) -> go.Figure:
    """Loss, position effects, attention mass and cluster count against step, phase switches marked."""
    figure = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                           subplot_titles=("loss", "accuracy lost when each key position is ablated",
                                           "attention: mass on the first k / largest spurious", "clusters of z_A"))
    steps = result.steps
    figure.add_trace(go.Scatter(x=steps, y=result.train_loss, name="train loss"), row=1, col=1)
    figure.add_trace(go.Scatter(x=steps, y=result.test_loss, name="test loss", line={"dash": "dash"}), row=1, col=1)
    figure.add_trace(go.Heatmap(x=steps, y=list(range(result.position_effects.shape[1])),
                                z=result.position_effects.T.tolist(), colorscale="Reds", zmin=0,
                                colorbar={"title": "effect", "len": 0.22, "y": 0.63}), row=2, col=1)
    figure.add_hline(y=result.k - 0.5, line_color="black", row=2, col=1)
    figure.add_trace(go.Scatter(x=steps, y=result.first_k_mass.tolist(), name="mass on first k"), row=3, col=1)
    figure.add_trace(go.Scatter(x=steps, y=result.max_spurious.tolist(), name="largest spurious"), row=3, col=1)
    figure.add_trace(go.Scatter(x=steps, y=result.n_clusters, name="clusters", mode="lines+markers"), row=4, col=1)
    for step in result.phase_switches:
        figure.add_vline(x=step, line_dash="dot", line_color="grey")
    figure.update_yaxes(type="log", row=1, col=1)
    figure.update_xaxes(title_text="step", row=4, col=1)
    figure.update_layout(title=title, template=TEMPLATE, height=900, legend={"orientation": "h", "y": -0.08})
    return figure


def patching_figure(result, title: str) -> go.Figure:
    """Effect of patching each index, as a fraction of the clean-minus-corrupted gap (1 = fully restored)."""
    values = result.normalized()
    if values.ndim == 0:
        values = values.reshape(1)
    if values.ndim == 1:
        figure = go.Figure(go.Bar(x=[f"{result.axes[0] if result.axes else 'all'} {i}" for i in range(len(values))],
                                  y=values.tolist()))
    else:
        figure = go.Figure(go.Heatmap(z=values.tolist(), colorscale="RdBu", zmid=0))
    figure.update_layout(
        title=f"{title}<br><sup>{result.hook}, {result.metric}: clean {result.clean:.3f}, corrupted {result.corrupted:.3f}</sup>",
        yaxis_title="fraction of the clean run restored", template=TEMPLATE)
    return figure
