"""Figures of training: accuracy curves (Fig. 5), attention over training (Fig. 3), the loss barrier
(Fig. 6), the parameter trajectory (Fig. 7), clusters (Fig. 4), ablation and patching effects."""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from circuitpath.analysis.ablation import AblationResult
from circuitpath.analysis.barrier import BarrierResult
from circuitpath.analysis.clusters import FITS_ARI, MIN_EXCESS, TOLERANCE, ClusterResult
from circuitpath.analysis.dynamics import AttentionOverTraining
from circuitpath.analysis.patching import PatchResult
from circuitpath.analysis.trajectory import Trajectory
from circuitpath.data import positions_of
from circuitpath.plots.style import TEMPLATE, class_colour, mark_truth
from circuitpath.plots.style import title as titled
from circuitpath.runs import Run


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
    figure.update_yaxes(title_text="accuracy", range=[0, 1.05], row=1, col=1)
    figure.update_yaxes(title_text="cross-entropy loss (log)", type="log", row=2, col=1)
    figure.update_xaxes(title_text="step", row=2, col=1)
    figure.update_layout(**titled("Accuracy and loss over training", "solid: train, dashed: test; dotted: phase switch"),
                         template=TEMPLATE, height=600)
    return figure


def attention_heatmap(result: AttentionOverTraining, title: str) -> go.Figure:
    """Mean attention per key position at each checkpoint, with the boundary k and the summary curves."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35],
                           subplot_titles=("mean attention per key position", "mass on the first k / largest spurious"))
    labels = [str(s) for s in result.steps]
    figure.add_trace(go.Heatmap(x=labels, y=list(range(result.pattern.shape[1])), z=result.pattern.T.tolist(),
                                colorscale="Viridis", colorbar={"title": "attention", "len": 0.6, "y": 0.7}), row=1, col=1)
    block = mark_truth(figure, positions_of(result.truth), result.pattern.shape[1], row=1, col=1)
    if block:  # white under red: the boundary stays visible on every colour of the scale
        for colour, width in (("white", 5), ("red", 2)):
            figure.add_hline(y=result.k - 0.5, line_color=colour, line_width=width, row=1, col=1)
    said = "summed below, spurious above" if block else "the summed positions are starred"
    figure.add_annotation(x=0, xref="x domain", xanchor="left", y=result.k - 0.5, yref="y", showarrow=False,
                          text=f"<b>k = {result.k}</b>: {said}", font={"color": "red"},
                          bgcolor="rgba(255, 255, 255, 0.85)", bordercolor="red")
    figure.add_trace(go.Scatter(x=labels, y=result.first_k_mass.tolist(), name="mass on first k"), row=2, col=1)
    figure.add_trace(go.Scatter(x=labels, y=result.max_spurious.tolist(), name="largest spurious"), row=2, col=1)
    for step in result.phase_switches:
        if str(step) in labels:
            figure.add_vline(x=labels.index(str(step)), line_dash="dot", line_color="grey")
    figure.update_xaxes(title_text="checkpoint step (log-spaced early)", row=2, col=1)
    figure.update_yaxes(title_text="key position", row=1, col=1)
    figure.update_layout(**titled(title), template=TEMPLATE, height=620,
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
    figure.update_layout(**titled(f"Straight line between the solutions: train loss barrier {result.height:.3g}"),
                         template=TEMPLATE)
    return figure


def _merged_marks(marks: list[tuple[float, float, str]], span: float) -> list[tuple[float, float, str]]:
    """One label per place: marks closer than 2% of the panel's span share one joined label."""
    merged: list[tuple[float, float, list[str]]] = []
    for x, y, text in marks:
        near = next((m for m in merged if abs(m[0] - x) <= 0.02 * span and abs(m[1] - y) <= 0.02 * span), None)
        if near is None:
            merged.append((x, y, [text]))
        elif text not in near[2]:
            near[2].append(text)
    return [(x, y, ", ".join(texts)) for x, y, texts in merged]


def trajectory_figure(result: Trajectory) -> go.Figure:
    """Each run's checkpoints in PCA (and t-SNE) coordinates; start, end and phase switches labelled once."""
    panels = [("PCA", result.pca)] + ([("t-SNE", result.tsne)] if result.tsne is not None else [])
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[p for p, _ in panels])
    for col, (label, coords) in enumerate(panels, start=1):
        marks = []
        for index, name in enumerate(dict.fromkeys(result.runs)):
            rows = [i for i, r in enumerate(result.runs) if r == name]
            colour = f"hsl({(index * 137) % 360}, 60%, 45%)"
            figure.add_trace(go.Scatter(
                x=coords[rows, 0].tolist(), y=coords[rows, 1].tolist(), mode="lines+markers", name=name,
                legendgroup=name, showlegend=col == 1, line={"color": colour}, marker={"size": 4},
                text=[f"{name} step {result.steps[i]}" for i in rows], hoverinfo="text"), row=1, col=col)
            named = {"start": rows[0], "end": rows[-1]}
            named |= {f"switch {s}": i for i in rows for s in result.phase_switches[name] if result.steps[i] == s}
            figure.add_trace(go.Scatter(
                x=[coords[i, 0].item() for i in named.values()], y=[coords[i, 1].item() for i in named.values()],
                mode="markers", showlegend=False, hoverinfo="text", text=[f"{name} {m}" for m in named],
                marker={"size": 10, "color": colour, "symbol": "diamond"}), row=1, col=col)
            marks += [(coords[i, 0].item(), coords[i, 1].item(), f"{name} {m}") for m, i in named.items()]
        span = float((coords.max(0).values - coords.min(0).values).max()) or 1.0
        labels = _merged_marks(marks, span)
        # starts below, ends above, switches to the right: labels of nearby marks point apart
        where = ["bottom center" if "start" in t else "top center" if "end" in t else "middle right" for *_, t in labels]
        figure.add_trace(go.Scatter(x=[m[0] for m in labels], y=[m[1] for m in labels], text=[m[2] for m in labels],
                                    mode="text", textposition=where, showlegend=False, hoverinfo="skip",
                                    cliponaxis=False), row=1, col=col)
    explained = ", ".join(f"{v:.0%}" for v in result.explained.tolist())
    figure.update_layout(**titled(f"Parameter trajectories (PCA explains {explained})",
                                  "one point per checkpoint; runs that share a start share one label"),
                         template=TEMPLATE)
    return figure


def ablation_figure(results: dict[str, AblationResult], title: str) -> go.Figure:
    """Accuracy with each part ablated, one bar group per result (e.g. train and test)."""
    figure = go.Figure()
    for label, result in results.items():
        figure.add_trace(go.Bar(x=result.names, y=result.accuracy.tolist(), name=f"{label} (intact {result.base_accuracy:.3f})"))
    figure.update_layout(**titled(title), yaxis_title="accuracy", yaxis_range=[0, 1.05], template=TEMPLATE, barmode="group")
    return figure


def _principal_plane(points: torch.Tensor) -> torch.Tensor:
    """[n, 2] coordinates in the first two principal axes (the points themselves when d <= 2)."""
    centred = points.double() - points.double().mean(0)
    if centred.shape[1] <= 2:
        return centred
    _, _, basis = torch.linalg.svd(centred, full_matrices=False)
    return centred @ basis[:2].T


def clusters_figure(result: ClusterResult, title: str) -> go.Figure:
    """Left: the activations in their first two principal axes, coloured by the sum of the summed tokens (the
    labeling the paper's figure colours by and its claims test: one colour per sum on an ordered scale, none
    repeated, the same in every panel). Right: the rule's curves: silhouette per cluster count, for the data and
    for a structureless reference, the chosen count marked. The title says which labeling fits the points
    (ARI >= FITS_ARI), or that none does."""
    coords = _principal_plane(result.points)
    best, summed = result.best_labeling, _sum_labeling(result)
    sums = result.candidates[summed]
    others = {name: labels.tolist() for name, labels in result.candidates.items() if name != summed}
    figure = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.2,
                           subplot_titles=(f"{result.activation}, coloured by {summed}", "how many clusters"))
    figure.add_trace(go.Scattergl(
        x=coords[:, 0].tolist(), y=coords[:, 1].tolist(), mode="markers", name=summed, showlegend=False,
        marker={"color": sums.tolist(), "colorscale": "Turbo", "cmin": int(sums.min()), "cmax": int(sums.max()),
                "size": 5, "colorbar": {"title": "sum", "x": 0.5, "xanchor": "left", "len": 0.9, "thickness": 12}},
        text=[f"{summed} {v}, " + ", ".join(f"{name} {labels[i]}" for name, labels in others.items()) + f", cluster {c}"
              for i, (v, c) in enumerate(zip(sums.tolist(), result.labels.tolist()))], hoverinfo="text"), row=1, col=1)
    _silhouette_curves(figure, result)
    alignment = ", ".join(f"{name} {ari:.2f}" for name, ari in result.alignment.items())
    if result.n_clusters > 1:
        head = f"{title}: {result.n_clusters} clusters of {result.activation}"
        found = f"adjusted Rand index of the clusters with each labeling: {alignment}. "
        score = result.alignment[best]
    else:
        head = f"{title}: no well-separated clusters of {result.activation}"
        score = result.separation[best]
        found = (f"Ward's tree reproduces {best} best (ARI {score:.2f} at {len(result.candidates[best].unique())} "
                 "groups). ")
    fits = (f"Fits: {best} (ARI >= {FITS_ARI})." if result.fitting else
            f"No labeling fits (the best, {best}, has ARI {score:.2f} < {FITS_ARI}).")
    rule = (f"Count: the largest whose silhouette is within {TOLERANCE} of the best, kept if it beats the "
            f"reference by {MIN_EXCESS}. ")
    figure.update_layout(**titled(head, rule + found + fits), template=TEMPLATE, height=560,
                         legend={"groupclick": "toggleitem"})
    return figure


def _sum_labeling(result: ClusterResult) -> str:
    """The candidate labeling "sum of first k" (or "sum of relevant positions")."""
    return next(name for name in result.candidates if name.startswith("sum of "))


def _silhouette_curves(figure: go.Figure, result: ClusterResult) -> None:
    counts = sorted(result.silhouette)
    figure.add_trace(go.Scatter(x=counts, y=[result.silhouette[n] for n in counts], mode="lines+markers",
                                name="silhouette", legendgroup="rule", legendgrouptitle_text="rule",
                                line={"color": "black"}, marker={"size": 4}), row=1, col=2)
    figure.add_trace(go.Scatter(x=counts, y=[result.reference.get(n) for n in counts], mode="lines",
                                name="structureless reference", legendgroup="rule", line={"color": "grey", "dash": "dash"}),
                     row=1, col=2)
    if result.n_clusters > 1:
        figure.add_vline(x=result.n_clusters, line_color="red", row=1, col=2,
                         annotation_text=f"{result.n_clusters}", annotation_font_color="red")
    figure.update_xaxes(title_text="PC 1", row=1, col=1)
    figure.update_yaxes(title_text="PC 2", row=1, col=1)
    figure.update_xaxes(title_text="cluster count (Ward)", row=1, col=2)
    figure.update_yaxes(title_text="mean silhouette", row=1, col=2)


def circuit_over_training_figure(result, title: str) -> go.Figure:
    """Loss, position effects, attention mass and cluster count against step, phase switches marked."""
    figure = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                           subplot_titles=("loss", f"effect: {getattr(result, 'inputs', 'test')} accuracy lost when each position's value (v0, v1, ...) is ablated",
                                           "attention: mass on the first k / largest spurious",
                                           "clusters of z_A (1: no well-separated clusters)"))
    steps = result.steps
    figure.add_trace(go.Scatter(x=steps, y=result.train_loss, name="train loss"), row=1, col=1)
    figure.add_trace(go.Scatter(x=steps, y=result.test_loss, name="test loss", line={"dash": "dash"}), row=1, col=1)
    figure.add_trace(go.Heatmap(x=steps, y=list(range(result.position_effects.shape[1])),
                                z=result.position_effects.T.tolist(), colorscale="Reds", zmin=0,
                                colorbar={"title": "effect", "len": 0.22, "y": 0.63}), row=2, col=1)
    starred = set(getattr(result, "relevant", None) or ())  # a truth other than the first k
    if not starred:
        figure.add_hline(y=result.k - 0.5, line_color="black", row=2, col=1)
    figure.add_trace(go.Scatter(x=steps, y=result.first_k_mass.tolist(), name="mass on first k"), row=3, col=1)
    figure.add_trace(go.Scatter(x=steps, y=result.max_spurious.tolist(), name="largest spurious"), row=3, col=1)
    figure.add_trace(go.Scatter(x=steps, y=result.n_clusters, name="clusters", mode="lines+markers"), row=4, col=1)
    for step in result.phase_switches:
        figure.add_vline(x=step, line_dash="dot", line_color="grey")
    figure.update_yaxes(type="log", row=1, col=1)
    figure.update_yaxes(title_text="value of position", tickvals=list(range(result.position_effects.shape[1])),
                        ticktext=[f"v{t}" + "*" * (t in starred) for t in range(result.position_effects.shape[1])],
                        row=2, col=1)
    figure.update_xaxes(title_text="step", row=4, col=1)
    figure.update_layout(**titled(title), template=TEMPLATE, height=900, legend={"orientation": "h", "y": -0.08})
    return figure


def _index_labels(result: PatchResult, count: int) -> list[str]:
    if result.labels is not None:
        return list(result.labels)
    return [f"{result.axes[0] if result.axes else 'all'} {i}" for i in range(count)]


def _describe(value: float | torch.Tensor) -> str:
    if isinstance(value, torch.Tensor) and value.numel() > 1:
        finite = value[value.isfinite()]
        return f"{finite.min():.3f} to {finite.max():.3f}" if finite.numel() else "none"
    return f"{float(value):.3f}"


def patching_figure(result: PatchResult, title: str) -> go.Figure:
    """Effect of patching each index as a fraction of the clean-minus-corrupted gap: 0 = as corrupted,
    1 = as clean. Indices with nothing to restore (no answer flips) are marked, not drawn."""
    values = result.normalized()
    if values.ndim == 0:
        values = values.reshape(1)
    if values.ndim == 1:
        labels = _index_labels(result, len(values))
        heights = [0.0 if v != v else v for v in values.tolist()]
        hover = [f"{label}: {v:.3f} of the way from corrupted to clean" for label, v in zip(labels, values.tolist())]
        if result.measured is not None:
            hover = [f"{h}; measured on {m} inputs whose answer flips" for h, m in zip(hover, result.measured.tolist())]
        text = ["" if v != v else f"{v:.2f}" for v in values.tolist()]
        if result.measured is not None:
            text = [t and f"{t}<br>n = {m}" for t, m in zip(text, result.measured.tolist())]
        figure = go.Figure(go.Bar(x=labels, y=heights, text=text, textangle=0, textfont={"size": 10},
                                  hovertext=hover, hoverinfo="text",
                                  marker_color="rgb(31, 119, 180)", name="patched"))
        for label, v in zip(labels, values.tolist()):
            if v != v:
                figure.add_annotation(x=label, y=0, yanchor="bottom", text="no answer flips", showarrow=False,
                                      textangle=-90, font={"size": 11, "color": "grey"})
        for level, text in ((0, "0 = as corrupted"), (1, "1 = as clean")):
            figure.add_hline(y=level, line_dash="dot", line_color="grey")
            figure.add_annotation(x=1.01, xref="paper", xanchor="left", y=level, showarrow=False, text=text,
                                  font={"color": "grey"})
        figure.update_yaxes(title_text="fraction restored (0 = as corrupted, 1 = as clean)")
    else:
        figure = go.Figure(go.Heatmap(z=values.tolist(), colorscale="RdBu", zmid=0,
                                      colorbar={"title": "0 = as corrupted<br>1 = as clean"}))
    note = (f"{result.hook}, metric: {result.metric}. Clean {_describe(result.clean)}, "
            f"corrupted {_describe(result.corrupted)}; bar = effect / (clean - corrupted), effect = patched - corrupted"
            + (f"; corruption seed {result.seed}" if result.seed is not None else "")
            + ("; n = inputs measured." if result.measured is not None else "."))
    figure.update_layout(**titled(title, note), template=TEMPLATE)
    figure.update_layout(margin_r=120)  # room for the 0 and 1 labels
    return figure
