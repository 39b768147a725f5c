"""Bringing a sweep's runs to completion from whatever state a crash left them in, and pruning checkpoints.

A run path of a sweep is in one of four states:
- completed: its run.json says so; nothing to do;
- started: run.json exists but the run did not complete (interrupted, failed, or killed while
  running): resumed from its last saved state (`train.resume`), or from the start if it saved none;
- stub: no run.json, only what `RunWriter.create` writes before it (the lock file, data, empty
  checkpoint and state folders): the process died while creating it; removed under its lock, then trained;
- missing: trained from the start.
Anything else at a run path (a file, a folder with other content) is refused, never deleted.

Both backends finish runs through `finish_runs`. A Ray task retried after its worker died runs
`train_chunk` again on the same seeds, so the retry resumes what the killed attempt left.
"""

from __future__ import annotations

import re
import shutil
from itertools import groupby
from pathlib import Path

from circuitpath.config import RunConfig
from circuitpath.errors import RunError
from circuitpath.runs import CHECKPOINT_DIR, DATA_DIR, RUN_JSON, STATE_DIR, load_run, saved_steps, step_file
from circuitpath.runs.storage import RunLock
from circuitpath.sweep.spec import configs, run_path
from circuitpath.training.train import resume, train_many

_STUB_PARTS = {RunLock.FILE, DATA_DIR, CHECKPOINT_DIR, STATE_DIR}
_DATA_FILE = re.compile(r"^\.?phase_\d+\.safetensors")  # a data file, or the temporary file of one


def run_state(path: Path, config: RunConfig | None = None) -> str:
    """completed, started, stub or missing (see the module's docstring); RunError for anything else."""
    if not path.exists():
        return "missing"
    if not path.is_dir():
        raise RunError(f"{path} exists and is not a directory; refusing to replace it")
    if (path / RUN_JSON).is_file():
        run = load_run(path)
        if config is not None and run.config != config:
            raise RunError(f"{path} holds a run configured unlike this sweep's; move it away to retrain it")
        return "completed" if run.status == "completed" else "started"
    if not _is_stub(path):
        raise RunError(f"{path} exists, is not empty and is not a run; refusing to replace it")
    return "stub" if any(path.iterdir()) else "missing"


def _is_stub(path: Path) -> bool:
    entries = {entry.name: entry for entry in path.iterdir()}
    if not entries.keys() <= _STUB_PARTS:
        return False
    for name in (CHECKPOINT_DIR, STATE_DIR):
        if name in entries and (not entries[name].is_dir() or any(entries[name].iterdir())):
            return False
    data = entries.get(DATA_DIR)
    return data is None or (data.is_dir() and all(_DATA_FILE.match(f.name) for f in data.iterdir()))


def _clear_stub(path: Path) -> None:
    lock = RunLock(path).acquire()  # refuses if a live process is still creating it
    try:
        if not _is_stub(path):
            raise RunError(f"{path} changed while it was being cleared; refusing to touch it")
        shutil.rmtree(path)
    finally:
        lock.release()


def finish_runs(run_configs: list[RunConfig], paths: list[Path], *, device: str = "cpu", progress: bool = True,
                workers: int | None = None, allow_other_platform: bool = False) -> int:
    """Resume the started runs, train the stubs and missing ones; return how many runs were trained.

    Started runs are resumed in groups that saved their last state at the same step (a run of a
    chunk that was killed between two runs' saves is resumed apart, from its own last state).
    """
    states = [run_state(p, c) for c, p in zip(run_configs, paths)]
    started = [p for p, s in zip(paths, states) if s == "started"]
    fresh = [(c, p) for c, p, s in zip(run_configs, paths, states) if s in ("stub", "missing")]
    for path, state in zip(paths, states):
        if state == "stub":
            _clear_stub(path)
    last_state = lambda p: max(saved_steps(p / STATE_DIR), default=-1)  # noqa: E731
    for _, group in groupby(sorted(started, key=last_state), key=last_state):
        resume(list(group), device=device, progress=progress, workers=workers, allow_other_platform=allow_other_platform)
    if fresh:
        train_many([c for c, _ in fresh], [p for _, p in fresh], device=device, progress=progress, workers=workers)
    return len(started) + len(fresh)


def pending_seeds(out: Path, spec: dict, experiment: str) -> list[int]:
    """Seeds of an experiment whose run is not completed (nothing is read beyond run.json)."""
    return [s for s in spec["seeds"] if not _completed(run_path(out, experiment, s))]


def _completed(path: Path) -> bool:
    return (path / RUN_JSON).is_file() and load_run(path).status == "completed"


def train_chunk(spec: dict, experiment: str, seeds: list[int], out: str | Path, device: str = "cpu",
                progress: bool = False, workers: int | None = None, allow_other_platform: bool = False) -> list[int]:
    """Finish the runs of some seeds of one experiment and prune them as the spec says; safe to repeat."""
    paths = [run_path(out, experiment, s) for s in seeds]
    finish_runs(configs(spec, experiment, seeds), paths, device=device, progress=progress, workers=workers,
                allow_other_platform=allow_other_platform)
    if spec["keep_checkpoints"] == "ends":
        for path in paths:
            prune_checkpoints(path)
    return seeds


def kept_steps(path: Path) -> set[int]:
    """Steps that `--keep-checkpoints ends` keeps: the first, each phase's end, and the last."""
    train = load_run(path).config.train
    return {0, *train.phase_starts()[1:], train.total_steps}


def prune_checkpoints(path: Path) -> int:
    """Delete a completed run's checkpoints but the kept steps, and its resume states but the last.

    Only completed runs are pruned, so an unfinished run keeps everything `--resume` needs. The
    last state stays with its checkpoint, so resuming a completed run still finds nothing to redo.
    Returns how many files were removed.
    """
    if not _completed(path):
        return 0
    keep = kept_steps(path)
    lock = RunLock(path).acquire()
    try:
        removed = 0
        for step in saved_steps(path / CHECKPOINT_DIR):
            if step not in keep:
                (path / CHECKPOINT_DIR / step_file(step)).unlink()
                removed += 1
        states = saved_steps(path / STATE_DIR)
        last = max((s for s in states if s in keep), default=None)
        for step in states:
            if step != last:
                (path / STATE_DIR / step_file(step)).unlink()
                removed += 1
        return removed
    finally:
        lock.release()
