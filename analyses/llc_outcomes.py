# %% [markdown]
# Do memorising and generalising solutions differ in their local learning coefficient?
# The LLC at the last checkpoint of every run under the given directories (runs of a sweep, branches),
# grouped by final verdict: generalises (test acc >= 0.99), memorises (train acc >= 0.99, test acc < 0.5).
# Run: python analyses/llc_outcomes.py DIR [DIR ...]   (needs devinterp: pip install -e ".[llc]")

# %%
from __future__ import annotations

import statistics
import sys

from circuitpath.analysis.llc import LLCSettings, estimate_llc
from circuitpath.branch import find_runs
from circuitpath.experiments import generalises, memorises
from circuitpath.runs import load_run


def final_llc(path, settings: LLCSettings) -> tuple[str, float, float]:
    run = load_run(path)
    step = run.steps[-1]
    split = run.data(run.phase_at(step))
    estimate = estimate_llc(run.model_at(step), split.x_train, split.y_train, settings, step=step)
    final = run.final_metrics()
    verdict = "generalises" if generalises(final) else "memorises" if memorises(final) else "neither"
    return verdict, estimate.llc, estimate.llc_std


# %%
def main(argv=None):
    from scipy.stats import mannwhitneyu

    settings = LLCSettings()
    rows = [(str(path), *final_llc(path, settings)) for root in (argv or sys.argv[1:]) for path in find_runs(root)]
    for path, verdict, llc, sd in rows:
        print(f"{path:<50} {verdict:<12} LLC {llc:8.2f} (sd over chains {sd:.2f})")
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
