"""Many seeds of the paper's experiments, trained batched, and how often each one succeeds.

```
OUT/
  sweep.json                       seeds, experiments (name -> phases), task and model settings, checkpoint policy
  <experiment>/seed_<N>/           an ordinary run directory per (experiment, seed)
  summary.json                     every run's config, final metrics and verdicts (written when the sweep ends)
  sweep.html                       the success-rate figure (written by the command line)
```

Two backends train the same runs into the same files: `local` (this machine; one batched group
per experiment, spread over its cores) and `ray` (chunks of seeds as tasks on a Ray cluster,
`sweep.ray_backend`, imported only when asked for). With batch-invariant training the runs, and so
the table, do not depend on the backend or the chunking.

`keep_checkpoints="ends"` keeps, of each completed run, the checkpoints at step 0, at each phase end
and at the last step (and the last resume state). Runs are pruned only once completed, so an
unfinished run keeps all that `--resume` needs; the choice is stored in sweep.json and a resume
applies it (or the one it is given) to every completed run.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from circuitpath.config import ModelConfig, TaskConfig, TrainConfig
from circuitpath.errors import ConfigError, RunError
from circuitpath.runs import RUN_JSON, RunWriter
from circuitpath.runs.storage import RunLock
from circuitpath.sweep.finish import pending_seeds, prune_checkpoints, train_chunk
from circuitpath.sweep.spec import (
    SWEEP_JSON, check_keep, check_out, configs, load_spec, make_out, make_spec, parse_experiments, parse_seeds, run_path,
    write_spec,
)
from circuitpath.sweep.summary import SUMMARY_JSON, ExperimentSummary, read_summary, summary_lines, write_summary
from circuitpath.training.train import resolve_device, train_groups

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RayOptions:
    """Where and how a Ray sweep runs."""

    address: str | None = None
    """HOST:PORT of the cluster's head (`ray start --head` prints it), ray://HOST:PORT, or auto;
    None starts a local Ray instance for the sweep and stops it after."""
    cpus: int | None = None
    """CPUs of the local instance (default: all of this machine's); only without `address`."""
    chunk: int | None = None
    """Seeds one task trains, batched (default: the engine's chunk on CPU, every seed of an experiment on GPU)."""
    retries: int = 3
    """Times a task whose worker died is started again."""

    def __post_init__(self):
        if self.address is not None and self.address != "auto":
            host, _, port = self.address.removeprefix("ray://").rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"--address is HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:PORT or auto, "
                                  f"got {self.address!r}")
        if self.cpus is not None and self.cpus < 1:
            raise ConfigError(f"--cpus must be at least 1, got {self.cpus}")
        if self.cpus is not None and self.address is not None:
            raise ConfigError("--cpus sizes a local Ray instance; a cluster given by --address has its own")
        if self.chunk is not None and self.chunk < 1:
            raise ConfigError(f"--chunk must be at least 1 seed, got {self.chunk}")
        if self.retries < 0:
            raise ConfigError(f"--retries must be 0 or more, got {self.retries}")


def _check_backend(backend: str, ray: RayOptions | None) -> RayOptions | None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r} (use local or ray)")
    if backend == "local" and ray is not None:
        raise ConfigError("--address, --cpus, --chunk and --retries apply to --backend ray")
    return (ray or RayOptions()) if backend == "ray" else None


def sweep(
    out: str | Path,
    seeds: list[int],
    experiments: dict[str, str],
    *,
    task: TaskConfig | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    device: str = "cpu",
    force: bool = False,
    keep_checkpoints: str = "all",
    backend: str = "local",
    ray: RayOptions | None = None,
    progress: bool = True,
) -> dict[str, ExperimentSummary]:
    """Train every (experiment, seed) run and write OUT/summary.json; everything is checked before a file is written.

    `train` sets how often every run logs and checkpoints (`spec.TRAIN_FIELDS`); each experiment sets its phases."""
    out = Path(out)
    ray = _check_backend(backend, ray)
    task = task or TaskConfig()
    model = model or ModelConfig(n_ctx=task.n_ctx)
    spec = make_spec(seeds, experiments, task, model, keep_checkpoints, train)
    check_out(out)
    if (out / SWEEP_JSON).exists() and not force:
        raise RunError(f"{out} already holds a sweep; pass --force to replace it, or --resume to continue it "
                       "(in Python: force=True, or resume_sweep)")
    paths = [run_path(out, name, seed) for name in experiments for seed in seeds]
    for path in paths:
        RunWriter.check_target(path, force)
    with _backend(ray, device, {name: list(seeds) for name in experiments}) as train_pending:
        make_out(out)
        (out / SUMMARY_JSON).unlink(missing_ok=True)
        write_spec(out, spec)
        if ray is None:  # the local backend as it always was: every experiment's group at once
            groups = [(configs(spec, name), [run_path(out, name, s) for s in seeds]) for name in experiments]
            train_groups(groups, device=device, force=force, progress=progress)
        else:
            if force:
                _remove_runs(paths)
            train_pending(out, spec, progress)
    return _conclude(out, spec)


def resume_sweep(
    out: str | Path,
    *,
    device: str = "cpu",
    keep_checkpoints: str | None = None,
    backend: str = "local",
    ray: RayOptions | None = None,
    progress: bool = True,
    allow_other_platform: bool = False,
) -> dict[str, ExperimentSummary]:
    """Finish every run of a sweep that has not completed, prune as the sweep says, rewrite summary.json.

    A started run written on another platform (see `platform`) is refused unless `allow_other_platform`.
    """
    out = Path(out)
    ray = _check_backend(backend, ray)
    spec = load_spec(out)
    if keep_checkpoints is not None:
        spec["keep_checkpoints"] = check_keep(keep_checkpoints)
    pending = pending_runs(out, spec)
    if pending:
        with _backend(ray, device, pending, allow_other_platform) as train_pending:
            (out / SUMMARY_JSON).unlink(missing_ok=True)
            write_spec(out, spec)
            train_pending(out, spec, progress)
    elif keep_checkpoints is not None:
        write_spec(out, spec)
    return _conclude(out, spec)


def pending_runs(out: str | Path, spec: dict | None = None) -> dict[str, list[int]]:
    """Seeds of each experiment whose run has not completed (experiments with none are left out)."""
    spec = spec or load_spec(out)
    pending = {name: pending_seeds(Path(out), spec, name) for name in spec["experiments"]}
    return {name: seeds for name, seeds in pending.items() if seeds}


def _conclude(out: Path, spec: dict) -> dict[str, ExperimentSummary]:
    if spec["keep_checkpoints"] == "ends":
        for name in spec["experiments"]:
            for seed in spec["seeds"]:
                prune_checkpoints(run_path(out, name, seed))
    return write_summary(out)


@contextmanager
def _backend(ray: RayOptions | None, device: str, pending: dict[str, list[int]], allow_other_platform: bool = False):
    """Check the device and reach the cluster before anything is written; yield what trains `pending`."""
    if ray is None:
        resolve_device(device)
        yield lambda out, spec, progress: [train_chunk(spec, name, seeds, out, device=device, progress=progress,
                                                       allow_other_platform=allow_other_platform)
                                           for name, seeds in pending.items()]
        return
    from circuitpath.sweep import ray_backend  # ConfigError, saying how to install it, when Ray is missing

    if device != "cuda":
        resolve_device(device)  # a GPU may be on the cluster's nodes rather than here: Ray checks that
    size = ray.chunk or (ray_backend.RUNS_PER_CPU if device != "cuda" else max(len(seeds) for seeds in pending.values()))
    jobs = [(name, seeds[i:i + size]) for name, seeds in pending.items() for i in range(0, len(seeds), size)]
    with ray_backend.connected(ray.address, ray.cpus):
        resources = ray_backend.task_resources(device, size)
        yield lambda out, spec, progress: ray_backend.run_chunks(
            out, spec, jobs, device=device, resources=resources, retries=ray.retries, progress=progress,
            allow_other_platform=allow_other_platform)


def _remove_runs(paths: list[Path]) -> None:
    """--force on the Ray backend: old runs go before the tasks start, each under its lock."""
    for path in paths:
        if (path / RUN_JSON).is_file():
            RunLock(path).acquire().release()
            shutil.rmtree(path)


__all__ = [
    "BACKENDS", "ExperimentSummary", "RayOptions", "SUMMARY_JSON", "SWEEP_JSON", "parse_experiments", "parse_seeds",
    "pending_runs", "read_summary", "resume_sweep", "run_path", "summary_lines", "sweep", "write_summary",
]
