"""Clusters of the attention output and what they encode (the paper's Fig. 4).

The paper: after training on p = 2 the attention outputs fall into k + 1 = 6 classes (how many ones
among the first k tokens); after fine-tuning on p = 4, into 16 (the plain sum of the first k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from circuitpath.model import CrossAttentionTransformer

HOOKS = {"z_A": "blocks.0.hook_attn_out", "z_bar_A": "blocks.0.ln2.hook_normalized"}


@dataclass
class ClusterResult:
    """Clusters found in one activation, and their agreement with each candidate labeling."""

    activation: str
    n_clusters: int
    labels: Tensor  # [n] cluster of each input
    silhouette: dict[int, float]  # score of each cluster count tried
    alignment: dict[str, float]  # adjusted Rand index with each candidate labeling
    points: Tensor  # [n, d] the activations
    candidates: dict[str, Tensor]

    @property
    def best_labeling(self) -> str:
        return max(self.alignment, key=self.alignment.get)


def candidate_labelings(tokens: Int[Tensor, "batch pos"], p: int, k: int) -> dict[str, Tensor]:
    """What a cluster could encode: the target, the plain sum of the first k, the count of each token there."""
    first = tokens[:, :k]
    counts = torch.stack([(first == v).sum(1) for v in range(p)], dim=1)
    _, count_class = torch.unique(counts, dim=0, return_inverse=True)
    return {"target y": first.sum(1) % p, "sum of first k": first.sum(1), "counts in first k": count_class}


@torch.no_grad()
def find_clusters(
    model: CrossAttentionTransformer,
    tokens: Int[Tensor, "batch pos"],
    p: int,
    k: int,
    activation: str = "z_A",
    max_clusters: int = 24,
    seed: int = 0,
    n_init: int = 3,
) -> ClusterResult:
    """k-means for every cluster count from 2 to `max_clusters`; the count with the best silhouette wins."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, pairwise_distances, silhouette_score

    _, cache = model.run_with_cache(tokens, names_filter=HOOKS[activation])
    points = cache[HOOKS[activation]].cpu()
    # the silhouette of every cluster count reads the same distances: computed once, not per count
    sample = np.random.RandomState(seed).permutation(len(points))[:2000]
    distances = pairwise_distances(points.numpy()[sample])
    scores, fits = {}, {}
    for n in range(2, min(max_clusters, len(points) - 1) + 1):
        fit = KMeans(n_clusters=n, n_init=n_init, random_state=seed).fit(points.numpy())
        if len(set(fit.labels_)) < 2:
            break
        scores[n] = float(silhouette_score(distances, fit.labels_[sample], metric="precomputed"))
        fits[n] = fit.labels_
    best = max(scores, key=scores.get)
    candidates = candidate_labelings(tokens.cpu(), p, k)
    alignment = {name: float(adjusted_rand_score(labels.numpy(), fits[best])) for name, labels in candidates.items()}
    return ClusterResult(activation, best, torch.from_numpy(fits[best]), scores, alignment, points, candidates)
