"""Training entry points: one run, S runs batched, several groups at once, and resume.

A run is a list of phases (p, steps, lr, batch size). Runs trained in one group share their shapes
and phase structure (p, steps, batch size) but not their seeds or learning rates; each is written to
its own run directory and equals what training it alone gives. Groups of different structure (the
paper's scratch and curriculum runs) can train at the same time, one per CPU core.

The loop itself is `loop.GroupTrainer`; this module creates and reopens run directories, restores
resume state, and owns what is process-wide: the Ctrl-C handler and the CPU threads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

from circuitpath import pinning, platform
from circuitpath.config import RunConfig
from circuitpath.data import make_split
from circuitpath.errors import ConfigError, RunError
from circuitpath.models.weights import init_weights
from circuitpath.runs import CHECKPOINT_DIR, STATE_DIR, Run, RunWriter, load_run, saved_steps, step_file
from circuitpath.runs.storage import load_tensors
from circuitpath.training import processes
from circuitpath.training.engine import Executor, Layout
from circuitpath.training.heap import keep_freed_memory
from circuitpath.training.loop import GroupTrainer, Interrupted, Position, checkpoint_schedule, log_schedule

Group = tuple[list[RunConfig], list[Path]]


def _shape_key(config: RunConfig) -> tuple:
    task, model, train = config.task, config.model, config.train
    phases = tuple((ph.p, ph.steps, ph.batch_size, tuple(ph.recipe.values())) for ph in train.phases)
    return (task.n_ctx, task.k, task.n_train, task.n_test, model.to_shape(), phases,
            train.log_every, train.checkpoint_every, train.dense_checkpoints, train.extra_checkpoints)


def _check_group(configs: list[RunConfig], outs: list[Path]) -> None:
    if not configs:
        raise ConfigError("no run to train")
    if len(configs) != len(outs):
        raise ConfigError(f"each config needs its output directory: got {len(configs)} config{'s' * (len(configs) != 1)} "
                          f"and {len(outs)} director{'ies' if len(outs) != 1 else 'y'}")
    if len({Path(o).resolve() for o in outs}) != len(outs):
        raise ConfigError("two runs of one batch share an output directory")
    key = _shape_key(configs[0])
    for config in configs[1:]:
        if _shape_key(config) != key:
            raise ConfigError(
                "runs trained together must share shapes, phases (p, steps, batch size, optimiser recipe) and schedules; "
                "only seeds and learning rates may differ"
            )


def train(config: RunConfig, out: str | Path, *, device: str = "cpu", force: bool = False, progress: bool = True) -> Run:
    """Train one run into directory `out` and return it."""
    return train_many([config], [out], device=device, force=force, progress=progress)[0]


def train_many(
    configs: list[RunConfig],
    outs: list[str | Path],
    *,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> list[Run]:
    """Train S runs of one structure in one batched computation, each into its own run directory."""
    return train_groups([(configs, outs)], device=device, force=force, progress=progress, workers=workers)[0]


def train_groups(
    groups: list[tuple[list[RunConfig], list[str | Path]]],
    *,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> list[list[Run]]:
    """Train several groups at the same time (each batched); every target is checked before any is written.

    `workers`: CPU workers (default: one per core): threads, or processes for long torch-engine
    work (`processes.process_count`); a run's bytes depend on neither.
    """
    groups = [(list(configs), [Path(o) for o in outs]) for configs, outs in groups]
    all_outs = [out for _, outs in groups for out in outs]
    if len({o.resolve() for o in all_outs}) != len(all_outs):
        raise ConfigError("two runs share an output directory")
    for configs, outs in groups:
        _check_group(configs, outs)
    torch_device = resolve_device(device)
    for out in all_outs:
        RunWriter.check_target(out, force)
    splits = [[[make_split(c.task, ph.p, ph.k) for ph in c.train.phases] for c in configs] for configs, _ in groups]
    writers: list[list[RunWriter]] = []
    try:
        for (configs, outs), group_splits in zip(groups, splits):
            writers.append([])
            for config, out, split in zip(configs, outs, group_splits):
                writers[-1].append(RunWriter.create(out, config, split, force=force, device=torch_device.type))
    except BaseException:
        for writer in (w for group in writers for w in group):  # no half-written set of runs is left
            writer.close()
            shutil.rmtree(writer.path, ignore_errors=True)
        raise
    if count := processes.process_count([configs for configs, _ in groups], torch_device, workers):
        for writer in (w for group in writers for w in group):
            writer.close()  # created, not started: each process resumes its share from the initial weights
        return processes.train_in_processes([outs for _, outs in groups], count, progress=progress,
                                            note_resume=False, allow_other_platform=False)
    trainers = []
    for (configs, _), group_writers, group_splits in zip(groups, writers, splits):
        theta = Layout.of(configs[0].model).pack([init_weights(c.model) for c in configs]).to(torch_device)
        trainers.append(GroupTrainer(configs, group_writers, group_splits, theta, Position()))
    return _run(trainers, progress, workers)


def resume(paths: str | Path | list[str | Path], *, device: str = "cpu", progress: bool = True,
           workers: int | None = None, allow_other_platform: bool = False) -> list[Run]:
    """Continue runs of one group (or one run: a single path) from their last common saved state; the result
    equals an uninterrupted run.

    Runs that were killed before their first checkpoint start again from their initial weights. When
    every run is completed there is nothing to do: they are returned untouched.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    return resume_groups([paths], device=device, progress=progress, workers=workers,
                         allow_other_platform=allow_other_platform)[0]


def resume_groups(
    groups: list[list[str | Path]],
    *,
    device: str = "cpu",
    progress: bool = True,
    note_resume: bool = True,
    workers: int | None = None,
    allow_other_platform: bool = False,
) -> list[list[Run]]:
    """`resume` for several groups at the same time (each batched, as `train_groups` trains them).

    Every group is read and checked, and every lock taken, before any training starts. A completed
    group is returned untouched. `note_resume=False` leaves `resumed_from` out of run.json (a branch's
    first start is no resume). A run written on another platform (torch version, device, CPU kernel
    set: see `platform`) is refused unless `allow_other_platform`: its bytes would differ from an
    uninterrupted run's.
    """
    runs = [[load_run(p) for p in paths] for paths in groups]
    pending = [i for i, group in enumerate(runs) if not all(run.status == "completed" for run in group)]
    for i in pending:
        _check_group([run.config for run in runs[i]], [run.path for run in runs[i]])
        for run in runs[i]:
            platform.check(run.info.get(platform.KEY), f"the run {run.path}", allow=allow_other_platform, device=device,
                           pinned=run.info.get(pinning.KEY))
    all_paths = [run.path.resolve() for i in pending for run in runs[i]]
    if len(set(all_paths)) != len(all_paths):
        raise ConfigError("two runs share an output directory")
    torch_device = resolve_device(device) if pending else None
    if pending and (count := processes.process_count([[r.config for r in runs[i]] for i in pending], torch_device,
                                                      workers)):
        trained = processes.train_in_processes([[r.path for r in runs[i]] for i in pending], count,
                                               progress=progress, note_resume=note_resume,
                                               allow_other_platform=allow_other_platform)
        return [dict(zip(pending, trained)).get(i, group) for i, group in enumerate(runs)]
    writers: list[list[RunWriter]] = []
    trainers = []
    try:
        for i in pending:
            writers.append([RunWriter.reopen(run) for run in runs[i]])
            configs = [run.config for run in runs[i]]
            theta, start, adam_state = _restart_point(runs[i], writers[-1])
            for writer in writers[-1]:
                extra = {"resumed_from": start.step(configs[0].train)} if note_resume else {}
                writer.set_status("running", **extra)
            if adam_state is not None:
                adam_state = (adam_state[0].to(torch_device), adam_state[1].to(torch_device), adam_state[2])
            splits = [[run.data(j) for j in range(len(run.config.train.phases))] for run in runs[i]]
            trainers.append(GroupTrainer(configs, writers[-1], splits, theta.to(torch_device), start, adam_state))
    except BaseException:
        for writer in (w for group in writers for w in group):
            writer.close()
        raise
    results = _run(trainers, progress, workers) if trainers else []
    trained = dict(zip(pending, results))
    return [trained.get(i, group) for i, group in enumerate(runs)]


# ---- the orchestrator: Ctrl-C and CPU threads for every group at once -------------------------------
def _run(trainers: list[GroupTrainer], progress: bool, workers: int | None) -> list[list[Run]]:
    """Run the groups' loops, concurrently when there are several, and collect their runs.

    On the CPU every kernel runs on one thread, whatever the caller set: a run's bytes must not
    depend on the thread count (engine.Executor). The cores are used across runs instead: one
    worker per core (`workers`, default all the cores) takes the runs of every group in turn.
    """
    on_cpu = trainers[0].theta.device.type == "cpu"
    if on_cpu:
        keep_freed_memory()  # no page faults for the activations each step frees and takes again
    units = sum(len(Executor(len(t.writers), t.theta.device, cfg=t.model_cfg, train=t.train_cfg).chunks) for t in trainers)
    cores = min(workers or os.cpu_count() or 1, units)
    parallel = on_cpu and cores > 1
    stop = threading.Event()
    with _stop_on_signals(stop), _kernel_threads(1 if on_cpu else None), ThreadPoolExecutor(cores if parallel else 1) as pool:
        for position, trainer in enumerate(trainers):
            trainer.stop, trainer.progress, trainer.bar_position = stop, progress, position
            trainer.pool = pool if parallel else None
        if len(trainers) == 1 or not on_cpu:
            outcomes = [_outcome(t.run) for t in trainers]
        else:
            with ThreadPoolExecutor(len(trainers)) as group_threads:
                outcomes = list(group_threads.map(_outcome, [t.run for t in trainers]))
    return _results(outcomes)


def _outcome(fn):
    try:
        return fn(), None
    except BaseException as error:  # collected so every group finishes saving before raising
        return None, error


def _results(outcomes) -> list[list[Run]]:
    errors = [error for _, error in outcomes if error is not None]
    stopped = [e for e in errors if isinstance(e, Interrupted)]
    others = [e for e in errors if not isinstance(e, Interrupted)]
    if others:
        raise others[0]
    if stopped:
        raise Interrupted([run for e in stopped for run in e.runs], min(e.step for e in stopped))
    return [runs for runs, _ in outcomes]


@contextmanager
def _stop_on_signals(stop: threading.Event):
    """Turn SIGINT (Ctrl-C) and SIGTERM (`kill PID`, a job scheduler's stop) into a stop request that the loops
    honour between two steps. A signal whose handling was chosen elsewhere (not Python's default) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous = {signum: signal.signal(signum, lambda signum, frame: stop.set())
                for signum, default in defaults.items() if signal.getsignal(signum) is default}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _kernel_threads(count: int | None):
    """Run with `count` threads per kernel (None: leave as is); the previous count is restored."""
    threads = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _restart_point(runs: list[Run], writers: list[RunWriter]):
    """Weights, position and Adam state at the last step every run saved a state for.

    Everything is read and checked before anything on disk is changed.
    """
    layout = Layout.of(runs[0].config.model)
    common = set.intersection(*(set(saved_steps(run.path / STATE_DIR)) for run in runs))
    if not common:  # killed before the first checkpoint: start over, unless the run starts from another's weights
        for run in runs:
            if (run.info.get("branch") or {}).get("step", 0) > 0:  # a branch at 0 starts from the initial weights
                raise RunError(f"{run.path} is a branch of {run.info['branch'].get('parent')} at step "
                               f"{run.info['branch'].get('step')}, but its starting state is not in {run.path / STATE_DIR}; "
                               "create the branch again with circuitpath branch")
        for writer in writers:
            _drop_after(writer.path, -1)
            writer.metrics = []
        return layout.pack([init_weights(run.config.model) for run in runs]), Position(), None
    step = max(common)
    states = [load_tensors(run.path / STATE_DIR / step_file(step)) for run in runs]
    theta = layout.pack([run.weights_at(step) for run in runs])
    for writer, (_, meta) in zip(writers, states):
        writer.metrics = writer.metrics[: int(meta["n_metrics"])]
        _drop_after(writer.path, step)
    meta = states[0][1]
    phase, local = int(meta["phase"]), int(json.loads(meta["local"]))
    if local == runs[0].config.train.phases[phase].steps:  # saved at a phase's end: next phase, fresh Adam
        return theta, Position(phase + 1, 0, False), None
    adam_state = (  # states saved before rows were padded are padded here
        layout.pad(torch.stack([tensors["m"] for tensors, _ in states])),
        layout.pad(torch.stack([tensors["v"] for tensors, _ in states])),
        int(json.loads(meta["adam_step"])),
    )
    return theta, Position(phase, local, True), adam_state


def _drop_after(path: Path, step: int) -> None:
    """Remove checkpoints and states past `step` (all of them for -1): the resumed run writes them again."""
    for sub in (CHECKPOINT_DIR, STATE_DIR):
        for later in saved_steps(path / sub):
            if later > step:
                (path / sub / step_file(later)).unlink()


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r} (use cpu or cuda)") from None


__all__ = ["Interrupted", "checkpoint_schedule", "log_schedule", "resume", "resume_groups", "train", "train_groups",
           "train_many"]
