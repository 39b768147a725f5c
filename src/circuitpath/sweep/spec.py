"""What a sweep is: seeds, experiments (name -> phases), task and model settings, checkpoint policy.

The spec is written to `OUT/sweep.json` before any run starts, so `--resume` and every Ray task
rebuild exactly the same run configs from it.
"""

from __future__ import annotations

import re
from pathlib import Path

from circuitpath.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, saved_model
from circuitpath.errors import ConfigError, RunError
from circuitpath.paper.experiments import PAPER_PHASES, experiment_config
from circuitpath.paper.presets import VIS_RESET
from circuitpath.paper.presets import experiments as preset_experiments
from circuitpath.runs.storage import read_json, write_json

SWEEP_JSON = "sweep.json"
KEEP_CHOICES = ("all", "ends")
#: TrainConfig fields a sweep may set for all its runs (how often they log and checkpoint); the phases
#: come from each experiment.
TRAIN_FIELDS = ("log_every", "checkpoint_every", "dense_checkpoints")
#: Draw options of a preset given by name (`presets.experiments`' integer arguments).
PRESET_OPTIONS = ("vis_n_tokens", "vis_finetune_p", "small_d_mlp", "batch_size")


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


def parse_experiments(text: str) -> dict[str, str | dict]:
    """`scratch,curriculum` (the paper's), a figure preset by name, or `name=p:steps:lr,...;name2=...`.

    A preset (`presets.experiments`, e.g. `vis_finetune`, `small_curriculum`) carries its own task,
    model and schedule; its draw options follow its name as `:key=int`, e.g.
    `vis_finetune:vis_n_tokens=3:vis_finetune_p=3`. It is stored as `{"preset": name, **options}`.
    """
    experiments: dict[str, str | dict] = {}
    for item in (i.strip() for i in text.split(";")):
        if "=" in item and ":" not in item.split("=", 1)[0]:
            name, phases = (x.strip() for x in item.split("=", 1))
            _add(experiments, _checked_name(name, text), phases, text)
        else:
            for name in (n.strip() for n in item.split(",")):
                _check_not_empty(name, text)
                _add(experiments, *_named(name), text)
    return experiments


#: An experiment's name is a directory of the sweep: letters, digits, '_', '-' and '.', not starting with '.'.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _checked_name(name: str, text: str | None = None) -> str:
    if text is not None:
        _check_not_empty(name, text)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        where = f" in {text!r}" if text is not None else ""
        raise ConfigError(f"experiment name {name!r}{where} is not a directory name: use letters, digits, '_', '-' "
                          "and '.' (not first)")
    return name


def _check_not_empty(item: str, text: str) -> None:
    if not item:
        raise ConfigError(f"an empty experiment in {text!r}: experiments are separated by single ';' (or ',' "
                          "between names)")


def _add(experiments: dict, name: str, value: str | dict, text: str) -> None:
    if name in experiments:
        raise ConfigError(f"experiment {name!r} is given twice in {text!r}")
    experiments[name] = value


def _named(text: str) -> tuple[str, str | dict]:
    """A paper experiment's phases, or a preset with its options, by name."""
    name, *options = text.split(":")
    if name in PAPER_PHASES and not options:
        return name, PAPER_PHASES[name]
    known = preset_experiments()
    if name == VIS_RESET:
        raise ConfigError(f"{name} is not trained on its own: it is a branch of vis_finetune at its switch, with the "
                          "unseen token rows reset, which `circuitpath reproduce --figures 4` makes")
    if name not in known:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(dict.fromkeys([*PAPER_PHASES, *known]))} "
                          "(or give name=p:steps:lr,...)")
    spec: dict = {"preset": name}
    for option in options:
        key, _, value = option.partition("=")
        if key not in PRESET_OPTIONS or not value.isdigit():
            raise ConfigError(f"bad preset option {option!r} in {text!r}; options are "
                              f"{', '.join(PRESET_OPTIONS)}=INT")
        spec[key] = int(value)
    try:  # a run of it checks the options (a phase's p above n_tokens, for one)
        preset_experiments(**{k: v for k, v in spec.items() if k != "preset"})[name].config(0)
    except ConfigError as error:
        raise ConfigError(f"{text!r}: {error}") from None
    return name, spec


def check_keep(keep: str) -> str:
    if keep not in KEEP_CHOICES:
        raise ConfigError(f"--keep-checkpoints is all or ends, got {keep!r}")
    return keep


def make_spec(seeds: list[int], experiments: dict[str, str], task: TaskConfig, model: ModelConfig,
              keep_checkpoints: str, train: TrainConfig | None = None) -> dict:
    """The sweep's description as JSON-ready data; every run config is built once to check it."""
    train = train or TrainConfig()
    spec = {"seeds": list(seeds), "experiments": dict(experiments),
            "task": {k: v for k, v in vars(task).items() if k != "seed"},
            "model": {k: v for k, v in vars(model).items() if k != "seed"},
            "train": {k: getattr(train, k) for k in TRAIN_FIELDS},
            "keep_checkpoints": check_keep(keep_checkpoints)}
    for name in experiments:
        configs(spec, _checked_name(name))
    return spec


def configs(spec: dict, experiment: str, seeds: list[int] | None = None) -> list[RunConfig]:
    """The run configs of one experiment, for all of the sweep's seeds or the given ones."""
    value = spec["experiments"][experiment]
    seeds = spec["seeds"] if seeds is None else seeds
    if isinstance(value, dict):
        options = {k: v for k, v in value.items() if k != "preset"}
        preset = preset_experiments(residual=spec["model"].get("residual", "attn_out"), **options)[value["preset"]]
        return [preset.config(seed) for seed in seeds]
    task, model = TaskConfig(**spec["task"]), ModelConfig(**saved_model(spec["model"]))
    train = TrainConfig(**spec.get("train", {}))  # sweeps written before it existed logged as TrainConfig does
    return [experiment_config(spec["experiments"][experiment], seed=seed, task=task, model=model, train=train)
            for seed in seeds]


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
