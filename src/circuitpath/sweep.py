"""Many seeds of the paper's experiments, trained batched, and how often each one succeeds.

```
OUT/
  sweep.json                       seeds, experiments (name -> phases), task and model settings
  <experiment>/seed_<N>/           an ordinary run directory per (experiment, seed)
  sweep.html                       the success-rate figure
```
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from circuitpath.config import ModelConfig, RunConfig, TaskConfig, saved_model
from circuitpath.errors import ConfigError, RunError
from circuitpath.experiments import PAPER_PHASES, experiment_config, generalises, memorises
from circuitpath.runs import RUN_JSON, RunWriter, load_run
from circuitpath.storage import read_json, write_json
from circuitpath.train import resume, train_groups, train_many

SWEEP_JSON = "sweep.json"


def parse_seeds(text: str) -> list[int]:
    """`0-31`, `0,3,7` or a mix such as `0-3,10` -> sorted distinct seeds."""
    seeds: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                if low > high:
                    raise ValueError
                seeds.update(range(low, high + 1))
            else:
                seeds.add(int(part))
        except ValueError:
            raise ConfigError(f"seeds are N, N-M or a comma-separated list of them, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"seeds must be non-negative integers, got {text!r}")
    return sorted(seeds)


def parse_experiments(text: str) -> dict[str, str]:
    """`scratch,curriculum` (the paper's) or `name=p:steps:lr,...;name2=...` for custom phases."""
    experiments = {}
    for item in (i.strip() for i in text.split(";") if i.strip()):
        if "=" in item:
            name, phases = (x.strip() for x in item.split("=", 1))
            experiments[name] = phases
        else:
            for name in (n.strip() for n in item.split(",") if n.strip()):
                if name not in PAPER_PHASES:
                    raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(PAPER_PHASES)} "
                                      "(or give name=p:steps:lr,...)")
                experiments[name] = PAPER_PHASES[name]
    if not experiments:
        raise ConfigError(f"no experiment given in {text!r}")
    return experiments


def run_path(out: Path, experiment: str, seed: int) -> Path:
    return Path(out) / experiment / f"seed_{seed}"


@dataclass
class ExperimentSummary:
    name: str
    seeds: list[int]
    test_acc: list[float]
    train_acc: list[float]
    successes: list[int] = field(default_factory=list)  # seeds with test acc >= 0.99
    memorised: list[int] = field(default_factory=list)  # seeds with train >= 0.99, test < 0.5

    @property
    def success_rate(self) -> float:
        return len(self.successes) / len(self.seeds)


def _configs(spec: dict, experiment: str) -> list[RunConfig]:
    task, model = TaskConfig(**spec["task"]), ModelConfig(**saved_model(spec["model"]))
    return [experiment_config(spec["experiments"][experiment], seed=seed, task=task, model=model)
            for seed in spec["seeds"]]


def sweep(
    out: str | Path,
    seeds: list[int],
    experiments: dict[str, str],
    *,
    task: TaskConfig | None = None,
    model: ModelConfig | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
) -> dict[str, ExperimentSummary]:
    """Train every (experiment, seed) run, one batched computation per experiment."""
    out = Path(out)
    task = task or TaskConfig()
    model = model or ModelConfig(n_ctx=task.n_ctx)
    spec = {"seeds": seeds, "experiments": experiments,
            "task": {k: v for k, v in vars(task).items() if k != "seed"},
            "model": {k: v for k, v in vars(model).items() if k != "seed"}}
    groups = {name: _configs(spec, name) for name in experiments}  # every config checked first
    if (out / SWEEP_JSON).exists() and not force:
        raise RunError(f"{out} already holds a sweep; pass --force to replace it, or --resume to continue it")
    for name in experiments:
        for seed in seeds:
            RunWriter.check_target(run_path(out, name, seed), force)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SWEEP_JSON, spec)
    train_groups([(configs, [run_path(out, name, s) for s in seeds]) for name, configs in groups.items()],
                 device=device, force=force, progress=progress)
    return summarize(out)


def resume_sweep(out: str | Path, *, device: str = "cpu", progress: bool = True) -> dict[str, ExperimentSummary]:
    """Finish every run of a sweep that is not completed; untouched runs are trained from the start."""
    out = Path(out)
    spec = load_spec(out)
    for name in spec["experiments"]:
        paths = [run_path(out, name, s) for s in spec["seeds"]]
        missing = [(c, p) for c, p in zip(_configs(spec, name), paths) if not (p / RUN_JSON).is_file()]
        unfinished = [p for p in paths if (p / RUN_JSON).is_file() and load_run(p).status != "completed"]
        if unfinished:
            resume(unfinished, device=device, progress=progress)
        if missing:
            train_many([c for c, _ in missing], [p for _, p in missing], device=device, force=True, progress=progress)
    return summarize(out)


def load_spec(out: Path) -> dict:
    if not (Path(out) / SWEEP_JSON).is_file():
        raise RunError(f"{out} is not a sweep directory (no {SWEEP_JSON})")
    return read_json(Path(out) / SWEEP_JSON)


def summarize(out: str | Path) -> dict[str, ExperimentSummary]:
    """Final metrics of every run of a sweep, by experiment."""
    spec = load_spec(Path(out))
    summaries = {}
    for name in spec["experiments"]:
        finals = [load_run(run_path(out, name, s)).final_metrics() for s in spec["seeds"]]
        summaries[name] = ExperimentSummary(
            name=name,
            seeds=list(spec["seeds"]),
            test_acc=[m["test_acc"] for m in finals],
            train_acc=[m["train_acc"] for m in finals],
            successes=[s for s, m in zip(spec["seeds"], finals) if generalises(m)],
            memorised=[s for s, m in zip(spec["seeds"], finals) if memorises(m)],
        )
    return summaries


def summary_lines(summaries: dict[str, ExperimentSummary]) -> list[str]:
    header = f"{'experiment':<12} {'seeds':>5} {'test acc >= 0.99':>17} {'memorised':>10} {'test acc min / median / max':>29}"
    lines = [header, "-" * len(header)]
    for s in summaries.values():
        spread = f"{min(s.test_acc):.3f} / {statistics.median(s.test_acc):.3f} / {max(s.test_acc):.3f}"
        lines.append(f"{s.name:<12} {len(s.seeds):>5} {len(s.successes):>8} ({s.success_rate:>5.0%}) "
                     f"{len(s.memorised):>10} {spread:>29}")
    if "scratch" in summaries and "curriculum" in summaries:
        both = set(summaries["scratch"].memorised) & set(summaries["curriculum"].successes)
        n = len(summaries["scratch"].seeds)
        lines.append(f"paper's claim (scratch memorises and curriculum generalises) holds for {len(both)} of {n} seeds")
    return lines
