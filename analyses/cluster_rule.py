# %% [markdown]
# How the cluster-count rule of `circuitpath.analysis.clusters` behaves on real checkpoints, and how
# stable it is: the count on two probe sets (the first and the next 1024 test inputs of the phase),
# its silhouette and its excess over the structureless reference; with `--old`, the rule it replaced
# (k-means for every count, the best silhouette wins) for k-means seeds 0-2 on both probe sets.
# Run: python analyses/cluster_rule.py RUN [RUN ...] [--steps 1000,3000] [--old]
# (default steps: the middle and the end of every phase)

# %%

import numpy as np
import torch

import circuitpath as cp
from circuitpath.analysis.clusters import HOOKS, MAX_CLUSTERS, candidate_labelings, cluster_points
from circuitpath.analysis.discovery.timeline import select_steps
from common import Parser, header, script


def old_rule(points: np.ndarray, seed: int, max_clusters: int = MAX_CLUSTERS) -> int:
    """k-means (3 restarts) for every count; the first count with the best silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances, silhouette_score
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        distances, scores = pairwise_distances(points), {}
        for n in range(2, min(max_clusters, len(points) - 1) + 1):
            labels = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(points).labels_
            scores[n] = silhouette_score(distances, labels, metric="precomputed")
    return max(scores, key=scores.get)


def default_steps(run: cp.Run) -> list[int]:
    starts = run.config.train.phase_starts() + [run.config.train.total_steps]
    wanted = [s for a, b in zip(starts, starts[1:]) for s in ((a + b) // 2, b)]
    return [min(run.steps, key=lambda s: abs(s - w)) for w in wanted]


@torch.no_grad()
def measure(run: cp.Run, step: int, old: bool) -> str:
    from sklearn.metrics import adjusted_rand_score

    phase = run.phase_at(step)
    p, k, x = run.config.train.phases[phase].p, run.config.task.k, run.data(phase).x_test
    model, cells = run.model_at(step), []
    for name, probe in (("a", x[:1024]), ("b", x[1024:2048])):
        if len(probe) < 10:
            continue
        _, cache = model.run_with_cache(probe, names_filter=HOOKS["z_A"])
        points = cache[HOOKS["z_A"]]
        count, labels, scores, reference = cluster_points(points)
        best = max(scores, key=scores.get) if scores else None
        shown = count if count > 1 else best
        quality = f"silhouette {scores[shown]:.2f}, excess {scores[shown] - reference[shown]:+.2f} at {shown}" if shown else ""
        ari = {n: f"{len(v.unique())} classes, ARI {adjusted_rand_score(v.numpy(), labels.numpy()):.2f}"
               for n, v in candidate_labelings(probe, p, k).items()}
        cells.append(f"probe {name}: {count} clusters ({quality}); {ari}")
        if old:
            cells.append(f"  old rule, seeds 0-2: {[old_rule(points.double().numpy(), seed) for seed in range(3)]}")
    return f"{run.path.name} step {step} (p = {p}):\n  " + "\n  ".join(cells)


def main(argv=None):
    parser = Parser(header(__file__))
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    parser.add_argument("--steps", help="saved steps, e.g. 1000,3000 or 0-3000 (default: middle and end of every phase)")
    parser.add_argument("--old", action="store_true", help="also run the k-means rule it replaced (slow)")
    args = parser.parse_args(argv)
    lines = []
    for path in args.runs:
        run = cp.load_run(path)
        steps = select_steps(run, args.steps) if args.steps else default_steps(run)
        for step in steps:
            lines.append(measure(run, step, args.old))
            print(lines[-1], flush=True)
    return lines


# %%
if __name__ == "__main__":
    script(main)
