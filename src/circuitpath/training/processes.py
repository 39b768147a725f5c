"""Training groups across processes, one per core, when the torch engine trains long on the CPU.

On the CPU a run computes its step as ~150 small single-threaded kernels. Two threads of one
process pass the interpreter lock back and forth at every kernel, so a second worker thread adds
little (`benchmarks/bench_train.py`: a group of 8 at the paper's size, 3.60 ms a run-step in two
threads, 2.67 ms in two processes). Large groups therefore train in worker processes: the caller creates (or checks)
every run directory first, then each process resumes its share of the runs (runs k, k + W, ... of
every group), one group after another, and this process shows one progress bar over all of them.
A run's bytes do not depend on its group, its process or how many there are (engine.Executor),
so the choice changes speed only; it is made from the configs alone all the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from circuitpath import errors
from circuitpath.config import RunConfig
from circuitpath.runs import CHECKPOINT_DIR, METRICS, Run, load_run, saved_steps
from circuitpath.training.fused import takes_fused_path
from circuitpath.training.loop import Interrupted

#: Work (runs x steps x sequences x d_model x d_mlp) from which processes pay for their ~4 s start:
#: ~10 s of training at the paper's size on one core.
MIN_WORK = 3e10


def process_count(groups: list[list[RunConfig]], device, workers: int | None) -> int:
    """How many processes to train these groups in: 0 (train here) unless the torch engine has long work."""
    cores = workers or os.cpu_count() or 1
    runs = sum(len(configs) for configs in groups)
    if device.type != "cpu" or cores < 2 or runs < 2:
        return 0
    work = sum(c.train.total_steps * c.task.n_train * c.model.d_model * c.model.d_mlp
               for configs in groups for c in configs if not takes_fused_path(c.model, device, c.train))
    return min(cores, runs) if work >= MIN_WORK else 0


def train_in_processes(groups: list[list[Path]], processes: int, *, progress: bool, note_resume: bool,
                       allow_other_platform: bool) -> list[list[Run]]:
    """Bring every run of `groups` (created or started runs, no lock held) to completion in `processes` processes.

    Each is a fresh interpreter (`python -m circuitpath.training.worker`), so nothing of this process (its
    threads, its __main__) is copied or imported again.
    """
    shares = [[[str(p) for p in paths[k::processes]] for paths in groups] for k in range(processes)]
    order = {"shares": None, "note_resume": note_resume, "allow_other_platform": allow_other_platform,
             "watch_stdin": True}  # the pipe below: see worker.py
    children = [subprocess.Popen([sys.executable, "-m", "circuitpath.training.worker",
                                  json.dumps({**order, "shares": [p for p in share if p]})],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for share in shares]
    with _stop_signals_to(children):
        _watch(children, groups, progress)
        outcomes = [_outcome(child) for child in children]
    _raise_first(outcomes, groups)
    return [[load_run(path) for path in paths] for paths in groups]


def _outcome(child: subprocess.Popen) -> dict:
    out, _ = child.communicate()
    lines = out.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ended": "died", "code": child.returncode}


def _raise_first(outcomes: list[dict], groups: list[list[Path]]) -> None:
    paths = [path for group in groups for path in group]
    for outcome in outcomes:
        if outcome["ended"] == "error":
            raise getattr(errors, outcome["type"], errors.RunError)(outcome["message"])
        if outcome["ended"] == "died":
            raise errors.RunError(f"a training process died (exit status {outcome['code']}); continue with "
                                  f"circuitpath train --resume on the runs in {paths[0].parent}")
    steps = [outcome["step"] for outcome in outcomes if outcome["ended"] == "interrupted"]
    if steps:
        raise Interrupted(paths, min(steps))


#: Seconds between progress lines where stderr is not a terminal (a log file), which tqdm leaves without a bar.
LOG_EVERY = 600.0


def _reached(path: Path) -> int:
    """The last step a run has saved or logged (its metrics' last line): its progress also between checkpoints, which
    runs that keep only their ends save hours apart."""
    reached = max(saved_steps(path / CHECKPOINT_DIR), default=0)
    try:
        with open(path / METRICS, "rb") as metrics:
            metrics.seek(max(0, metrics.seek(0, os.SEEK_END) - 4096))
            return max(reached, int(json.loads(metrics.read().splitlines()[-1])["step"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError):  # no line yet, or one being replaced
        return reached


def _watch(children: list[subprocess.Popen], groups: list[list[Path]], progress: bool) -> None:
    """One progress bar over every run's steps until the processes end; into a log, a line every LOG_EVERY seconds
    instead, and one at the end."""
    paths = [path for group in groups for path in group]
    total = sum(load_run(path).config.train.total_steps for path in paths)
    to_log = progress and not sys.stderr.isatty()
    start = time.monotonic()
    at_start, next_line = None, start + LOG_EVERY
    with tqdm(total=total, desc=f"{len(paths)} runs in {len(children)} processes", unit="step",
              dynamic_ncols=True, disable=None if progress else True, mininterval=1.0) as bar:
        while any(child.poll() is None for child in children):
            time.sleep(0.5)
            done = sum(_reached(p) for p in paths)
            bar.update(done - bar.n)
            at_start = done if at_start is None else min(at_start, done)  # a resume may drop steps past a checkpoint
            if to_log and time.monotonic() >= next_line:
                print(progress_line(done, total, done - at_start, time.monotonic() - start), file=sys.stderr,
                      flush=True)
                next_line += LOG_EVERY
    if to_log and at_start is not None:
        done = sum(_reached(p) for p in paths)
        print(progress_line(done, total, done - at_start, time.monotonic() - start), file=sys.stderr, flush=True)


def progress_line(done: int, total: int, gained: int, seconds: float) -> str:
    """E.g. '2 250 of 816 000 run-steps done (0.3%); 1 500 in 10 min here, about 90.4 h left at that rate'."""
    def span(s: float) -> str:
        return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.0f} min"

    def count(n: int) -> str:
        return f"{n:,}".replace(",", " ")

    left = (f"about {span((total - done) * seconds / gained)} left at that rate" if gained > 0
            else "no rate yet (none done by this command)")
    return (f"{count(done)} of {count(total)} run-steps done ({100 * done / max(total, 1):.1f}%); "
            f"{count(gained)} in {span(seconds)} here, {left}")


class _stop_signals_to:
    """Ctrl-C here (or SIGTERM, left at its default) is passed on to the worker processes as Ctrl-C: they save a
    checkpoint and stop."""

    def __init__(self, children: list[subprocess.Popen]):
        self.children, self.previous, self.sent = children, {}, False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._forward)
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                self.previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._forward)
        return self

    def _forward(self, signum, frame) -> None:
        if self.sent:
            return
        self.sent = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

