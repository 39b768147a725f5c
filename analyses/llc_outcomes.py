# %% [markdown]
# Do memorising and generalising solutions differ in their local learning coefficient?
# The LLC at the last checkpoint of every run under the given directories (runs of a sweep, branches),
# grouped by verdict: generalises (test acc >= 0.99), memorises (train acc >= 0.99, test acc < 0.5).
# With --step S, the LLC and the verdict are those of the checkpoint at step S of every run instead.
# Run: python analyses/llc_outcomes.py DIR [DIR ...] [--step S]   (needs devinterp: pip install -e ".[llc]")

# %%
from __future__ import annotations

import argparse
import statistics

from circuitpath.analysis.llc import LLCSettings, estimate_llc
from circuitpath.branch import find_runs
from circuitpath.experiments import generalises, memorises
from circuitpath.runs import load_run


def llc_and_verdict(path, settings: LLCSettings, step: int | None) -> tuple[str, float, float]:
    run = load_run(path)
    step = run.steps[-1] if step is None else step
    phase = run.phase_at(step)
    split = run.data(phase)
    estimate = estimate_llc(run.model_at(step), split.x_train, split.y_train, settings, step=step)
    metrics = next(m for m in run.metrics if m["step"] == step and m["phase"] == phase)
    verdict = "generalises" if generalises(metrics) else "memorises" if memorises(metrics) else "neither"
    return verdict, estimate.llc, estimate.llc_std


# %%
def main(argv=None):
    from scipy.stats import mannwhitneyu

    parser = argparse.ArgumentParser(description="LLC of memorising against generalising runs")
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--step", type=int, help="the checkpoint to read (default: each run's last)")
    args = parser.parse_args(argv)
    settings = LLCSettings()
    rows = [(str(path), *llc_and_verdict(path, settings, args.step)) for root in args.dirs for path in find_runs(root)]
    for path, verdict, llc, sd in rows:
        print(f"{path:<50} {verdict:<12} LLC {llc:8.2f} (sd over chains {sd:.2f})", flush=True)
    groups = {v: [llc for _, verdict, llc, _ in rows if verdict == v] for v in ("memorises", "generalises")}
    for verdict, values in groups.items():
        if values:
            print(f"{verdict}: n = {len(values)}, LLC median {statistics.median(values):.2f}, "
                  f"min {min(values):.2f}, max {max(values):.2f}")
    if all(len(v) >= 2 for v in groups.values()):
        test = mannwhitneyu(groups["memorises"], groups["generalises"], alternative="two-sided")
        print(f"Mann-Whitney U = {test.statistic:.1f}, two-sided p = {test.pvalue:.3g}")
    return rows


# %%
if __name__ == "__main__":
    main()
