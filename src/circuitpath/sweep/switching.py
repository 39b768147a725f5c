"""When should the curriculum switch? Rates of generalising against the switch step, over seeds.

For each seed, one p = 2 run (lr `p2_lr`) is trained to the largest switch step; it is branched at
every switch step s to p = 4 (lr `p4_lr`) for `total - s` steps, so every run has the same total.
s = 0 is p = 4 from scratch (a branch at step 0: the same initial weights). Sharing the p = 2 prefix
through branches costs one p = 2 run per seed instead of one per switch step.

```
OUT/
  switch.json                 the settings
  p2/seed_<N>/                the p = 2 runs
  switch_<s>/seed_<N>/        the branches (ordinary run directories; run.json names the parent)
  switch_table.json           per switch step: counts, rates, Wilson 95% intervals, per-seed outcomes
  switch.html                 the figure
```
A crash keeps every finished run and the last checkpoint of the others; `resume_switch` trains
only what is missing.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from circuitpath.analysis.outcomes import GENERALISES, generalises, memorises
from circuitpath.analysis.stats import Rate
from circuitpath.config import ModelConfig, Phase, RunConfig, TaskConfig, TrainConfig
from circuitpath.errors import ConfigError, RunError
from circuitpath.runs import RUN_JSON, STATE_DIR, load_run, saved_steps
from circuitpath.runs.storage import read_json, write_atomic, write_json
from circuitpath.training.branch import BranchPlan, branch_many, plan_branch

SWITCH_JSON = "switch.json"
TABLE_JSON = "switch_table.json"
FIGURE = "switch.html"
P2_DIR = "p2"


@dataclass(frozen=True)
class SwitchSettings:
    """Seeds, switch steps and the settings shared by every run of the experiment."""

    seeds: tuple[int, ...]
    switch_steps: tuple[int, ...]
    total: int = 10_000
    p2_lr: float = 1e-3
    p4_lr: float = 1e-2
    task: TaskConfig = field(default_factory=TaskConfig)  # the seed is each run's
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # log and checkpoint settings; phases are set here
    batch_size: int | None = None  # sequences per step of both phases; None: the full training set
    recipe: dict = field(default_factory=dict)  # the optimiser recipe of both phases (`Phase` fields); {}: plain Adam

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(sorted(set(self.seeds))))
        object.__setattr__(self, "switch_steps", tuple(sorted(set(self.switch_steps))))
        if not self.seeds:
            raise ConfigError("the switch experiment needs at least one seed")
        if not self.switch_steps:
            raise ConfigError("the switch experiment needs at least one switch step")
        if self.total < 1:
            raise ConfigError(f"the total number of steps must be at least 1, got {self.total}")
        if self.switch_steps[0] < 0 or self.switch_steps[-1] >= self.total:
            bad = self.switch_steps[0] if self.switch_steps[0] < 0 else self.switch_steps[-1]
            raise ConfigError(f"switch steps must lie in 0 .. total - 1 = {self.total - 1}, got {bad}")
        object.__setattr__(self, "recipe", Phase(p=2, steps=1, lr=1.0, **self.recipe).changed_recipe)  # checked
        Phase(p=2, steps=self.total, lr=self.p2_lr, batch_size=self.batch_size)  # checks the rates and the batch
        Phase(p=4, steps=self.total, lr=self.p4_lr)
        if self.switch_steps[-1] > 0:  # the shortest phases: the p = 2 runs' and the branches at the last switch
            Phase(p=2, steps=self.switch_steps[-1], lr=self.p2_lr, **self.recipe).check_warmup()
        Phase(p=4, steps=self.total - self.switch_steps[-1], lr=self.p4_lr, **self.recipe).check_warmup()
        self.p2_config(self.seeds[0]) if self.switch_steps[-1] > 0 else None
        self.branch_phases(self.switch_steps[0])

    @classmethod
    def from_flags(cls, *, seeds, switch_steps, total, p2_lr, p4_lr, n_ctx=None, k=None, n_train=None, n_test=None,
                   d_model=None, residual=None, checkpoint_every=None, arch=None, n_layers=None, n_heads=None,
                   readout=None, norm=None, positions=None, batch_size=None, log_every=None, init=None,
                   recipe=None) -> SwitchSettings:
        """Settings from the command line's flags; a flag left out (None) keeps the configs' default. `arch` and
        the four after it choose a standard transformer (`ModelConfig`); `recipe` holds `Phase` recipe fields."""
        task = {k_: v for k_, v in (("n_ctx", n_ctx), ("k", k), ("n_train", n_train), ("n_test", n_test),
                                    ("positions", positions)) if v is not None}
        model = {k_: v for k_, v in (("n_ctx", n_ctx), ("d_model", d_model), ("residual", residual), ("arch", arch),
                                     ("n_layers", n_layers), ("n_heads", n_heads), ("readout", readout),
                                     ("norm", norm), ("init", init)) if v is not None}
        if d_model is not None:
            model["d_mlp"] = None
        train = {k_: v for k_, v in (("checkpoint_every", checkpoint_every), ("log_every", log_every)) if v is not None}
        return cls(tuple(seeds), tuple(switch_steps), total, p2_lr, p4_lr, TaskConfig(**task), ModelConfig(**model),
                   TrainConfig(**train), batch_size, dict(recipe or {}))

    def schedule(self) -> str:
        """The schedule in words, as the table and the figure state it."""
        batch = f"mini-batches of {self.batch_size}" if self.batch_size else "full batch"
        recipe = "".join(f", {key} {value}" for key, value in self.recipe.items())
        return f"p = 2 at lr {self.p2_lr:g}, then p = 4 at lr {self.p4_lr:g}; {self.total} steps in all, {batch}{recipe}"

    def to_dict(self) -> dict:
        data = {"seeds": list(self.seeds), "switch_steps": list(self.switch_steps), "total": self.total,
                "p2_lr": self.p2_lr, "p4_lr": self.p4_lr, "batch_size": self.batch_size,
                "task": asdict(self.task), "model": asdict(self.model),
                "train": {k: v for k, v in asdict(self.train).items() if k not in ("phases", "extra_checkpoints")}}
        if self.recipe:  # plain Adam's settings are written as before
            data["recipe"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.recipe.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SwitchSettings:
        config = RunConfig.from_dict({"task": data["task"], "model": data["model"], "train": data["train"]}, saved=True)
        return cls(tuple(data["seeds"]), tuple(data["switch_steps"]), data["total"], data["p2_lr"], data["p4_lr"],
                   config.task, config.model, config.train, data.get("batch_size"),  # older ones: full batch
                   data.get("recipe", {}))  # and plain Adam

    def p2_config(self, seed: int, steps: int | None = None) -> RunConfig:
        """The p = 2 run of a seed: to the largest switch step, every switch step checkpointed."""
        last = self.switch_steps[-1] if steps is None else steps
        phase = Phase(p=2, steps=last, lr=self.p2_lr, batch_size=self.batch_size, **self.recipe)
        train = replace(self.train, phases=(phase,), seed=seed,
                        extra_checkpoints=tuple(s for s in self.switch_steps if 0 < s <= last))
        return RunConfig(task=replace(self.task, seed=seed), model=replace(self.model, seed=seed), train=train)

    def branch_phases(self, switch: int) -> tuple[Phase, ...]:
        return (Phase(p=4, steps=self.total - switch, lr=self.p4_lr, batch_size=self.batch_size, **self.recipe),)


def p2_path(out: Path, seed: int) -> Path:
    return Path(out) / P2_DIR / f"seed_{seed}"


def branch_path(out: Path, switch: int, seed: int) -> Path:
    return Path(out) / f"switch_{switch}" / f"seed_{seed}"


# ---- training ------------------------------------------------------------------------------------
def switch_experiment(out: str | Path, settings: SwitchSettings, *, device: str = "cpu", force: bool = False,
                      progress: bool = True) -> SwitchResult:
    """Train the p = 2 runs, branch them at every switch step, and tabulate the outcomes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} exists and is not a directory")
    if (out / SWITCH_JSON).exists() and not force:
        raise RunError(f"{out} already holds a switch experiment; pass --force to replace it, or --resume to finish it "
                       "(in Python: force=True, or resume_switch)")
    if out.is_dir() and any(out.iterdir()) and not (out / SWITCH_JSON).exists():
        raise RunError(f"{out} exists, is not empty and is not a switch experiment; refusing to replace it")
    if force and (out / SWITCH_JSON).exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SWITCH_JSON, settings.to_dict())
    return _finish(out, settings, device, progress)


def resume_switch(out: str | Path, *, device: str = "cpu", progress: bool = True,
                  allow_other_platform: bool = False) -> SwitchResult:
    """Train what an interrupted switch experiment is missing; finished runs are kept as they are.

    Every finished p = 2 run is checked as a branch's parent (platform, files) before anything is written.
    """
    settings = load_settings(out)
    ready = _plan_ready(Path(out), settings, device, allow_other_platform)
    return _finish(Path(out), settings, device, progress, allow_other_platform, ready)


def load_settings(out: str | Path) -> SwitchSettings:
    path = Path(out) / SWITCH_JSON
    if not path.is_file():
        raise RunError(f"{out} is not a switch experiment (no {SWITCH_JSON})")
    try:
        return SwitchSettings.from_dict(read_json(path))
    except (KeyError, TypeError, AttributeError) as error:
        raise RunError(f"{path} is not a switch experiment's settings (bad or missing entry {error})") from None


def _plan_ready(out: Path, settings: SwitchSettings, device: str, allow: bool) -> dict[tuple[int, int], BranchPlan]:
    """Plan (and so check) every missing branch whose p = 2 parent is finished; by (switch, seed). Writes nothing."""
    plans = {}
    for seed in settings.seeds:
        if not (p2_path(out, seed) / RUN_JSON).is_file() or (parent := load_run(p2_path(out, seed))).status != "completed":
            continue
        for switch in (s for s in settings.switch_steps if not (branch_path(out, s, seed) / RUN_JSON).is_file()):
            plans[switch, seed] = plan_branch(parent, switch, settings.branch_phases(switch),
                                              branch_path(out, switch, seed), allow_other_platform=allow, device=device)
    return plans


def _finish(out: Path, settings: SwitchSettings, device: str, progress: bool, allow: bool = False,
            ready: dict[tuple[int, int], BranchPlan] | None = None) -> SwitchResult:
    from circuitpath.training.train import train_many

    ready = dict(ready or {})
    if settings.switch_steps[-1] > 0:
        paths = [p2_path(out, s) for s in settings.seeds]
        _unfinished(paths, device, progress, allow)
        missing = [(settings.p2_config(s), p) for s, p in zip(settings.seeds, paths) if _absent(p)]
        if missing:
            train_many([c for c, _ in missing], [p for _, p in missing], device=device, progress=progress)
    branches = [(s, seed) for s in settings.switch_steps for seed in settings.seeds]
    _unfinished([branch_path(out, s, seed) for s, seed in branches], device, progress, allow)
    plans: list[BranchPlan] = []
    for switch, seed in branches:
        if not _absent(branch_path(out, switch, seed)):
            continue
        if (switch, seed) not in ready:
            parent = load_run(p2_path(out, seed) if settings.switch_steps[-1] > 0 else _scratch_parent(out, settings, seed))
            ready[switch, seed] = plan_branch(parent, switch, settings.branch_phases(switch),
                                              branch_path(out, switch, seed), allow_other_platform=allow, device=device)
        plans.append(ready[switch, seed])
    if plans:
        branch_many(plans, device=device, progress=progress)
    return tabulate(out)


def _scratch_parent(out: Path, settings: SwitchSettings, seed: int) -> Path:
    """With switch step 0 alone there is no p = 2 phase: a one-step p = 2 run gives the initial weights."""
    from circuitpath.training.train import train

    path = p2_path(out, seed)
    if _absent(path):
        train(settings.p2_config(seed, steps=1), path, progress=False)
    return path


def _absent(path: Path) -> bool:
    """No run there yet; a directory left without run.json by a crash during creation is cleared."""
    if (path / RUN_JSON).is_file():
        return False
    if path.is_dir():
        shutil.rmtree(path)
    return True


def _unfinished(paths: list[Path], device: str, progress: bool, allow: bool) -> None:
    """Resume the runs that exist and are not completed, grouped by the states they saved."""
    from circuitpath.training.train import resume_groups

    groups: dict[tuple, list[Path]] = {}
    for path in paths:
        if (path / RUN_JSON).is_file() and load_run(path).status != "completed":
            config = load_run(path).config
            key = (tuple((ph.p, ph.steps, ph.batch_size) for ph in config.train.phases),
                   tuple(saved_steps(path / STATE_DIR)))
            groups.setdefault(key, []).append(path)
    if groups:
        resume_groups(list(groups.values()), device=device, progress=progress, allow_other_platform=allow)


# ---- the table -----------------------------------------------------------------------------------
@dataclass
class SwitchRow:
    """Outcomes of every seed branched at one switch step."""

    switch: int
    seeds: list[int]
    final_test_acc: list[float]
    generalised: list[bool]
    memorised: list[bool]
    p2_test_acc: list[float | None]  # the p = 2 run's test acc at the switch (None at step 0)

    @property
    def p2_solved(self) -> list[bool]:
        return [acc is not None and acc >= 0.99 for acc in self.p2_test_acc]

    def rate(self, among: list[bool] | None = None) -> Rate:
        keep = [True] * len(self.seeds) if among is None else among
        return Rate(sum(g for g, k in zip(self.generalised, keep) if k), sum(keep))

    def split(self) -> tuple[Rate, Rate]:
        """Rate of generalising among seeds whose p = 2 phase had, and had not, generalised at the switch
        (at step 0 there is no p = 2 phase: both are empty)."""
        solved = self.p2_solved
        had_p2 = [acc is not None for acc in self.p2_test_acc]
        return self.rate(solved), self.rate([h and not s for h, s in zip(had_p2, solved)])


@dataclass
class SwitchResult:
    settings: SwitchSettings
    rows: list[SwitchRow]

    def lines(self) -> list[str]:
        s = self.settings
        header = (f"{'switch':>6}  {'generalise (' + GENERALISES + ')':<30}  {'p2 solved at switch':>19}  "
                  f"{'generalise | p2 solved':<24}  {'generalise | p2 not solved':<26}  {'memorised':>9}")
        lines = [f"{s.schedule()}; {len(s.seeds)} seeds; [Wilson 95% interval]", header, "-" * len(header)]
        for row in self.rows:
            solved, unsolved = row.split()
            count = "- (no p = 2)" if row.switch == 0 else sum(row.p2_solved)
            lines.append(f"{row.switch:>6}  {row.rate().text():<30}  {count:>19}  {solved.text():<24}  "
                         f"{unsolved.text():<26}  {sum(row.memorised):>9}")
        solved, unsolved = (sum((row.split()[i] for row in self.rows), Rate(0, 0)) for i in (0, 1))
        if solved.n + unsolved.n:  # branches, not seeds: a seed counts once per switch step, so no interval
            lines.append(f"all switch steps > 0 together: {solved.k} of {solved.n} branches generalise when p = 2 was "
                         f"solved at the switch, {unsolved.k} of {unsolved.n} when it was not (a seed counts once per "
                         "switch step)")
        return lines

    def to_dict(self) -> dict:
        rows = []
        for row in self.rows:
            solved, unsolved = row.split()
            rows.append({"switch": row.switch, "generalise": row.rate().to_dict(),
                         "generalise_if_p2_solved": solved.to_dict(), "generalise_if_p2_not_solved": unsolved.to_dict(),
                         "memorised": sum(row.memorised), "seeds": row.seeds, "final_test_acc": row.final_test_acc,
                         "generalised": row.generalised, "p2_test_acc_at_switch": row.p2_test_acc})
        return {"settings": self.settings.to_dict(), "criterion": GENERALISES, "p2_solved": "p = 2 test acc >= 0.99",
                "rows": rows}


def tabulate(out: str | Path) -> SwitchResult:
    """Final outcome of every branch and the p = 2 run's state at each switch."""
    out = Path(out)
    settings = load_settings(out)
    rows = []
    for switch in settings.switch_steps:
        finals, p2_acc = [], []
        for seed in settings.seeds:
            run = load_run(branch_path(out, switch, seed))
            if run.status != "completed":
                raise RunError(f"{run.path} is not completed (status {run.status}); finish it with --resume {out}")
            finals.append(run.final_metrics())
            p2_acc.append(_p2_test_acc(out, seed, switch))
        rows.append(SwitchRow(switch, list(settings.seeds), [m["test_acc"] for m in finals],
                              [generalises(m) for m in finals], [memorises(m) for m in finals], p2_acc))
    return SwitchResult(settings, rows)


def _p2_test_acc(out: Path, seed: int, switch: int) -> float | None:
    if switch == 0:
        return None
    lines = [m for m in load_run(p2_path(out, seed)).metrics if m["step"] == switch and m["phase"] == 0]
    if not lines:
        raise RunError(f"{p2_path(out, seed)} has no metrics at step {switch}")
    return lines[0]["test_acc"]


def save_table(result: SwitchResult, out: str | Path) -> Path:
    """switch_table.json in `out` (its page is drawn by `plots.switching.write_switch_page`)."""
    import json

    path = Path(out) / TABLE_JSON
    write_atomic(path, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return path


__all__ = ["SwitchResult", "SwitchRow", "SwitchSettings", "resume_switch", "save_table", "switch_experiment",
           "tabulate"]
