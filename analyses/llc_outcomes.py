# %% [markdown]
# Do memorising and generalising solutions differ in their local learning coefficient?
# The LLC at the last checkpoint of every run under the given directories (runs of a sweep, branches),
# grouped by verdict: generalises (test acc >= 0.99), memorises (train acc >= 0.99, test acc < 0.5).
# With --step S, the LLC and the verdict are those of the checkpoint at step S of every run instead.
# With --html PATH, a page with the LLC of every run by verdict and the SGLD chains behind each estimate.
# Run: python analyses/llc_outcomes.py DIR [DIR ...] [--step S] [--html PATH]   (needs: pip install -e ".[llc]")

# %%
from __future__ import annotations

import statistics

from tqdm.auto import tqdm

from circuitpath.analysis.llc import LLCEstimate, LLCSettings, estimate_llc
from circuitpath.analysis.outcomes import generalises, memorises
from circuitpath.runs import load_run
from circuitpath.training.branch import find_runs
from common import Parser, header, script


def llc_and_verdict(path, settings: LLCSettings, step: int | None) -> tuple[str, LLCEstimate]:
    run = load_run(path)
    step = run.steps[-1] if step is None else step
    phase = run.phase_at(step)
    split = run.data(phase)
    estimate = estimate_llc(run.model_at(step), split.x_train, split.y_train, settings, step=step)
    metrics = next(m for m in run.metrics if m["step"] == step and m["phase"] == phase)
    verdict = "generalises" if generalises(metrics) else "memorises" if memorises(metrics) else "neither"
    return verdict, estimate


def write_page(rows: list[tuple[str, str, LLCEstimate]], settings: LLCSettings, path: str) -> None:
    from circuitpath.plots.html import write_html
    from circuitpath.plots.llc import chains_figure, llc_by_verdict_figure

    by_verdict = {v: [(p, e.llc, e.llc_std) for p, verdict, e in rows if verdict == v]
                  for v in ("memorises", "generalises", "neither")}
    figures = [llc_by_verdict_figure({v: r for v, r in by_verdict.items() if r}, settings)]
    for verdict in ("memorises", "generalises", "neither"):
        chains = {p: e for p, v, e in rows if v == verdict}
        if chains:
            what = {"memorises": "memorising runs", "generalises": "generalising runs",
                    "neither": "runs that neither memorise nor generalise"}[verdict]
            figures.append(chains_figure(chains, settings, f"SGLD chains: {what}"))
    print(f"written: {write_html(figures, path, 'LLC of memorising and generalising runs')}")


# %%
def main(argv=None, settings: LLCSettings | None = None):
    from scipy.stats import mannwhitneyu

    parser = Parser(header(__file__))
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, or directories of runs (a sweep's)")
    parser.add_argument("--step", type=int, help="the checkpoint to read (default: each run's last)")
    parser.add_argument("--html", help="write the LLC by verdict and every run's SGLD chains to this page")
    args = parser.parse_args(argv)
    settings = (settings or LLCSettings()).resolved(load_run(find_runs(args.dirs[0])[0]).config.task.n_train)
    print("settings:", settings)
    rows = []
    for path in tqdm([p for root in args.dirs for p in find_runs(root)], desc="LLC", unit="run"):
        verdict, estimate = llc_and_verdict(path, settings, args.step)
        rows.append((str(path), verdict, estimate))
        tqdm.write(f"{str(path):<50} {verdict:<12} LLC {estimate.llc:8.2f} (sd over chains {estimate.llc_std:.2f})")
    groups = {v: [e.llc for _, verdict, e in rows if verdict == v] for v in ("memorises", "generalises")}
    for verdict, values in groups.items():
        if values:
            print(f"{verdict}: n = {len(values)}, LLC median {statistics.median(values):.2f}, "
                  f"min {min(values):.2f}, max {max(values):.2f}")
    if all(len(v) >= 2 for v in groups.values()):
        test = mannwhitneyu(groups["memorises"], groups["generalises"], alternative="two-sided")
        print(f"Mann-Whitney U = {test.statistic:.1f}, two-sided p = {test.pvalue:.3g}")
    if args.html:
        write_page(rows, settings, args.html)
    return rows


# %%
if __name__ == "__main__":
    script(main)
