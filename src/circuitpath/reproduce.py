"""Reproduce the paper's figures: train each figure's experiments on several seeds, measure every claim
over the seeds, and draw the figures on one seed.

```
OUT/
  <experiment>/seed_<N>/   an ordinary run directory per (experiment, seed)
  claims.json              what was run, and every claim: per-seed values, count, rate, 95% interval
  report.html              the claims table, then one section per figure, drawn on the shown seed
```
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from circuitpath.analysis.threads import single_threaded
from circuitpath.claims import MEASURES, Claim
from circuitpath.errors import RunError
from circuitpath.presets import Experiment, needed
from circuitpath.runs import Run, RunWriter, load_run
from circuitpath.storage import write_json
from circuitpath.train import train_groups

CLAIMS_JSON = "claims.json"
REPORT = "report.html"

#: How the seed whose figures are drawn is chosen.
SHOWN_SEED_RULE = ("the first seed where both halves of the headline hold (scratch memorises and the curriculum "
                   "generalises); the first seed when none does, or when Fig. 5 is not drawn")


@dataclass
class Reproduction:
    claims: list[Claim]
    seeds: list[int]
    figures: list[int]
    shown_seed: int
    claims_path: Path
    report_path: Path
    headline_lines: list[str]
    seconds: dict[str, float]  # wall time of each stage: training, claims, report


def run_path(out: Path, experiment: str, seed: int) -> Path:
    return Path(out) / experiment / f"seed_{seed}"


def shown_seed(claims: list[Claim], seeds: list[int]) -> int:
    """The seed drawn in the report, by `SHOWN_SEED_RULE`."""
    headline = next((c for c in claims if c.key == "headline"), None)
    holding = headline.seeds_holding if headline else []
    return holding[0] if holding else seeds[0]


def reproduce(
    out: str | Path,
    experiments: dict[str, Experiment],
    figures: list[int],
    seeds: list[int],
    *,
    command: str = "circuitpath reproduce",
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    n: int = 1024,
) -> Reproduction:
    """Train, measure and report; every config and target is checked before anything is written."""
    out = Path(out)
    names = needed(figures)
    configs = check(out, experiments, figures, seeds, force)
    clock = [time.perf_counter()]
    groups = train_groups([(configs[name], [run_path(out, name, s) for s in seeds]) for name in names],
                          device=device, force=force, progress=progress)
    runs = {name: dict(zip(seeds, group)) for name, group in zip(names, groups)}
    clock.append(time.perf_counter())
    claims = []
    with single_threaded():
        for number in tqdm(figures, desc="claims", unit="figure", disable=None if progress else True):
            claims.extend(MEASURES[number](runs))
    clock.append(time.perf_counter())
    seed = shown_seed(claims, seeds)
    claims_path = write_json_claims(out, experiments, names, figures, seeds, seed, claims, command)
    from circuitpath.report import build_paper_report

    report = out / REPORT
    headlines = build_paper_report({name: runs[name][seed] for name in names}, claims, figures, report, seeds=seeds,
                                   shown_seed=seed, seed_rule=SHOWN_SEED_RULE, command=command, n=n)
    clock.append(time.perf_counter())
    seconds = {stage: b - a for stage, a, b in zip(("training", "claims", "report"), clock, clock[1:])}
    return Reproduction(claims, seeds, figures, seed, claims_path, report, headlines.lines(), seconds)


def check(out: Path, experiments: dict[str, Experiment], figures: list[int], seeds: list[int],
          force: bool) -> dict[str, list]:
    """Every run's config, by experiment; raises on a bad value or an output that exists (without force)."""
    configs = {name: [experiments[name].config(seed) for seed in seeds] for name in needed(figures)}
    for path in (Path(out) / CLAIMS_JSON, Path(out) / REPORT):
        if path.exists() and not force:
            raise RunError(f"{path} already exists; pass --force to replace it")
    for name in configs:
        for seed in seeds:
            RunWriter.check_target(run_path(Path(out), name, seed), force)
    return configs


def write_json_claims(out: Path, experiments: dict[str, Experiment], names: list[str], figures: list[int],
                      seeds: list[int], seed: int, claims: list[Claim], command: str) -> Path:
    from circuitpath import __version__
    from circuitpath import claims as thresholds

    record = {
        "circuitpath": __version__,
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "figures": figures,
        "seeds": seeds,
        "shown_seed": seed,
        "shown_seed_rule": SHOWN_SEED_RULE,
        "experiments": {name: {"figures": list(experiments[name].figures), "phases": experiments[name].phases_text(),
                               "config_of_seed_0": experiments[name].config(0).to_dict(),
                               "runs": [str(run_path(out, name, s)) for s in seeds]} for name in names},
        "thresholds": {key: getattr(thresholds, key) for key in
                       ("SPURIOUS_PRUNED", "ZERO_FOCUS", "CLUSTER_ARI", "BARRIER", "FITS", "GENERALISES_AT",
                        "MEMORISED_BELOW")},
        "claims": [_finite(c.to_dict()) for c in claims],
    }
    path = out / CLAIMS_JSON
    write_json(path, record)
    return path


def _finite(value):
    """NaN and infinities become null: the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def load_claims(out: str | Path) -> dict:
    """The record `reproduce` wrote in OUT/claims.json."""
    from circuitpath.storage import read_json

    path = Path(out) / CLAIMS_JSON
    if not path.is_file():
        raise RunError(f"{out} holds no {CLAIMS_JSON}; run `circuitpath reproduce --out {out}` first")
    return read_json(path)


def shown_runs(out: str | Path) -> dict[str, Run]:
    """The runs of the seed `reproduce` drew, by experiment name."""
    record = load_claims(out)
    return {name: load_run(run_path(Path(out), name, record["shown_seed"])) for name in record["experiments"]}
