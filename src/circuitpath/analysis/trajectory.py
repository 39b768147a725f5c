"""The path of the parameters through training, embedded in two dimensions (the paper's Fig. 7)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuitpath.errors import CheckpointError
from circuitpath.runs import Run
from circuitpath.training.engine import Layout


@dataclass
class Trajectory:
    """One point per (run, checkpoint): PCA coordinates, and t-SNE coordinates when asked for."""

    runs: list[str]  # run name of each point
    steps: list[int]
    pca: Tensor  # [points, 2]
    explained: Tensor  # [2] fraction of variance along each principal axis
    tsne: Tensor | None  # [points, 2]
    phase_switches: dict[str, list[int]]


def parameter_trajectory(runs: dict[str, Run], tsne: bool = True, seed: int = 0) -> Trajectory:
    """Flatten the weights of every checkpoint of every run, and embed them all in one 2-D space."""
    shapes = {run.config.model.to_shape() for run in runs.values()}
    if len(shapes) != 1:
        raise CheckpointError("the runs have models of different shapes; their parameters share no space")
    layout = Layout.of(next(iter(runs.values())).config.model)
    names, steps, rows = [], [], []
    for name, run in runs.items():
        for step in run.steps:
            names.append(name)
            steps.append(step)
            rows.append(run.weights_at(step))
    points = layout.pack(rows).double()
    centred = points - points.mean(0)
    _, singular, basis = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.pow(2)
    pca = (centred @ basis[:2].T).float()
    embedded = _tsne(points, seed) if tsne and len(rows) > 3 else None
    return Trajectory(names, steps, pca, (variance[:2] / variance.sum()).float(), embedded,
                      {name: run.phase_boundaries() for name, run in runs.items()})


def _tsne(points: Tensor, seed: int) -> Tensor:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30, len(points) - 1) / 1.5)
    # a few hundred points: one thread is fastest, and threads spinning on a busy core are slow
    with threadpool_limits(limits=1):
        embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points.numpy())
    return torch.from_numpy(embedded).float()
