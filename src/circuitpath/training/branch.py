"""Branches: a new run that starts from a saved run's checkpoint and goes on with other phases.

Let S be the branch step, i the parent's phase at S (a phase-boundary step belongs to the phase it
ends) and l = S - (start of phase i). A branch is an ordinary run directory whose

- **config** is the parent's with its phases cut at S (the phases before i, and phase i shortened
  to l steps) followed by the new phases. Checkpoint and log settings are the parent's; extra
  checkpoints past the branch's end are dropped, and S joins them where the schedule would not
  otherwise save it.
- **phase at S**: every new phase starts a fresh Adam, as every phase does. When the first new phase
  has phase i's p, lr and batch size, it *continues* phase i instead: the two become one phase of
  l + steps, so Adam's moments carry on and mini-batches go on through the same epoch order
  (`new_phase=True` starts a fresh phase anyway).
- **records up to S** are the parent's: its checkpoints up to S and its metric lines up to the
  record of S are copied byte for byte; run.json's "branch" entry names the parent, S and the
  parent's phases.

Because training is batch invariant, a branch equals a run trained from scratch with the branch's
config: the same checkpoint bytes and metric lines (tests/test_branch.py checks this for full- and
mini-batch phases). Branches of many runs at one step train batched, like a sweep.

Continuing a phase needs Adam's moments at S, and a run keeps the states of its last two
checkpoints only (`runs.STATES_KEPT`). Where the parent's state at S is on disk it is used (branching a
finished run at its last step to train it longer, for one). Otherwise the branch *replays* phase i
from its start, where Adam is fresh by definition, up to S, and then goes on. We replay rather
than keep every state because a state holds two floats per weight (three times a checkpoint's
size, at every one of a run's ~65 checkpoints, for the rare branch that continues mid-phase), and
because the replay is exact: it recomputes the parent's own arithmetic, and the branch checks that
the replayed checkpoint at S has the parent's bytes (`BranchError` otherwise). It costs at most
one phase of training.

A branch at S = 0 keeps no records: it is a fresh run of the new phases from the parent's initial
weights (checked to be what the branch's config initialises).
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from circuitpath import pinning, platform
from circuitpath.config import Phase, RunConfig
from circuitpath.data import Split, make_split
from circuitpath.errors import CheckpointError, CircuitPathError, RunError
from circuitpath.models.weights import init_weights
from circuitpath.runs import CHECKPOINT_DIR, METRICS, RUN_JSON, STATE_DIR, Run, RunWriter, load_run, nearest_steps, saved_steps, step_file
from circuitpath.runs.storage import load_tensors, write_atomic
from circuitpath.training.engine import Layout
from circuitpath.training.loop import checkpoint_schedule

#: run.json key that describes where a branch comes from.
BRANCH_KEY = "branch"


class BranchError(CircuitPathError):
    """A branch cannot be made as asked (its step, its phases, its output), or its replay diverged."""


@dataclass(frozen=True)
class BranchPlan:
    """One branch, decided and checked before anything is written."""

    parent: Run
    step: int
    config: RunConfig
    out: Path
    continues: bool  # the first new phase continues the parent's phase at `step` (Adam carries on)
    restart: int  # the step training starts from: `step`, or the start of the parent's phase (replay)
    splits: list[Split] = field(default_factory=list, repr=False, compare=False)  # every phase's data, read and checked

    @property
    def replays(self) -> bool:
        return self.restart < self.step

    def describe(self) -> dict:
        return {
            "parent": str(self.parent.path.resolve()),
            "step": self.step,
            "parent_phases": [ph.to_dict() for ph in self.parent.config.train.phases],
            "continues_phase": self.continues,
            "replayed_from": self.restart if self.replays else None,
        }


def branch_config(parent: RunConfig, step: int, phases: tuple[Phase, ...], new_phase: bool = False) -> tuple[RunConfig, bool]:
    """The branch's config and whether its first new phase continues the parent's phase at `step`."""
    train = parent.train
    starts = train.phase_starts()
    index = max([0] + [i for i, start in enumerate(starts) if start < step])
    local = step - starts[index]
    current = train.phases[index]
    head = list(train.phases[:index]) + ([replace(current, steps=local)] if local > 0 else [])
    same = ((phases[0].p, phases[0].lr, phases[0].batch_size, phases[0].k)
            == (current.p, current.lr, current.batch_size, current.k))
    continues = local > 0 and same and not new_phase
    if continues and phases[0].recipe != current.recipe:  # Adam's moments carry on: so must its recipe
        changed = ", ".join(f"{key} {phases[0].recipe[key]} (recorded {value})"
                            for key, value in current.recipe.items() if phases[0].recipe[key] != value)
        raise BranchError(f"the first new phase continues phase {index} but changes its optimiser recipe: {changed}; "
                          "give the recorded recipe, or --new-phase to restart the optimiser")
    if continues:
        joined = head[:-1] + [replace(current, steps=local + phases[0].steps)] + list(phases[1:])
    else:
        joined = head + list(phases)
    total = sum(ph.steps for ph in joined)
    extras = tuple(s for s in train.extra_checkpoints if s <= total)
    new_train = replace(train, phases=tuple(joined), extra_checkpoints=extras)
    if step not in checkpoint_schedule(new_train):
        new_train = replace(new_train, extra_checkpoints=(*extras, step))
    return RunConfig(task=parent.task, model=parent.model, train=new_train), continues


def plan_branch(parent: Run, step: int, phases: tuple[Phase, ...], out: str | Path, new_phase: bool = False, *,
                allow_other_platform: bool = False, device: str = "cpu") -> BranchPlan:
    """Check that `parent` can be branched at `step` with `phases` into `out`; nothing is written.

    Every file of the parent that the branch reads (checkpoints up to the restart step, the state
    it restarts from, metric lines, data) is read and checked here, so a bad one stops the branch
    before its directory exists. A parent written on another platform is refused unless
    `allow_other_platform` (see `circuitpath.platform`).
    """
    if not phases:
        raise BranchError("a branch needs at least one new phase")
    if step not in parent.steps:
        raise BranchError(f"{parent.path} has no checkpoint at step {step}; "
                          f"nearest saved, nearest first: {nearest_steps(parent.steps, step)}")
    platform.check(parent.info.get(platform.KEY), f"the parent run {parent.path}", allow=allow_other_platform,
                   device=device, pinned=parent.info.get(pinning.KEY))
    try:
        config, continues = branch_config(parent.config, step, tuple(phases), new_phase)
    except CircuitPathError as error:
        raise BranchError(f"cannot branch {parent.path} at step {step}: {error}") from None
    restart = step
    if continues and _state_at(parent, step) is None:
        restart = parent.config.train.phase_starts()[parent.phase_at(step)]
        if restart not in parent.steps:
            raise BranchError(f"{parent.path} kept neither the optimiser state at step {step} nor the checkpoint at "
                              f"its phase's start {restart} to replay it from; pass --new-phase to restart Adam at {step}")
    if step == 0 and not _same_weights(init_weights(config.model), parent.weights_at(0)):
        raise BranchError(f"{parent.path}'s step-0 checkpoint is not what its model seed initialises; cannot branch at 0")
    if step > 0:
        _metric_lines(parent, restart)  # the parent's records reach the restart step
        for saved in (s for s in parent.steps if s <= max(step, restart)):
            load_tensors(parent.checkpoint_path(saved))  # copied byte for byte, or compared with the replay
    return BranchPlan(parent, step, config, Path(out), continues, restart, _splits(parent, step, config))


def _splits(parent: Run, step: int, config: RunConfig) -> list[Split]:
    """The branch's data: the parent's for the phases it keeps (read and checked), new draws for the new ones."""
    kept = 0 if step == 0 else parent.phase_at(step) + 1
    return [parent.data(i) if i < kept else make_split(config.task, ph.p, ph.k) for i, ph in enumerate(config.train.phases)]


def branch_many(plans: list[BranchPlan], *, device: str = "cpu", force: bool = False, progress: bool = True) -> list[Run]:
    """Create every branch directory, then train them: branches of one shape and restart step batched."""
    from circuitpath.training.train import _shape_key, resume_groups

    _check_targets(plans, force)
    made: list[Path] = []
    try:
        for plan in plans:
            _create(plan, force, device)
            made.append(plan.out)
    except BaseException:
        for path in made:  # no half-written set of branches is left
            shutil.rmtree(path, ignore_errors=True)
        raise
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, plan in enumerate(plans):
        groups[(_shape_key(plan.config), plan.restart)].append(index)
    order = list(groups.values())
    trained = resume_groups([[plans[i].out for i in group] for group in order], device=device, progress=progress,
                            note_resume=False)
    runs: dict[int, Run] = {i: run for group, result in zip(order, trained) for i, run in zip(group, result)}
    for index, plan in enumerate(plans):
        if plan.replays:
            _check_replay(plan, runs[index])
    return [runs[i] for i in range(len(plans))]


def branch(parent: str | Path | Run, step: int, phases: tuple[Phase, ...], out: str | Path, *,
           new_phase: bool = False, device: str = "cpu", force: bool = False, progress: bool = True,
           allow_other_platform: bool = False) -> Run:
    """Branch one run at `step` with `phases` into `out`, train it, and return it."""
    parent = parent if isinstance(parent, Run) else load_run(parent)
    plan = plan_branch(parent, step, phases, out, new_phase, allow_other_platform=allow_other_platform, device=device)
    return branch_many([plan], device=device, force=force, progress=progress)[0]


def find_runs(root: str | Path) -> list[Path]:
    """`root` itself when it is a run, else every run directory below it (a sweep's), sorted."""
    root = Path(root)
    if (root / RUN_JSON).is_file():
        return [root]
    if not root.is_dir():
        raise RunError(f"{root} is neither a run nor a directory of runs")
    runs = sorted(p.parent for p in root.rglob(RUN_JSON) if not any(a.name.startswith(".") for a in p.parents))
    if not runs:
        raise RunError(f"{root} holds no run directory")
    return runs


# ---- creating a branch directory ------------------------------------------------------------------
def _check_targets(plans: list[BranchPlan], force: bool) -> None:
    outs = [plan.out.resolve() for plan in plans]
    if len(set(outs)) != len(outs):
        raise BranchError("two branches share an output directory")
    for plan, out in zip(plans, outs):
        parent = plan.parent.path.resolve()
        if out == parent or parent in out.parents or out in parent.parents:
            raise BranchError(f"the branch output {plan.out} overlaps its parent {plan.parent.path}")
        RunWriter.check_target(plan.out, force)


def _create(plan: BranchPlan, force: bool, device: str = "cpu") -> None:
    """The branch's directory, its run.json naming the parent, and the parent's records; removed if any step fails."""
    writer = RunWriter.create(plan.out, plan.config, plan.splits, force=force, device=str(device))
    try:
        writer.set_status("running", **{BRANCH_KEY: plan.describe()})
        if plan.step > 0:
            _copy_records(plan, writer)
    except BaseException:
        writer.close()
        shutil.rmtree(plan.out, ignore_errors=True)
        raise
    writer.close()


def _copy_records(plan: BranchPlan, writer: RunWriter) -> None:
    """The parent's checkpoints and metric lines up to the restart step, and a state to restart from."""
    parent, restart = plan.parent, plan.restart
    for step in (s for s in parent.steps if s <= restart):
        write_atomic(writer.path / CHECKPOINT_DIR / step_file(step), parent.checkpoint_path(step).read_bytes())
    writer.metrics = _metric_lines(parent, restart)
    writer.flush_metrics()
    phase = parent.phase_at(restart)
    local = restart - parent.config.train.phase_starts()[phase]
    size = Layout.of(parent.config.model).size
    state, adam_step = {"m": torch.zeros(size), "v": torch.zeros(size)}, 0
    if plan.continues and not plan.replays:
        tensors, meta = _state_at(parent, restart)
        state, adam_step = {"m": tensors["m"], "v": tensors["v"]}, int(json.loads(meta["adam_step"]))
    # a state saved at a phase's end means "next phase, fresh Adam" to resume; mid-phase, these moments
    writer.save_state(restart, phase, state, {"local": local, "adam_step": adam_step})


def _metric_lines(parent: Run, step: int) -> list[dict]:
    """The parent's metric lines up to and including the record of `step` in the phase its checkpoint belongs to."""
    phase = parent.phase_at(step)
    lines = [m for m in parent.metrics if m["step"] < step or (m["step"] == step and m["phase"] == phase)]
    if not lines or (lines[-1]["step"], lines[-1]["phase"]) != (step, phase):
        raise BranchError(f"{parent.path / METRICS} has no line for step {step}; the run's records are incomplete")
    return lines


def _state_at(parent: Run, step: int):
    """The parent's saved optimiser state at `step` (tensors, metadata), or None when it was not kept."""
    if step not in saved_steps(parent.path / STATE_DIR):
        return None
    tensors, meta = load_tensors(parent.path / STATE_DIR / step_file(step))
    local = step - parent.config.train.phase_starts()[parent.phase_at(step)]
    if int(meta["phase"]) != parent.phase_at(step) or int(json.loads(meta["local"])) != local:
        return None
    return tensors, meta


def _check_replay(plan: BranchPlan, run: Run) -> None:
    ours = run.path / CHECKPOINT_DIR / step_file(plan.step)
    theirs = plan.parent.checkpoint_path(plan.step)
    if not ours.is_file() or ours.read_bytes() != theirs.read_bytes():
        _mark(run, "failed", error="replay diverged from the parent")
        raise BranchError(f"replaying {plan.parent.path} from step {plan.restart} did not give its checkpoint at step "
                          f"{plan.step} back (training was not reproducible here); {run.path} is marked failed")


def _mark(run: Run, status: str, **extra) -> None:
    writer = RunWriter.reopen(run)
    try:
        writer.set_status(status, **extra)
    finally:
        writer.close()


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


__all__ = ["BRANCH_KEY", "BranchError", "BranchPlan", "branch", "branch_config", "branch_many", "find_runs", "plan_branch"]
