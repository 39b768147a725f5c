"""Does the thesis survive a standard transformer trained with AdamW? Scratch against curriculum, over seeds.

The setting is the pilot's (analyses/transformer_pilot.py: the cheapest setting whose p = 2 reaches test
acc >= 0.99 on 3 of 4 seeds and whose p = 4 from scratch fits its training set), read from its
pilot.json, or given by flags. Two arms of N steps each, with the setting's recipe (lr, batch, AdamW):

- scratch:    p = 4 for N steps;
- curriculum: p = 2 for S steps, then p = 4 for N - S (a new phase: a new optimiser at the switch).

N defaults to S + the pilot's stage-2 steps (the p = 4 budget in which it saw scratch fit). S defaults to where the pilot solved p = 2: the
first logged step from which every pilot seed that ended at p = 2 test acc >= 0.99 stayed there,
rounded up to a multiple of 250 (`--switch` sets it).

Cells, one resumable sweep each: `main` (the setting on the first-k task, --seeds), `width` (the other
width, 32 or 64, same layers and heads, --other-seeds) and `random` (the setting on the random-positions
task, --random-seeds). Per cell the paper's claims as rates over seeds with 95% Wilson intervals:
p2_solved, scratch_memorises, curriculum_generalises, headline (both on one seed) and barrier (train-loss
barrier on the straight line between the two arms' final weights > ln 4). `--switch-curve` also runs the
switch-step curve at the main cell's setting, as `circuitpath switch` does: p = 2 runs of its own (seeds
--curve-seeds, default the main cell's first 8), each branched to p = 4 at steps 0, S/2, S, 2S and N/2 (those
below N), every branch ending at step N.

Run: `python analyses/thesis_study.py [OUT] [--pilot PILOT.json] [--cells main,width,random]` (default
runs/thesis_study). Quick tour: `--seeds 0-1 --steps 40 --other-seeds none --random-seeds none`.
Resumable: run the command again to finish an interrupted study, or with more seeds to extend a cell
(`--seeds 0-31` after `--seeds 0-7` trains only seeds 8-31). Writes OUT/claims.json and OUT/study.html.
A study continues under the kernel pinning its runs recorded (runs/thesis_study: `CIRCUITPATH_PINNING=avx2`,
the default when it began); another is refused in one line.
"""

# %%
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from circuitpath.analysis.threads import single_threaded
from circuitpath.paper.claims import BARRIER, Claim, fig5, fig6, per_seed_lines, table
from circuitpath.config import ModelConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.errors import CircuitPathError, InputError
from circuitpath.paper.report.figures import seed_outcomes_figure
from circuitpath.plots.switching import switch_figure
from circuitpath.paper.report import claims_table
from circuitpath.paper.report.fig5_accuracy import seed_outcomes, seeds_caption
from circuitpath.paper.report.page import Page, Panel
from circuitpath.runs import load_run
from circuitpath.runs.storage import read_json, write_json
from circuitpath.sweep import SUMMARY_JSON, parse_seeds, pending_runs, resume_sweep, run_path, sweep
from circuitpath.sweep.spec import SWEEP_JSON, load_spec, make_spec, write_spec
from circuitpath.analysis.outcomes import FITS
from circuitpath.sweep.switching import (SWITCH_JSON, SwitchResult, SwitchSettings, branch_path, load_settings, resume_switch,
                                   save_table, switch_experiment)
from transformer_pilot import SOLVED, Setting

CELLS = ("main", "width", "random")
ROUND = 250  # the default switch is rounded up to a multiple of this (the pilot logged every 250 steps)
LOG_EVERY = 250  # at most; tiny studies log more often (every N // 20 steps)
CIRCUIT_EVERY = 250  # the main cell's checkpoints (at most), for the circuit over training (1.6 MB each at d = 128)
RESUME_EVERY = 1000  # the other runs' checkpoints while they train (an interrupted run resumes from the last one)
#: TrainConfig fields that say only when a run is saved: they change no run's bytes, so an existing sweep may differ
SAVING = ("checkpoint_every", "dense_checkpoints", "extra_checkpoints")
CLAIMS_JSON, PAGE, CURVE = "claims.json", "study.html", "switch_curve"
#: Overrides of `TaskConfig` for every cell (empty: the paper's task; tests make it smaller).
TASK: dict = {}


# %%
@dataclass(frozen=True)
class Cell:
    """One sweep of the study: a setting on a task, over seeds."""

    name: str
    setting: Setting
    positions: str
    seeds: tuple[int, ...]

    def task(self) -> TaskConfig:
        return TaskConfig(**({"positions": self.positions} | TASK))

    def model(self) -> ModelConfig:
        return replace(self.setting.model(), n_ctx=self.task().n_ctx)

    def describe(self) -> str:
        return f"{self.name}: {self.setting.shape} {self.setting.name}, {self.positions} positions, seeds {list(self.seeds)}"


def other_width(setting: Setting) -> Setting:
    return replace(setting, d_model=32 if setting.d_model == 64 else 64)


def schedules(setting: Setting, steps: int, switch: int) -> dict[str, str]:
    """The two arms as phase strings, with the setting's recipe in each phase."""
    return {"scratch": setting.phases(4, steps),
            "curriculum": setting.phases(2, switch) + "," + setting.phases(4, steps - switch)}


def train_config(steps: int, dense: bool = False) -> TrainConfig:
    """Log every LOG_EVERY steps (at most); checkpoint every CIRCUIT_EVERY for the circuit's timeline, else every
    RESUME_EVERY, so that a sitting cut short loses at most that many steps of each run."""
    log_every = min(LOG_EVERY, max(1, steps // 20))
    return TrainConfig(log_every=log_every,
                       checkpoint_every=min(CIRCUIT_EVERY, log_every) if dense else min(RESUME_EVERY, steps))


def keeps(cell: Cell) -> tuple[bool, str]:
    """The main cell keeps a checkpoint every CIRCUIT_EVERY steps (the circuit over training is read from them);
    the others keep, once a run completes, only step 0, the switch and the end."""
    return (True, "all") if cell.name == "main" else (False, "ends")


def recipe(setting: Setting) -> dict:
    """The setting's optimiser recipe as `Phase` fields (read back from its own phase string)."""
    return parse_phases(setting.phases(2, 1))[0].changed_recipe


# %% The setting and the switch
def setting_from(pilot: Path, flags: dict) -> tuple[Setting, str, dict | None]:
    """The setting (the pilot's chosen one, any flag replacing its field), where it came from, and the pilot's data."""
    given = {key: value for key, value in flags.items() if value is not None}
    data = read_json(pilot) if pilot.is_file() else None
    chosen = data.get("chosen") if isinstance(data, dict) else None
    if chosen is None:
        needed = {"d_model", "n_layers", "n_heads"} - given.keys()
        if needed:
            why = f"{pilot} chose no setting" if data is not None else f"{pilot} does not exist"
            raise InputError(f"{why}; give the setting by flags (missing: "
                             + ", ".join("--" + n.replace("_", "-") for n in sorted(needed)) + ")")
        return Setting(**given), "the command line's flags", data
    source = f"the pilot's choice in {pilot}" + (f", with {', '.join(sorted(given))} from the command line" if given else "")
    try:
        return replace(Setting(**chosen), **given), source, data
    except TypeError:
        raise InputError(f"{pilot}'s chosen setting is not a pilot Setting: {chosen!r}") from None


def solved_from(lines: list[dict]) -> int | None:
    """The first logged step from which the test acc stays >= SOLVED to the end (None: it ends below)."""
    step = None
    for line in sorted(lines, key=lambda m: m["step"]):
        step = (step if step is not None else line["step"]) if line["test_acc"] >= SOLVED else None
    return step


def switch_from_pilot(pilot: Path, setting: Setting) -> tuple[int, str]:
    """The rule's switch step, from the pilot's p = 2 runs of this setting, and the rule in words."""
    where = pilot.parent / f"p2_{setting.shape}" / setting.name
    runs = sorted(where.glob("seed_*/metrics.jsonl"))
    if not runs:
        raise InputError(f"no pilot p = 2 runs of {setting.shape} {setting.name} under {where}; give --switch")
    if not (where.parent / SUMMARY_JSON).is_file():
        raise InputError(f"the pilot's p = 2 sweep {where.parent} has not finished (no {SUMMARY_JSON}); give --switch")
    try:
        steps = {path.parent.name: solved_from([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
                 for path in runs}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"the pilot's p = 2 metrics under {where} are not metrics lines ({error}); give --switch") from None
    solved = {seed: step for seed, step in steps.items() if step is not None}
    if not solved:
        raise InputError(f"no pilot seed of {setting.shape} {setting.name} solved p = 2 (under {where}); give --switch")
    switch = ROUND * math.ceil(max(solved.values()) / ROUND)
    held = ", ".join(f"{seed} from {step}" for seed, step in sorted(solved.items()))
    return switch, (f"the first logged step from which every pilot seed that solved p = 2 stayed at test acc >= "
                    f"{SOLVED} ({held}; {len(solved)} of {len(steps)} solved), rounded up to a multiple of {ROUND}")


# %% Training: one resumable sweep per cell
def cell_spec(cell: Cell, steps: int, switch: int) -> dict:
    """The cell's sweep spec as sweep.json holds it (building it checks every run config)."""
    dense, keep = keeps(cell)
    spec = make_spec(list(cell.seeds), schedules(cell.setting, steps, switch), cell.task(), cell.model(), keep,
                     train_config(steps, dense))
    return json.loads(json.dumps(spec))


def check_existing(out: Path, cell: Cell, spec: dict) -> None:
    """A sweep already in the cell's directory must be this one, or this one on fewer seeds (which the study then
    extends); else its runs would answer another question."""
    where = out / cell.name
    if (where / SWEEP_JSON).is_file():
        saved = load_spec(where)
        differ = [key for key in ("experiments", "task", "model", "train") if _runs_of(saved, key) != _runs_of(spec, key)]
        if differ:
            raise InputError(f"{where} holds a sweep with other {', '.join(differ)}; use another OUT or remove it")
        dropped = sorted(set(saved["seeds"]) - set(spec["seeds"]))
        if dropped:
            raise InputError(f"{where} holds seeds {dropped} that the cell's seeds {list(cell.seeds)} leave out; "
                             f"give them too (the cell may only grow) or use another OUT")
    elif where.exists():
        raise InputError(f"{where} exists and is not a sweep; use another OUT or remove it")


def _runs_of(spec: dict, key: str):
    """The spec's entry, without the fields that only say when a run is saved."""
    value = spec.get(key)
    return {k: v for k, v in value.items() if k not in SAVING} if key == "train" and isinstance(value, dict) else value


def to_train(out: Path, cell: Cell) -> int:
    """How many of the cell's runs (both arms, its seeds) have not completed: the study's progress across sittings."""
    where = out / cell.name
    if not (where / SWEEP_JSON).is_file():
        return 2 * len(cell.seeds)
    return sum(map(len, pending_runs(where, load_spec(where) | {"seeds": list(cell.seeds)}).values()))


def run_cell(out: Path, cell: Cell, steps: int, switch: int) -> None:
    """Train the cell's sweep, or finish it when it was interrupted, or add the seeds it lacks (a run's bytes do not
    depend on its batch-mates, so seeds added later train as they would have in the first sweep)."""
    where = out / cell.name
    if (where / SWEEP_JSON).is_file():
        saved = load_spec(where)
        if saved["seeds"] != list(cell.seeds):
            write_spec(where, saved | {"seeds": list(cell.seeds)})
        if pending_runs(where):
            resume_sweep(where)
        return
    dense, keep = keeps(cell)
    sweep(where, list(cell.seeds), schedules(cell.setting, steps, switch), task=cell.task(), model=cell.model(),
          train=train_config(steps, dense), keep_checkpoints=keep)


# %% Claims per cell
def cell_claims(out: Path, cell: Cell) -> tuple[list[Claim], dict[str, str]]:
    """The claims over the cell's seeds, and the rows left out with the reason."""
    runs = {arm: {seed: load_run(run_path(out / cell.name, arm, seed)) for seed in cell.seeds}
            for arm in ("scratch", "curriculum")}
    claims, left_out = fig5(runs["scratch"], runs["curriculum"]), {}
    try:
        claims += fig6(runs["scratch"], runs["curriculum"])
    except (CircuitPathError, RuntimeError) as error:
        left_out["barrier"] = f"run_barrier failed on this model: {error}"
    order = ["p2_solved", "scratch_memorises", "curriculum_generalises", "headline", "barrier"]
    return sorted(claims, key=lambda c: order.index(c.key)), left_out


# %% The switch-step curve (main cell)
def curve_steps(steps: int, switch: int) -> tuple[int, ...]:
    """0 (scratch), half the switch, the switch, twice it, and half the budget: those below the budget."""
    return tuple(sorted({s for s in (0, switch // 2, switch, 2 * switch, steps // 2) if 0 <= s < steps}))


#: The curve's seeds when none are given: the main cell's first ones, as many as ~3.4 h of two cores hold at d = 128
CURVE_SEEDS = 8


def curve_settings(cell: Cell, steps: int, switch: int, seeds: tuple[int, ...] | None = None) -> SwitchSettings:
    """The switch experiment of the cell's setting (on `seeds`, else the cell's first CURVE_SEEDS): both phases at
    the setting's lr, batch and recipe."""
    return SwitchSettings(seeds or cell.seeds[:CURVE_SEEDS], curve_steps(steps, switch), total=steps,
                          p2_lr=cell.setting.lr, p4_lr=cell.setting.lr, task=cell.task(), model=cell.model(),
                          train=train_config(steps), batch_size=cell.setting.batch, recipe=recipe(cell.setting))


def check_curve(out: Path, settings: SwitchSettings) -> None:
    where = out / CURVE
    if (where / SWITCH_JSON).is_file() and load_settings(where).to_dict() != settings.to_dict():
        raise InputError(f"{where} holds a switch experiment with other settings; use another OUT or remove it")
    if where.exists() and not (where / SWITCH_JSON).is_file():
        raise InputError(f"{where} exists and is not a switch experiment; use another OUT or remove it")


def switch_curve(out: Path, settings: SwitchSettings) -> SwitchResult:
    """Train (or finish) the switch experiment and save its table; a finished one is only read."""
    where = out / CURVE
    done = (where / SWITCH_JSON).is_file()
    result = resume_switch(where) if done else switch_experiment(where, settings)  # bars in a terminal, not in a log
    save_table(result, where)
    return result


def curve_control(out: Path, curve: SwitchResult) -> dict:
    """The curve's control, its switch-0 row (p = 4 from scratch): which seeds fit their training set. If they do not,
    the curve measured its budget, not the switch. The same fit for every row: a later switch leaves fewer p = 4
    steps, and a row whose branches do not fit measured those steps, not the switch."""
    settings = curve.settings
    train_acc = {switch: {seed: load_run(branch_path(out / CURVE, switch, seed)).final_metrics()["train_acc"]
                          for seed in settings.seeds} for switch in settings.switch_steps}
    by_switch = {switch: sum(acc >= FITS for acc in accs.values()) for switch, accs in train_acc.items()}
    budget = (f"fit of the training set at the end (train acc >= {FITS}), seeds per switch step (p = 4 steps left): "
              + ", ".join(f"{switch} ({settings.total - switch}): {fits}/{len(settings.seeds)}"
                          for switch, fits in by_switch.items())
              + "; a row whose branches do not fit measured its p = 4 steps, not the switch")
    scratch = train_acc.get(0, {})
    fits = [seed for seed, acc in scratch.items() if acc >= FITS]
    if not scratch:
        line = "control: no switch-0 row (p = 4 from scratch) in this curve"
    else:
        short = ", ".join(f"seed {seed} at {acc:.3f}" for seed, acc in scratch.items() if acc < FITS)
        line = (f"control (switch 0, p = 4 from scratch): fits its training set (train acc >= {FITS}) on {len(fits)} "
                f"of {len(scratch)} seeds" + (f"; below: {short}" if short else ""))
    return {"line": line, "train_acc": scratch, "fits": fits, "fits_by_switch": by_switch, "budget_line": budget}


# %% The page
def write_page(out: Path, head: list[str], results: dict[str, tuple[Cell, list[Claim], dict, float | None]],
               curve: SwitchResult | None, control: str | None = None) -> Path:
    page = Page("Does the thesis survive a standard transformer trained with AdamW?")
    page.items(head)
    for name, (cell, claims, left_out, _) in results.items():
        page.heading(f"Cell {cell.describe()}")
        claims_table(page, claims)
        page.items([f"left out: {key}: {why}" for key, why in left_out.items()] + per_seed_lines(claims))
        outcomes = {arm: seed_outcomes(load_run(run_path(out / name, arm, cell.seeds[0])), list(cell.seeds))
                    for arm in ("scratch", "curriculum")}
        switch = next((c.values for c in claims if c.key == "p2_solved"), {})
        figure = seed_outcomes_figure(outcomes, switch, f"{name}: final train and test accuracy per seed and arm")
        page.panel(Panel(figure, seeds_caption(outcomes) + " Look for the thesis's pattern: red crosses (scratch "
                         "memorised) under the 0.5 line and blue circles (curriculum generalised) at 1 on the same seed."))
    if curve is not None:
        page.heading("Rate of generalising against the switch step (main cell)")
        page.panel(Panel(switch_figure(curve), "Switch step 0 is scratch. Look for the rate to rise once the switch "
                         "comes after p = 2 is solved (the study's switch), and whether switching later still helps. Its runs order "
                         "their mini-batches by seed where the cells' sweeps order every seed's as seed 0's, so its point "
                         "at the study's switch replicates the main cell's curriculum rather than repeating it."
                         + (f" The {control}." if control else "")))
    return page.write(out / PAGE)


# %% Command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", nargs="?", type=Path, default=Path("runs/thesis_study"))
    parser.add_argument("--pilot", type=Path, default=Path("runs/transformer_pilot/pilot.json"),
                        help="the pilot's pilot.json (default runs/transformer_pilot/pilot.json)")
    for flag, kind in (("--d-model", int), ("--n-layers", int), ("--n-heads", int), ("--batch", int),
                       ("--lr", float), ("--weight-decay", float)):
        parser.add_argument(flag, type=kind, help="the setting's field (default: the pilot's choice)")
    parser.add_argument("--decay", choices=("matrices", "all"), help="weights the decay shrinks (default: the pilot's)")
    parser.add_argument("--steps", type=int, help="steps of every run (default: the switch + the pilot's stage-2 steps)")
    parser.add_argument("--switch", type=int, help="the curriculum's p = 2 steps (default: where the pilot solved p = 2)")
    parser.add_argument("--cells", default=",".join(CELLS), help=f"cells to run, of {', '.join(CELLS)} (default all)")
    parser.add_argument("--seeds", default="0-31", help="seeds of the main cell (default 0-31)")
    parser.add_argument("--other-seeds", default="0-15", help="seeds of the width cell, or none (default 0-15)")
    parser.add_argument("--random-seeds", default="0-15", help="seeds of the random cell, or none (default 0-15)")
    parser.add_argument("--switch-curve", action="store_true", help="also the switch-step curve of the main cell")
    parser.add_argument("--curve-seeds", help=f"seeds of the switch-step curve (default: the main cell's first "
                        f"{CURVE_SEEDS})")
    return parser.parse_args(argv)


@dataclass
class Plan:
    """Everything the study will do, checked before a file is written."""

    setting: Setting
    head: list[str]  # what to print before training: the setting and where it came from, the arms, the switch
    cells: list[Cell]
    steps: int
    switch: int
    curve: SwitchSettings | None = None
    kept: dict = field(default_factory=dict)  # cells measured by an earlier command and not run by this one


def kept_cells(out: Path, setting: Setting, steps: int, switch: int, running: list[Cell]) -> tuple[dict, list[str]]:
    """The cells an earlier command measured into OUT/claims.json, at this setting, arms and switch, that this
    command does not run (name -> (cell, claims, left out, wall s)): claims.json and the page show every cell of the
    study, not only the last command's. Also what is said of them, or of a record left out."""
    path = out / CLAIMS_JSON
    if not path.is_file():
        return {}, []
    try:
        record = read_json(path)
        if (record["setting"], record["steps"], record["switch"]) != (asdict(setting), steps, switch):
            return {}, [f"{path} was measured at another setting, steps or switch: its cells are not kept"]
        running_names = {cell.name for cell in running}
        kept = {name: (Cell(name, Setting(**cell["setting"]), cell["positions"], tuple(cell["seeds"])),
                       [Claim.from_dict(c) for c in cell["claims"]], cell["left_out"],
                       cell.get("wall_s", record.get("wall_s") if len(record["cells"]) == 1 else None))
                for name, cell in record["cells"].items() if name in CELLS and name not in running_names}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{path} is not a thesis study's claims ({error!r}); move it away") from None
    return kept, [f"cell {cell.describe()}: kept from {path} (measured earlier)" for cell, *_ in kept.values()]


def steps_and_switch(args: argparse.Namespace, setting: Setting, pilot: dict | None) -> tuple[int, int, str]:
    """S (--switch, else the pilot's rule), N (--steps, else S + the pilot's stage-2 steps: the curriculum's
    p = 4 phase gets the budget in which the pilot saw p = 4 fit from scratch) and the rule in words."""
    switch, rule = (args.switch, "given by --switch") if args.switch is not None else switch_from_pilot(args.pilot, setting)
    steps = args.steps if args.steps is not None else (
        switch + pilot["stage2_steps"] if pilot and "stage2_steps" in pilot else None)
    if steps is None:
        raise InputError(f"no pilot steps in {args.pilot}; give --steps")
    if steps < 2:
        raise InputError(f"--steps must be at least 2 (both curriculum phases need a step), got {steps}")
    if not 0 < switch < steps:
        raise InputError(f"the switch must lie in 1 .. steps - 1 = {steps - 1}, got {switch} ({rule})")
    return steps, switch, rule


def cells_of(args: argparse.Namespace, setting: Setting) -> list[Cell]:
    names = [n.strip() for n in args.cells.split(",") if n.strip()]
    if not names or any(n not in CELLS for n in names):
        raise InputError(f"--cells takes names of {', '.join(CELLS)}, got {args.cells!r}")
    seeds = {"main": args.seeds, "width": args.other_seeds, "random": args.random_seeds}
    cells = [Cell(name, other_width(setting) if name == "width" else setting,
                  "random" if name == "random" else "first", tuple(parse_seeds(seeds[name])))
             for name in CELLS if name in names and seeds[name].strip().lower() != "none"]
    if not cells:
        raise InputError("every cell asked for has no seeds (none); nothing to run")
    return cells


def plan(args: argparse.Namespace) -> Plan:
    flags = {"d_model": args.d_model, "n_layers": args.n_layers, "n_heads": args.n_heads, "batch": args.batch,
             "lr": args.lr, "weight_decay": args.weight_decay, "decay": args.decay}
    setting, source, pilot = setting_from(args.pilot, flags)
    steps, switch, rule = steps_and_switch(args, setting, pilot)
    cells = cells_of(args, setting)
    arms = schedules(setting, steps, switch)
    head = [f"setting: {setting.shape} {setting.name} ({asdict(setting)}), from {source}",
            f"arms: {steps} steps each; scratch {arms['scratch']}; curriculum {arms['curriculum']}",
            f"switch S = {switch}: {rule}"]
    for cell in cells:
        check_existing(args.out, cell, cell_spec(cell, steps, switch))
        head.append(f"cell {cell.describe()} ({to_train(args.out, cell)} of {2 * len(cell.seeds)} runs to train)")
    kept, said = kept_cells(args.out, setting, steps, switch, cells)
    result = Plan(setting, head + said, cells, steps, switch, kept=kept)
    if args.curve_seeds and not args.switch_curve:
        raise InputError("--curve-seeds sets the seeds of the switch-step curve: add --switch-curve")
    if args.switch_curve:
        if cells[0].name != "main":
            raise InputError("--switch-curve branches the main cell's setting: include main in --cells")
        seeds = tuple(parse_seeds(args.curve_seeds)) if args.curve_seeds else None
        result.curve = curve_settings(cells[0], steps, switch, seeds)
        check_curve(args.out, result.curve)
    return result


def fail(message: str) -> None:
    print(f"thesis_study: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def report(out: Path, todo: Plan, results: dict, curve: SwitchResult | None, wall: float) -> dict:
    """Print the claims of every cell (and the curve), write OUT/claims.json and OUT/study.html."""
    for name, (cell, claims, left_out, _) in results.items():
        print(f"\n{cell.describe()}{' (kept from claims.json)' if name in todo.kept else ''}\n{table(claims)}")
        print("\n".join(per_seed_lines(claims) + [f"  left out: {k}: {why}" for k, why in left_out.items()]))
    control = curve_control(out, curve) if curve is not None else None
    if curve is not None:
        print("\nswitch-step curve (main cell)\n" + "\n".join(curve.lines() + [control["line"], control["budget_line"]]))
    print(f"\nfig: the paper's figure the claim comes from; "
          f"verdict: supported when the whole 95% interval lies above 1/2, refuted below, mixed otherwise; "
          f"barrier holds above ln 4 = {BARRIER:.3f}\nthis command took {wall:.0f} s here")
    record = {"setting": asdict(todo.setting), "head": todo.head, "steps": todo.steps, "switch": todo.switch,
              "wall_s": wall,
              "cells": {name: {"shape": cell.setting.shape, "setting": asdict(cell.setting), "positions": cell.positions,
                               "seeds": list(cell.seeds), "claims": [c.to_dict() for c in claims], "left_out": left_out,
                               "wall_s": cell_wall}
                        for name, (cell, claims, left_out, cell_wall) in results.items()},
              "switch_curve": curve.to_dict() | {"control": control} if curve is not None else None}
    write_json(out / CLAIMS_JSON, record)
    walls = [f"{name} {cell_wall:.0f} s" for name, (*_, cell_wall) in results.items() if cell_wall is not None]
    page = write_page(out, todo.head + [f"the last command that trained each cell took, training and claims, on the machine that ran it (a cell "
                                      f"trained across commands took longer in all): {', '.join(walls)}"],
                      results, curve, f"{control['line']}. The {control['budget_line']}" if control else None)
    print(f"written: {out / CLAIMS_JSON}, {page}")
    return record


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        todo = plan(args)
    except CircuitPathError as error:
        fail(str(error).splitlines()[0])
    print("\n".join(todo.head), flush=True)
    start, measured = time.perf_counter(), dict(todo.kept)
    for cell in todo.cells:
        print(f"== {cell.describe()}", flush=True)
        began = time.perf_counter()
        run_cell(args.out, cell, todo.steps, todo.switch)
        with single_threaded():  # the barrier's small forwards: a second thread only waits on busy cores
            measured[cell.name] = (cell, *cell_claims(args.out, cell), time.perf_counter() - began)
    results = {name: measured[name] for name in CELLS if name in measured}
    curve = switch_curve(args.out, todo.curve) if todo.curve is not None else None
    return report(args.out, todo, results, curve, time.perf_counter() - start)


if __name__ == "__main__":
    main()
