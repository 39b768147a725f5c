"""Sweeps on a Ray cluster (`circuitpath sweep --backend ray`); imported only when that is asked for.

Each Ray task trains a chunk of one experiment's seeds with the batched engine (`finish.train_chunk`)
and writes their run directories under the sweep's output path, which every node must see at the
same path (a shared file system). A task whose worker dies is retried (Ray's `max_retries`); the
retry resumes or replaces what the dead attempt left, run by run. Every node needs circuitpath and
torch installed, at the versions of the machine that starts the sweep.

CPU threads: a task reserves one CPU per `RUNS_PER_CPU` of its seeds (one such task by default) and
trains them with single-threaded kernels on one worker thread per reserved CPU, as the local backend
does over the machine's cores; a run's bytes are the same either way (engine.Executor). Each task's
worker starts with this process's kernel pinning (`circuitpath.pinning`) in its environment.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from circuitpath import pinning
from circuitpath.errors import CircuitPathError, ConfigError, RunError
from circuitpath.sweep.finish import train_chunk
from circuitpath.sweep.spec import SWEEP_JSON

try:
    import ray
    import ray.exceptions
except ImportError:
    raise ConfigError("--backend ray needs Ray, which is not installed; install it with: pip install ray "
                      "(or pip install -e '.[ray]' in a circuitpath checkout)") from None

#: Seeds of a Ray task per CPU it reserves (the default task size on the CPU).
RUNS_PER_CPU = 4
#: Object store of a local Ray instance: tasks exchange only seeds and a small spec.
LOCAL_OBJECT_STORE = 100 * 2**20
CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str) -> None:
    """Refuse an address that nothing listens on, at once (Ray itself retries for minutes)."""
    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RunError(f"cannot reach a Ray cluster at {address} ({reason}); start one there with "
                       "`ray start --head`, or leave --address out to start a local one") from None


@contextmanager
def connected(address: str | None, cpus: int | None):
    """Connect to the cluster at `address`, or start a local Ray instance; disconnect (and stop it) after.

    Without an address, Ray's own RAY_ADDRESS variable still names a cluster to join. A process that
    called `ray.init` already keeps its connection, and it is left open.
    """
    if address not in (None, "auto"):
        check_reachable(address)
    if ray.is_initialized():
        if address is not None or cpus is not None:
            raise ConfigError("this process is already connected to Ray; drop --address and --cpus")
        yield
        return
    sigterm_default = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # before Ray puts its own there
    options = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address is None and not os.environ.get("RAY_ADDRESS"):  # a local instance (Ray counts the CPUs it may use)
        options |= {"num_cpus": cpus, "object_store_memory": LOCAL_OBJECT_STORE}
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"at {address}" if address else "locally"
        hint = ("; a cluster with token authentication also needs RAY_AUTH_MODE=token and its token here"
                if address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ else "")
        raise RunError(f"cannot start or join a Ray cluster {where}: {str(error).splitlines()[0]}{hint}") from None
    try:
        with _sigterm_as_ctrl_c(sigterm_default):
            yield
    finally:
        ray.shutdown()


@contextmanager
def _sigterm_as_ctrl_c(was_default: bool):
    """SIGTERM (`kill PID`, a job scheduler's stop) ends a sweep as Ctrl-C does: its tasks are cancelled and the
    local Ray instance shut down, with the line that says how to resume. Ray's own handler would exit at once.
    Only where SIGTERM was left at its default before Ray started, and in the main thread."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    if not was_default or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def task_resources(device: str, chunk: int) -> dict:
    """What one task reserves, checked against the cluster so that no task waits forever."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if device == "cuda":
        if not any(res.get("GPU", 0) >= 1 for res in nodes):
            raise ConfigError("device 'cuda' was asked for but no node of the Ray cluster has a GPU")
        return {"num_cpus": 1, "num_gpus": 1}
    cpus = math.ceil(chunk / RUNS_PER_CPU)
    largest = max((res.get("CPU", 0) for res in nodes), default=0)
    if cpus > largest:
        raise ConfigError(f"--chunk {chunk} needs {cpus} CPUs in one task, but the largest Ray node has {largest:g}; "
                          f"use --chunk {int(largest) * RUNS_PER_CPU} or less")
    return {"num_cpus": cpus}


def train_chunk_task(spec: dict, experiment: str, seeds: list[int], out: str, device: str,
                     allow_other_platform: bool = False) -> list[int]:
    """The body of a Ray task: `finish.train_chunk` on one worker thread per CPU the task reserved."""
    if not (Path(out) / SWEEP_JSON).is_file():
        raise RunError(f"{out} is not visible on Ray node {socket.gethostname()}: --out must be on a file system "
                       "that every node of the cluster sees at the same path")
    torch.set_num_threads(1)
    return train_chunk(spec, experiment, seeds, out, device=device, workers=math.ceil(len(seeds) / RUNS_PER_CPU),
                       allow_other_platform=allow_other_platform)


def run_chunks(out: Path, spec: dict, jobs: list[tuple[str, list[int]]], *, device: str, resources: dict,
               retries: int, progress: bool, allow_other_platform: bool = False) -> None:
    """Run one task per (experiment, seeds) job, a progress bar over finished runs; raise the first failure."""
    remote = ray.remote(train_chunk_task)
    pending = {}
    for experiment, seeds in jobs:
        ref = remote.options(**resources, max_retries=retries, name=f"{experiment} seeds {seeds[0]}..{seeds[-1]}",
                             runtime_env={"env_vars": pinning.environment()})  # set before the worker loads torch
        pending[ref.remote(spec, experiment, seeds, str(out.resolve()), device, allow_other_platform)] = (experiment, seeds)
    failures = []
    with tqdm(total=sum(len(seeds) for _, seeds in jobs), desc=f"{out.name} on Ray", unit="run",
              disable=None if progress else True, dynamic_ncols=True) as bar:
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                experiment, seeds = pending.pop(ref)
                try:
                    ray.get(ref)
                except (ray.exceptions.RayError, CircuitPathError) as error:
                    failures.append(_failure(error, experiment, seeds, out, retries))
                else:
                    bar.update(len(seeds))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    if failures:
        more = f" ({len(failures)} of {len(jobs)} tasks failed)" if len(failures) > 1 else ""
        raise type(failures[0])(f"{failures[0]}{more}")


def _failure(error: Exception, experiment: str, seeds: list[int], out: Path, retries: int) -> Exception:
    """The user's own error from inside a task as it is; a lost worker as one line that says how to go on."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, CircuitPathError):
        return cause
    if isinstance(error, ray.exceptions.RayTaskError):
        raise error  # a bug, not bad input: its traceback is what helps
    return RunError(f"the task training {experiment} seeds {seeds[0]}..{seeds[-1]} did not finish after {retries} "
                    f"retries ({type(error).__name__}); finish the sweep with: "
                    f"circuitpath sweep --resume {out} --backend ray")
