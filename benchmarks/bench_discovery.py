"""Circuit discovery: attribution against activation patching at one checkpoint, and every method
over 100 checkpoints of one run.

Run: python benchmarks/bench_discovery.py [RUN ...] [--quick]
With no RUN it first trains the paper's two runs (scratch and curriculum, a checkpoint every 100
steps so that each has over 100) into a temporary directory, one per core (about a minute).
--quick uses tiny runs and 64 inputs, only to check that the script works.

Prints, for the final checkpoint of the first run, the time to score every node and edge by
attribution patching and by activation patching on 1 024 inputs, on one thread as `discover` runs them
(target: >= 10x); for the final
checkpoint of every run, the Spearman correlation of their position scores (target: >= 0.9; the
position score is the mean over inputs of each input's |change|, the mean change is shown beside it); and
the wall time of all three methods over 100 checkpoints of the first run (target: < 60 s, 2 cores).
"""

# %%
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import measure, table

from circuitpath import load_run
from circuitpath.analysis.discovery import DiscoveryConfig, ModelGraph, auroc, discover, spearman
from circuitpath.analysis.discovery.methods import attribution_scores, patching_scores
from circuitpath.analysis.discovery.timeline import probe_of
from circuitpath.analysis.threads import single_threaded
from circuitpath.config import ModelConfig, TaskConfig, TrainConfig
from circuitpath.paper.experiments import PAPER_PHASES, experiment_config
from circuitpath.training.train import train_groups

QUICK_PHASES = {"scratch": "4:200:1e-2", "curriculum": "2:100:1e-3,4:100:1e-2"}


def train_paper_runs(root: Path, quick: bool) -> list:
    """The paper's two runs (or tiny ones), with a checkpoint every 100 steps (every 2 when quick)."""
    phases = QUICK_PHASES if quick else PAPER_PHASES
    train = TrainConfig(checkpoint_every=2 if quick else 100)
    task, model = (TaskConfig(n_ctx=8, k=3, n_train=128), ModelConfig(n_ctx=8, d_model=8)) if quick else (None, None)
    configs = {name: experiment_config(p, task=task, model=model, train=train) for name, p in phases.items()}
    groups = train_groups([([c], [root / name]) for name, c in configs.items()], progress=False)
    return [group[0] for group in groups]


def speed(run, n: int) -> str:
    model, step = run.model_at(), run.steps[-1]
    probe = probe_of(run, run.phase_at(step), n, seed=0)
    with single_threaded():  # as `discover` runs them
        seconds = measure({"attribution": lambda: attribution_scores(model, probe),
                           "patching": lambda: patching_scores(model, probe)}, rounds=10)
    sites = ModelGraph.of(model).n_sites
    rows = [(name, f"{s * 1e3:.2f}", f"{seconds['patching'] / s:.1f}x") for name, s in seconds.items()]
    return (f"{run.path.name} step {step}: every node and edge ({sites} sites), {probe.clean.shape[0]} inputs, one thread\n"
            + table(rows, ("method", "ms", "speed-up over patching")))


def agreement(runs, n: int) -> str:
    rows = []
    for run in runs:
        model, step = run.model_at(), run.steps[-1]
        probe, graph, k = probe_of(run, run.phase_at(step), n, seed=0), ModelGraph.of(model), run.config.task.k
        patched = patching_scores(model, probe)
        for label, options in (("attribution", {}), ("attribution, IG 8 steps", {"ig_steps": 8})):
            scored = attribution_scores(model, probe, **options)
            for kind in ("magnitude", "sites"):  # mean |change| (the position score), and |mean change|
                scores, truth = (graph.position_scores(getattr(s, kind)) for s in (scored, patched))
                rows.append((f"{run.path.name} step {step}", label, "mean |change|" if kind == "magnitude" else
                             "|mean change|", f"{spearman(scores, truth):.3f}", f"{float(auroc(scores, k)):.3f}",
                             f"{float(auroc(truth, k)):.3f}"))
    return ("position scores against activation patching (Spearman), and each one's AUROC against the truth\n"
            + table(rows, ("checkpoint", "method", "over inputs", "Spearman", "AUROC", "AUROC patching")))


def timeline(run, n: int, count: int = 100) -> str:
    steps = run.steps
    chosen = [steps[round(i * (len(steps) - 1) / (count - 1))] for i in range(count)] if len(steps) > count else steps
    start = time.perf_counter()
    discover(run, DiscoveryConfig(n=n), sorted(set(chosen)), progress=False)
    wall = time.perf_counter() - start
    return (f"{run.path.name}: attribution, patching and ablation over {len(set(chosen))} checkpoints, {n} inputs "
            f"(discover runs on one thread; no imports, files or page: see bench_discover_cli.py): {wall:.1f} s wall "
            "(target < 60 s on 2 cores)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="runs to measure (default: train the paper's two)")
    parser.add_argument("--quick", action="store_true", help="tiny runs and sizes: check that the script works")
    args = parser.parse_args(argv)
    n = 64 if args.quick else 1024
    with tempfile.TemporaryDirectory() as root:
        runs = [load_run(p) for p in args.runs] or train_paper_runs(Path(root), args.quick)
        print(speed(runs[0], n), end="\n\n")
        print(agreement(runs, n), end="\n\n")
        print(timeline(runs[0], n))


# %%
if __name__ == "__main__":
    main()
