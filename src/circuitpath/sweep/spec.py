"""What a sweep is: seeds, experiments (name -> phases), task and model settings, checkpoint policy.

The spec is written to `OUT/sweep.json` before any run starts, so `--resume` and every Ray task
rebuild exactly the same run configs from it.
"""

from __future__ import annotations

from pathlib import Path

from circuitpath.config import ModelConfig, RunConfig, TaskConfig, saved_model
from circuitpath.errors import ConfigError, RunError
from circuitpath.experiments import PAPER_PHASES, experiment_config
from circuitpath.storage import read_json, write_json

SWEEP_JSON = "sweep.json"
KEEP_CHOICES = ("all", "ends")


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


def check_keep(keep: str) -> str:
    if keep not in KEEP_CHOICES:
        raise ConfigError(f"--keep-checkpoints is all or ends, got {keep!r}")
    return keep


def make_spec(seeds: list[int], experiments: dict[str, str], task: TaskConfig, model: ModelConfig,
              keep_checkpoints: str) -> dict:
    """The sweep's description as JSON-ready data; every run config is built once to check it."""
    spec = {"seeds": list(seeds), "experiments": dict(experiments),
            "task": {k: v for k, v in vars(task).items() if k != "seed"},
            "model": {k: v for k, v in vars(model).items() if k != "seed"},
            "keep_checkpoints": check_keep(keep_checkpoints)}
    for name in experiments:
        configs(spec, name)
    return spec


def configs(spec: dict, experiment: str, seeds: list[int] | None = None) -> list[RunConfig]:
    """The run configs of one experiment, for all of the sweep's seeds or the given ones."""
    task, model = TaskConfig(**spec["task"]), ModelConfig(**saved_model(spec["model"]))
    return [experiment_config(spec["experiments"][experiment], seed=seed, task=task, model=model)
            for seed in (spec["seeds"] if seeds is None else seeds)]


def run_path(out: str | Path, experiment: str, seed: int) -> Path:
    return Path(out) / experiment / f"seed_{seed}"


def check_out(out: Path) -> None:
    """Refuse an output path that is a file, or lies under one (nothing is created)."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise RunError(f"{path} exists and is not a directory; choose another --out")
            return


def make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create sweep directory {out}: {error.strerror}") from None


def write_spec(out: Path, spec: dict) -> None:
    write_json(out / SWEEP_JSON, spec)


def load_spec(out: str | Path) -> dict:
    """The spec of a sweep directory; sweeps written before `keep_checkpoints` existed kept them all."""
    out = Path(out)
    if not out.is_dir():
        raise RunError(f"{out} is not a sweep directory (it does not exist or is not a directory)")
    if not (out / SWEEP_JSON).is_file():
        raise RunError(f"{out} is not a sweep directory (no {SWEEP_JSON})")
    spec = read_json(out / SWEEP_JSON)
    if not isinstance(spec, dict) or not {"seeds", "experiments", "task", "model"} <= spec.keys():
        raise RunError(f"{out / SWEEP_JSON} lacks seeds, experiments, task or model")
    spec.setdefault("keep_checkpoints", "all")
    return spec
