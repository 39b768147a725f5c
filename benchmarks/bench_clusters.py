"""Cluster counting on a quiet machine and beside a busy process: the k-means rule it replaced, with
scikit-learn's thread pools free and bounded, against `clusters.cluster_points` (Ward, bounded pools).

The points are z_A-like: tight groups of uneven size in 32 dimensions. A busy process is one
`python -c "while True: pass"`, started here and stopped by its pid.
Run: python benchmarks/bench_clusters.py [--points 120] [--max-clusters 64]
"""

# %%
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

import torch
from common import table

from circuitpath.analysis.clusters import MAX_CLUSTERS, cluster_points


def kmeans_rule(points, max_clusters: int, bounded: bool) -> int:
    """The replaced rule: k-means (3 restarts) for every count, the best silhouette wins."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances, silhouette_score
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1) if bounded else nullcontext():
        distances, scores = pairwise_distances(points), {}
        for n in range(2, min(max_clusters, len(points) - 1) + 1):
            labels = KMeans(n_clusters=n, n_init=3, random_state=0).fit(points).labels_
            scores[n] = silhouette_score(distances, labels, metric="precomputed")
    return max(scores, key=scores.get)


@contextmanager
def busy(on: bool):
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        time.sleep(0.5 if on else 0)
        yield
    finally:
        if process is not None:
            process.kill()
            process.wait()


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=120)
    parser.add_argument("--max-clusters", type=int, default=MAX_CLUSTERS)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    sizes = torch.distributions.Binomial(5, 0.5).sample((args.points,)).long()  # 6 groups, binomial sizes
    points = torch.randn(6, 32, generator=generator)[sizes] + 0.05 * torch.randn(args.points, 32, generator=generator)
    data = points.double().numpy()
    rules = {
        "k-means, free pools (old)": lambda: kmeans_rule(data, args.max_clusters, bounded=False),
        "k-means, pools bounded": lambda: kmeans_rule(data, args.max_clusters, bounded=True),
        "Ward + reference, bounded (new)": lambda: cluster_points(points, args.max_clusters),
    }
    rows = []
    for name, rule in rules.items():
        rule()  # warm up: imports, thread pools
        quiet = seconds(rule)
        with busy(True):
            loaded = seconds(rule)
        rows.append((name, f"{quiet:.2f}", f"{loaded:.2f}", f"{loaded / quiet:.1f}x"))
    print(f"{args.points} points, counts 2..{args.max_clusters}")
    print(table(rows, ("rule", "quiet s", "beside a busy process s", "busy / quiet")))


# %%
if __name__ == "__main__":
    main()
