"""Clusters of the attention output and what they encode (the paper's Fig. 4).

The paper: after training on p = 2 the attention outputs fall into k + 1 = 6 classes (how many ones
among the first k tokens); after fine-tuning on p = 4, into 16 (the plain sum of the first k).

How many clusters: the rule
---------------------------
1. Ward's agglomerative clustering of the points (deterministic: no random restarts) gives one
   partition for every count n = 2 .. `max_clusters`; each partition gets its mean silhouette.
2. The same is done for a structureless reference: Gaussian points with the data's principal axes
   and variances (seeded). Structureless clouds score a fair silhouette at their best count (the
   references below: 0.30-0.57, a line the highest), so a high silhouette alone does not mean
   separated groups.
3. The count is the **largest** n whose silhouette is within `TOLERANCE` (0.005) of the best one.
   Toward the true count the curve climbs slowly (merging two true groups costs the mean silhouette
   only their share of the points, almost nothing for rare groups: +0.0005 to +0.004 a count on the
   checkpoints below, and exact ties happen, 0.86622 against 0.86620), past it it falls steeply
   (splitting a tight group zeroes its points' silhouettes: -0.019 to -0.03 a count below, and at
   least about 1/MAX_CLUSTERS for groups of equal size), so ties are read as "the larger count".
4. That count stands only if its silhouette beats the reference's at the same count by at least
   `MIN_EXCESS` (0.15); otherwise there are no well-separated groups and the count is 1.

Measured on the checkpoints of `circuitpath reproduce --out R` (seed 0) and of a d = 2 run that did
not learn (`circuitpath train --out D --d-model 2 --d-mlp 32 --phases 2:3000:1e-3,4:7000:1e-2`: test
acc 0.50 at p = 2, its z_A lie on a line), on z_A of the first and of the next 1024 test inputs of
each checkpoint's phase (`python analyses/cluster_rule.py R/curriculum R/scratch D --steps
1000,3000,5000,10000 --old` prints these):

| checkpoint | this rule, probe sets a / b | silhouette, excess over the reference | old rule: k-means, best silhouette; seeds 0-2, a / b |
|---|---|---|---|
| curriculum 3000 (p = 2) | 6 / 6, ARI 1.00 with the counts of ones | 0.68, +0.24 / +0.25 | 6 6 6 / 6 6 6 |
| curriculum 5000 (p = 4) | 55 / 55 | 0.87, +0.66 / +0.66 | 53 53 55 / 54 54 52 |
| curriculum 10000 (p = 4) | 55 / 55, ARI 1.00 with the multisets | 0.89, +0.68 / +0.68 | 55 53 55 / 55 53 53 |
| curriculum 1000 (p = 2) | 1 / 1 | best 0.52 / 0.53 (at 2), -0.02 / +0.04 | 2 2 2 / 2 2 2 |
| scratch 3000 | 1 / 1 | best 0.37 / 0.29 (at 2), +0.04 / -0.06 | 2 2 2 / 2 2 2 |
| scratch 10000 | 1 / 1 | best 0.38 / 0.31 (at 2), +0.08 / -0.03 | 2 (seed 0, a) |
| d = 2 run, 3000 (a line) | 1 / 1 | best 0.57 / 0.56 (at 60 / 64), +0.01 / -0.00 | 64 48 64 / 2 2 2 |

Structured checkpoints beat the reference by 0.24 or more, the others by 0.08 or less; MIN_EXCESS
sits between. The 55 groups after p = 4 are the 55 multisets of the first k tokens that occur among
the probe inputs (the paper's 16 sums: ARI 0.40); the 6 after p = 2 are the counts of ones.
A count above `max_clusters` cannot be found; the largest count tried is then reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitpath.analysis.models import describe, hook_axes, is_paper, readout_position
from circuitpath.data import positions_of, truth_name
from circuitpath.errors import InputError
from circuitpath.models.model import CrossAttentionTransformer

HOOKS = {"z_A": "blocks.0.hook_attn_out", "z_bar_A": "blocks.0.ln2.hook_normalized"}

#: The most clusters any analysis looks for (the p = 4 multisets of k = 5 tokens number 56).
MAX_CLUSTERS = 64
#: Counts whose silhouette is this close to the best are ties; the largest of them is taken.
TOLERANCE = 0.005
#: How far the chosen count's silhouette must beat the structureless reference's.
MIN_EXCESS = 0.15
#: Points clustered at most; further points join the cluster with the nearest centroid.
MAX_POINTS = 2048
#: A labeling fits the points when its adjusted Rand index reaches this (0: chance, 1: the same partition).
FITS_ARI = 0.9


@dataclass
class ClusterResult:
    """Clusters found in one activation, the rule's curves, and their agreement with each candidate labeling."""

    activation: str
    n_clusters: int  # 1 when no count beats the structureless reference by MIN_EXCESS
    labels: Tensor  # [n] cluster of each input
    silhouette: dict[int, float]  # mean silhouette of the Ward partition into each count tried
    alignment: dict[str, float]  # adjusted Rand index with each candidate labeling
    points: Tensor  # [n, d] the activations
    candidates: dict[str, Tensor]
    reference: dict[int, float]  # the same curve for Gaussian points of the data's shape
    separation: dict[str, float]  # ARI of each labeling with the Ward partition into as many groups as it has classes

    @property
    def best_labeling(self) -> str:
        """The labeling the clusters match best; without clusters, the one Ward's tree reproduces best."""
        scores = self.alignment if self.n_clusters > 1 else self.separation
        return max(scores, key=lambda name: -2.0 if scores[name] != scores[name] else scores[name])

    @property
    def fitting(self) -> str | None:
        """The best labeling if it fits (ARI >= FITS_ARI with the clusters, or without clusters with Ward's
        partition into as many groups), else None: no labeling fits."""
        best = self.best_labeling
        scores = self.alignment if self.n_clusters > 1 else self.separation
        return best if scores[best] >= FITS_ARI else None

    @property
    def excess(self) -> dict[int, float]:
        """Silhouette above the structureless reference, per count."""
        return {n: s - self.reference[n] for n, s in self.silhouette.items() if n in self.reference}


def candidate_labelings(tokens: Int[Tensor, "batch pos"], p: int, k: int | Sequence[int]) -> dict[str, Tensor]:
    """What a cluster could encode: the target, the plain sum of the relevant tokens, the count of each token
    there. `k`: the first k (labels say "first k") or the relevant positions (labels say "relevant")."""
    summed = tokens[:, list(positions_of(k))]
    counts = torch.stack([(summed == v).sum(1) for v in range(p)], dim=1)
    _, count_class = torch.unique(counts, dim=0, return_inverse=True)
    name = truth_name(k)
    return {"target y": summed.sum(1) % p, f"sum of {name}": summed.sum(1), f"counts in {name}": count_class}


def choose_count(silhouette: dict[int, float], reference: dict[int, float],
                 tolerance: float = TOLERANCE, min_excess: float = MIN_EXCESS) -> int:
    """The rule of this module, on the two curves: the largest count within `tolerance` of the best
    silhouette, if it beats the reference there by `min_excess`; else 1."""
    if not silhouette:
        return 1
    best = max(silhouette.values())
    count = max(n for n, s in silhouette.items() if s >= best - tolerance)
    return count if silhouette[count] - reference.get(count, -1.0) >= min_excess else 1


def _ward_curve(points: np.ndarray, max_clusters: int) -> tuple[dict[int, float], np.ndarray]:
    """Mean silhouette of the Ward partition into each count, and the linkage."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import pairwise_distances, silhouette_score

    tree = linkage(points, method="ward")
    distances = pairwise_distances(points)  # read by every count's silhouette: computed once
    scores = {}
    for n in range(2, min(max_clusters, len(points) - 1) + 1):
        labels = fcluster(tree, n, criterion="maxclust")
        if len(np.unique(labels)) != n:
            continue  # fewer distinct points than n
        scores[n] = float(silhouette_score(distances, labels, metric="precomputed"))
    return scores, tree


def _kept(n: int, seed: int) -> np.ndarray:
    """The (sorted) indices of the at most MAX_POINTS points that are clustered."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:MAX_POINTS])


def _reference(points: np.ndarray, seed: int) -> np.ndarray:
    """Gaussian points with the principal axes and variances of `points`: shape without groups."""
    centred = points - points.mean(0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    scale = singular / np.sqrt(len(points))
    return (np.random.default_rng(seed).standard_normal((len(points), len(scale))) * scale) @ axes


def cluster_points(
    points: Float[Tensor, "n d"], max_clusters: int = MAX_CLUSTERS, seed: int = 0
) -> tuple[int, Tensor, dict[int, float], dict[int, float]]:
    """Count, labels [n], silhouette curve and reference curve of a point cloud, by this module's rule."""
    from scipy.cluster.hierarchy import fcluster
    from threadpoolctl import threadpool_limits

    if max_clusters < 2:
        raise InputError(f"max_clusters must be >= 2, got {max_clusters}")
    data = points.double().cpu()
    kept = torch.from_numpy(_kept(len(data), seed))
    clustered = data[kept].numpy()
    if len(np.unique(clustered, axis=0)) < 3:
        return 1, torch.zeros(len(data), dtype=torch.long), {}, {}
    # a few hundred points: one thread is fastest, and threads spinning on a busy core are slow
    with threadpool_limits(limits=1):
        scores, tree = _ward_curve(clustered, max_clusters)
        reference, _ = _ward_curve(_reference(clustered, seed), max_clusters)
    count = choose_count(scores, reference)
    if count == 1:
        return 1, torch.zeros(len(data), dtype=torch.long), scores, reference
    found = torch.from_numpy(fcluster(tree, count, criterion="maxclust") - 1).long()
    centroids = torch.stack([data[kept][found == c].mean(0) for c in range(count)])
    labels = torch.cdist(data, centroids).argmin(1)  # the points beyond MAX_POINTS: nearest centroid
    labels[kept] = found
    return count, labels, scores, reference


@torch.no_grad()
def find_clusters(
    model: CrossAttentionTransformer,
    tokens: Int[Tensor, "batch pos"],
    p: int,
    k: int | Sequence[int],
    activation: str = "z_A",
    max_clusters: int = MAX_CLUSTERS,
    seed: int = 0,
) -> ClusterResult:
    """Cluster the activation of `tokens` by this module's rule and compare with the candidate labelings.

    `activation` is z_A or z_bar_A (the paper's model's attention output, before and after its norm) or
    any hook's name (`readout_points`: its value at the readout position, flattened)."""
    from sklearn.metrics import adjusted_rand_score

    points = readout_points(model, tokens, activation)
    count, labels, scores, reference = cluster_points(points, max_clusters, seed)
    candidates = candidate_labelings(tokens.cpu(), p, k)
    alignment = {name: float(adjusted_rand_score(truth.numpy(), labels.numpy())) for name, truth in candidates.items()}
    separation = ward_agreement(points, candidates, seed)
    return ClusterResult(activation, count, labels, scores, alignment, points, candidates, reference, separation)


@torch.no_grad()
def readout_points(model, tokens: Int[Tensor, "batch pos"], activation: str) -> Float[Tensor, "batch d"]:
    """One point per input: the paper's z_A or z_bar_A by name, or the activation at any hook, read at the readout
    position where the hook has a position axis (a standard transformer's pos or query_pos; the paper's model
    reads out its single query, so its per-position hooks are taken whole), flattened."""
    if activation in HOOKS:
        if not is_paper(model):
            raise InputError(f"{activation} is the paper's model's attention output; on {describe(model.cfg)} name a "
                             f"hook, e.g. blocks.{model.cfg.n_layers - 1}.hook_resid_post")
        activation = HOOKS[activation]
    axes = hook_axes(model, activation)  # refuses an unknown hook, naming the valid ones
    _, cache = model.run_with_cache(tokens.to(model.W_E.device), names_filter=activation)
    values = cache[activation]
    for axis in ("pos", "query_pos"):
        if axis in axes and not is_paper(model):
            values = values.select(1 + axes.index(axis), readout_position(model.cfg))
            break
    return values.reshape(values.shape[0], -1).float().cpu()


def default_activation(cfg) -> str:
    """What an analysis clusters by default: z_A in the paper's model, the last residual stream (at the readout
    position) in a standard transformer."""
    return "z_A" if cfg.arch == "cross_attention" else f"blocks.{cfg.n_layers - 1}.hook_resid_post"


def ward_agreement(points: Float[Tensor, "n d"], labelings: dict[str, Tensor], seed: int = 0) -> dict[str, float]:
    """ARI of each labeling with the Ward partition of the points into as many groups as it has classes:
    what the points' arrangement encodes, whether or not it forms separated clusters (NaN: one class)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score

    kept = _kept(len(points), seed)
    tree = linkage(points.double().numpy()[kept], method="ward")
    agreement = {}
    for name, labels in labelings.items():
        truth = labels.numpy()[kept]
        classes = len(np.unique(truth))
        groups = fcluster(tree, classes, criterion="maxclust") if 2 <= classes < len(kept) else None
        agreement[name] = float("nan") if groups is None else float(adjusted_rand_score(truth, groups))
    return agreement
