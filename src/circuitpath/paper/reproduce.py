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
from circuitpath.errors import RunError
from circuitpath.paper.claims import MEASURES, SHOWN_SEED_RULE, VIS_SEED_RULE, Claim
from circuitpath.paper.presets import (VIS_RESET, VIS_SEEDS, Experiment, branches_needed, check_seed_count, is_vis,
                                      needed)
from circuitpath.paper.variants import RESET_OWN, make_variants
from circuitpath.runs import Run, RunWriter, load_run
from circuitpath.runs.storage import write_json
from circuitpath.training.train import train_groups

CLAIMS_JSON = "claims.json"
REPORT = "report.html"



@dataclass
class Reproduction:
    claims: list[Claim]
    seeds: list[int]
    vis_seeds: list[int]
    figures: list[int]
    shown_seeds: dict[str, int]  # experiment -> the seed its figures are drawn on
    claims_path: Path
    report_path: Path
    headline_lines: list[str]
    seconds: dict[str, float]  # wall time of each stage: training, claims, report

    @property
    def shown_seed(self) -> int:
        """The seed of the figures other than the d = 2 pipeline's."""
        return next((s for name, s in self.shown_seeds.items() if not is_vis(name)), self.vis_seeds[0])


def run_path(out: Path, experiment: str, seed: int) -> Path:
    return Path(out) / experiment / f"seed_{seed}"


def shown_seed(claims: list[Claim], seeds: list[int]) -> int:
    """The seed drawn in the report, by `SHOWN_SEED_RULE`."""
    return _first_holding(claims, "headline", seeds)


def shown_vis_seed(claims: list[Claim], vis_seeds: list[int]) -> int:
    """The d = 2 seed drawn in the report, by `VIS_SEED_RULE`."""
    return _first_holding(claims, "vis_p2_solved", vis_seeds)


def _first_holding(claims: list[Claim], key: str, seeds: list[int]) -> int:
    claim = next((c for c in claims if c.key == key), None)
    holding = claim.seeds_holding if claim else []
    return holding[0] if holding else seeds[0]


def seeds_of(name: str, seeds: list[int], vis_seeds: list[int]) -> list[int]:
    """The seeds an experiment trains on: the d = 2 pipeline's own, or everyone else's."""
    return vis_seeds if is_vis(name) else seeds


def reproduce(
    out: str | Path,
    experiments: dict[str, Experiment],
    figures: list[int],
    seeds: list[int],
    *,
    vis_seeds: list[int] | None = None,
    command: str = "circuitpath reproduce",
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    n: int = 1024,
) -> Reproduction:
    """Train, measure and report; every config and target is checked before anything is written.

    The d = 2 pipeline's experiments (Figs. 3-4) train on `vis_seeds` (default: `presets.VIS_SEEDS`
    seeds), the others on `seeds`; Fig. 4's fine-tune variant is then branched from `vis_finetune`."""
    out = Path(out)
    vis_seeds = list(range(VIS_SEEDS)) if vis_seeds is None else vis_seeds
    names = needed(figures)
    configs = check(out, experiments, figures, seeds, force, vis_seeds)
    clock = [time.perf_counter()]
    groups = train_groups([(configs[name], [run_path(out, name, s) for s in seeds_of(name, seeds, vis_seeds)])
                           for name in names], device=device, force=force, progress=progress)
    runs = {name: dict(zip(seeds_of(name, seeds, vis_seeds), group)) for name, group in zip(names, groups)}
    if VIS_RESET in branches_needed(figures):
        parents = [runs["vis_finetune"][s] for s in vis_seeds]
        made = make_variants(parents, RESET_OWN, [run_path(out, VIS_RESET, s) for s in vis_seeds],
                             force=force, progress=progress)
        runs[VIS_RESET] = dict(zip(vis_seeds, made))
    clock.append(time.perf_counter())
    claims = []
    with single_threaded():
        for number in tqdm(figures, desc="claims", unit="figure", disable=None if progress else True):
            claims.extend(MEASURES[number](runs))
    clock.append(time.perf_counter())
    shown = {name: (shown_vis_seed(claims, vis_seeds) if is_vis(name) else shown_seed(claims, seeds)) for name in runs}
    claims_path = write_json_claims(out, experiments, list(runs), figures, seeds, vis_seeds, shown, claims, command)
    from circuitpath.paper.report import build_paper_report

    report = out / REPORT
    headlines = build_paper_report({name: runs[name][shown[name]] for name in runs}, claims, figures, report,
                                   seeds=seeds, vis_seeds=vis_seeds, shown_seeds=shown, command=command, n=n)
    clock.append(time.perf_counter())
    seconds = {stage: b - a for stage, a, b in zip(("training", "claims", "report"), clock, clock[1:])}
    return Reproduction(claims, seeds, vis_seeds, figures, shown, claims_path, report, headlines.lines(), seconds)


def check(out: Path, experiments: dict[str, Experiment], figures: list[int], seeds: list[int],
          force: bool, vis_seeds: list[int] | None = None) -> dict[str, list]:
    """Every run's config, by experiment; raises on a bad value or an output that exists (without force)."""
    vis_seeds = list(range(VIS_SEEDS)) if vis_seeds is None else vis_seeds
    if any(is_vis(name) for name in needed(figures)):
        check_seed_count(len(vis_seeds), "--vis-seeds")
    configs = {name: [experiments[name].config(seed) for seed in seeds_of(name, seeds, vis_seeds)]
               for name in needed(figures)}
    for path in (Path(out) / CLAIMS_JSON, Path(out) / REPORT):
        if path.exists() and not force:
            raise RunError(f"{path} already exists; pass --force to replace it (force=True in Python)")
    for name in [*configs, *branches_needed(figures)]:
        for seed in seeds_of(name, seeds, vis_seeds):
            RunWriter.check_target(run_path(Path(out), name, seed), force)
    return configs


def write_json_claims(out: Path, experiments: dict[str, Experiment], names: list[str], figures: list[int],
                      seeds: list[int], vis_seeds: list[int], shown: dict[str, int], claims: list[Claim],
                      command: str) -> Path:
    from circuitpath import __version__
    from circuitpath.paper import claims as thresholds

    record = {
        "circuitpath": __version__,
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "figures": figures,
        "seeds": seeds,
        "vis_seeds": vis_seeds,
        "shown_seed": next((s for name, s in shown.items() if not is_vis(name)), vis_seeds[0]),
        "shown_seed_rule": SHOWN_SEED_RULE,
        "shown_seeds": shown,
        "vis_seed_rule": VIS_SEED_RULE,
        "experiments": {name: _experiment_record(out, experiments, name, seeds_of(name, seeds, vis_seeds))
                        for name in names},
        "thresholds": {key: getattr(thresholds, key) for key in
                       ("SPURIOUS_PRUNED", "ZERO_FOCUS", "CLUSTER_ARI", "BARRIER", "FITS", "GENERALISES_AT",
                        "MEMORISED_BELOW")},
        "claims": [_finite(c.to_dict()) for c in claims],
    }
    path = out / CLAIMS_JSON
    write_json(path, record)
    return path


def _experiment_record(out: Path, experiments: dict[str, Experiment], name: str, seeds: list[int]) -> dict:
    runs = [str(run_path(out, name, s)) for s in seeds]
    if name == VIS_RESET:
        return {"figures": [4], "branch_of": "vis_finetune", "variant": RESET_OWN.label, "runs": runs}
    experiment = experiments[name]
    return {"figures": list(experiment.figures), "phases": experiment.phases_text(),
            "config_of_seed_0": experiment.config(0).to_dict(), "runs": runs}


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
    from circuitpath.runs.storage import read_json

    path = Path(out) / CLAIMS_JSON
    if not path.is_file():
        raise RunError(f"{out} holds no {CLAIMS_JSON}; run `circuitpath reproduce --out {out}` first")
    return read_json(path)


def shown_runs(out: str | Path) -> dict[str, Run]:
    """The runs `reproduce` drew (each experiment's shown seed), by experiment name."""
    record = load_claims(out)
    shown = record.get("shown_seeds", {})
    return {name: load_run(run_path(Path(out), name, shown.get(name, record["shown_seed"])))
            for name in record["experiments"]}
