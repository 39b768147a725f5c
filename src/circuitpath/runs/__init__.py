"""The run directory: a run describes itself, and every file in it is written atomically.

```
RUN/
  run.json                               config, status, package version, platform (torch, device, CPU kernels);
                                         each phase's relevant positions when the task's are not the first k
  metrics.jsonl                          one line per logged step
  data/phase_N.safetensors               the exact train/test tensors of phase N
  checkpoints/step_XXXXXXX.safetensors   weights by contract name (metadata: step, phase, model config)
  state/step_XXXXXXX.safetensors         optimiser state of the latest checkpoints (resume)
  analysis/headlines.json                headline numbers written by `circuitpath analyze` / reproduce
```
No pickle anywhere: tensors in safetensors (with a checksum), everything else JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuitpath import pinning, platform
from circuitpath.config import RunConfig, is_whole
from circuitpath.errors import CheckpointError, CircuitPathError, InputError, RunError
from circuitpath.runs.storage import RunLock, load_tensors, read_json, save_tensors, write_atomic, write_json

if TYPE_CHECKING:  # torch and the model load with the first tensor read: `circuitpath show` needs neither
    import torch
    from torch import Tensor

    from circuitpath.data import Split
    from circuitpath.models.model import CrossAttentionTransformer
    from circuitpath.models.transformer import StandardTransformer

RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
DATA_DIR = "data"
CHECKPOINT_DIR = "checkpoints"
STATE_DIR = "state"
ANALYSIS_DIR = "analysis"
FORMAT = 1
STATES_KEPT = 2
_STEP_FILE = re.compile(r"^step_(\d{7,})\.safetensors$")


def step_file(step: int) -> str:
    return f"step_{step:07d}.safetensors"


def data_file(phase: int) -> str:
    return f"phase_{phase}.safetensors"


def saved_steps(directory: Path) -> list[int]:
    """Steps of the `step_XXXXXXX.safetensors` files in a directory, ascending."""
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for f in directory.iterdir() if (m := _STEP_FILE.match(f.name)))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from circuitpath import __version__

    return __version__


@dataclass
class Run:
    """A saved run, read from disk. `model_at(step)` rebuilds the model at any saved step."""

    path: Path
    config: RunConfig
    info: dict[str, Any]
    _metrics: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        return self.info.get("status", "unknown")

    def is_being_written(self) -> bool:
        """Whether a live process holds the run's writer lock (a "running" run without one was killed)."""
        return RunLock(self.path).is_held()

    @property
    def steps(self) -> list[int]:
        """Checkpointed steps, ascending."""
        return saved_steps(self.path / CHECKPOINT_DIR)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One dict per logged step: step, phase, p, lr, train/test loss and accuracy."""
        if self._metrics is None:
            self._metrics = read_metrics(self.path / METRICS)
        return self._metrics

    def final_metrics(self) -> dict[str, Any]:
        if not self.metrics:
            raise RunError(f"{self.path} has no metrics yet")
        return self.metrics[-1]

    def phase_at(self, step: int) -> int:
        """The phase whose weights a checkpoint holds (a boundary step belongs to the phase it ends)."""
        starts = self.config.train.phase_starts()
        return max([0] + [i for i, start in enumerate(starts) if start < step])

    def phase_boundaries(self) -> list[int]:
        """Global steps where a phase ends and the next begins."""
        return self.config.train.phase_starts()[1:]

    def checkpoint_path(self, step: int) -> Path:
        if not _is_step(step, negative=True):  # a negative one is not saved: said below, with the nearest saved
            raise InputError(f"a step is a whole number of steps, got {step!r}")
        steps = self.steps
        if step not in steps:
            raise CheckpointError(f"step {step} was not saved in {self.path}; nearest saved, nearest first: {nearest_steps(steps, step)}")
        return self.path / CHECKPOINT_DIR / step_file(step)

    def weights_at(self, step: int) -> dict[str, Tensor]:
        """The weights at a saved step, by contract name."""
        path = self.checkpoint_path(step)
        tensors, _ = load_tensors(path)
        return tensors

    def model_at(self, step: int | None = None, device: str | torch.device = "cpu") -> CrossAttentionTransformer | StandardTransformer:
        """The model at a saved step (the last one when step is None), in eval mode; the config's `arch` says which."""
        from circuitpath.models.model import build_model

        step = self.steps[-1] if step is None and self.steps else step
        if step is None:
            raise CheckpointError(f"{self.path} has no checkpoint")
        weights = self.weights_at(step)
        try:
            model = build_model(self.config.model, weights)
        except CheckpointError as error:
            raise CheckpointError(f"{self.checkpoint_path(step)} does not match {RUN_JSON}: {error}") from None
        return model.to(device).eval()

    def data(self, phase: int = -1) -> Split:
        """The exact train/test tensors of a phase (default: the last phase)."""
        from circuitpath.data import Split

        n_phases = len(self.config.train.phases)
        if not _is_step(phase, negative=True):
            raise InputError(f"phase is an index, 0..{n_phases - 1} or negative from the end, got {phase!r}")
        index = phase % n_phases if -n_phases <= phase < n_phases else None
        if index is None:
            raise RunError(f"phase {phase} does not exist; {self.path} has phases 0..{n_phases - 1}")
        tensors, _ = load_tensors(self.path / DATA_DIR / data_file(index))
        return Split(**tensors)


def nearest_steps(steps: list[int], step: int, count: int = 3) -> str:
    """The `count` saved steps nearest `step`, nearest first (a tie: the earlier first), as text."""
    if not steps:
        return "none"
    return ", ".join(str(s) for s in sorted(steps, key=lambda s: (abs(s - step), s))[:count])


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunError(f"{path} line {number} is not valid JSON") from None
    return lines


def _is_step(value, negative: bool = False) -> bool:
    """A whole number (`config.is_whole`), >= 0 unless `negative`."""
    return is_whole(value) and (negative or value >= 0)


def as_run(run: Run | str | Path) -> Run:
    """A Run, or the run its directory holds: what the analyses take."""
    return run if isinstance(run, Run) else load_run(run)


def load_run(path: str | Path) -> Run:
    """Open a run directory written by `circuitpath train`."""
    if not isinstance(path, (str, Path)):
        raise InputError(f"a run is opened from its directory's path, got {path!r}")
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path} is not a run directory (it does not exist or is not a directory)")
    if not (path / RUN_JSON).is_file():
        raise RunError(_not_a_run(path))
    info = read_json(path / RUN_JSON)
    if not isinstance(info, dict) or "config" not in info:
        raise RunError(f"{path / RUN_JSON} has no 'config' entry")
    try:
        config = RunConfig.from_dict(info["config"], saved=True)
    except CircuitPathError as error:
        raise RunError(f"{path / RUN_JSON}: {error}") from None
    return Run(path=path, config=config, info=info)


_SEED_DIR = re.compile(r"^seed_(\d+)$")


def _not_a_run(path: Path) -> str:
    """Why `path` is not a run; when it holds runs (an experiment's seed_N, a sweep's), which, and one to pass."""
    inside = [run.parent.relative_to(path) for depth in ("*", "*/*") for run in path.glob(f"{depth}/{RUN_JSON}")]
    if not inside:
        return f"{path} is not a run directory (no {RUN_JSON})"
    inside.sort(key=lambda rel: [(int(m[1]), "") if (m := _SEED_DIR.match(part)) else (-1, part) for part in rel.parts])
    example = _drawn_run(path) or path / inside[0]
    return f"{path} holds runs {_run_names(inside)}, not a run: pass one of them, e.g. {example}"


def _run_names(runs: list[Path]) -> str:
    """'seed_0..seed_7', or 'curriculum/seed_0..seed_7, scratch/seed_0..seed_7', or the first few names."""
    groups: dict[Path, list[Path]] = {}
    for rel in runs:
        groups.setdefault(rel.parent, []).append(rel)
    parts = []
    for parent, members in groups.items():
        seeds = [int(m[1]) for rel in members if (m := _SEED_DIR.match(rel.name))]
        if len(seeds) == len(members) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
            parts.append(f"{members[0]}..{members[-1].name}")
        else:
            parts.extend(str(rel) for rel in members)
    return ", ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")


def _drawn_run(path: Path) -> str | None:
    """The run of the seed `circuitpath reproduce` drew, from claims.json in `path` or beside it (None if none)."""
    for claims, experiment in ((path / "claims.json", None), (path.parent / "claims.json", path.name)):
        record = _claims_record(claims)
        if record is None or (experiment is not None and experiment not in record["experiments"]):
            continue
        run = (path if experiment else path / next(iter(record["experiments"]))) / f"seed_{record['shown_seed']}"
        if (run / RUN_JSON).is_file():
            return f"{run} (the seed reproduce drew)"
    return None


def _claims_record(path: Path) -> dict[str, Any] | None:
    """claims.json's record when it names experiments and an integer shown seed, else None."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("experiments"), dict) and record["experiments"]
    return record if ok and isinstance(record.get("shown_seed"), int) else None


class RunWriter:
    """Writes one run directory; holds its lock from creation (or resume) to `close`."""

    def __init__(self, path: Path, config: RunConfig, info: dict[str, Any], lock: RunLock):
        self.path, self.config, self.info, self.lock = path, config, info, lock
        self.metrics: list[dict[str, Any]] = []

    # ---- creation ------------------------------------------------------------------------------
    @staticmethod
    def check_target(path: Path, force: bool) -> None:
        """Raise RunError unless `path` may receive a new run (nothing is touched)."""
        if path.exists() and not path.is_dir():
            raise RunError(f"{path} exists and is not a directory")
        if path.is_dir() and any(path.iterdir()):
            if not (path / RUN_JSON).is_file():
                raise RunError(f"{path} exists, is not empty and is not a run; refusing to replace it")
            if not force:
                raise RunError(f"{path} already holds a run; pass --force to replace it (force=True in Python)")

    @classmethod
    def create(cls, path: Path, config: RunConfig, splits: list[Split], force: bool = False,
               device: str = "cpu") -> RunWriter:
        path = Path(path)
        cls.check_target(path, force)
        recorded = {platform.KEY: platform.current(device), pinning.KEY: pinning.record()}  # before writing
        if (path / RUN_JSON).is_file():  # force: replace, but never under another writer's feet
            RunLock(path).acquire().release()
            shutil.rmtree(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"cannot create the run directory {path}: {error.strerror}") from None
        lock = RunLock(path).acquire()
        for sub in (DATA_DIR, CHECKPOINT_DIR, STATE_DIR):
            (path / sub).mkdir(exist_ok=True)
        for index, (phase, split) in enumerate(zip(config.train.phases, splits)):
            save_tensors(path / DATA_DIR / data_file(index), split.tensors(), {"phase": index, "p": phase.p})
        info = {
            "format": FORMAT,
            "circuitpath": _version(),
            "status": "running",
            "created": _now(),
            "updated": _now(),
            "config": config.to_dict(),
            **recorded,  # what the run's bytes depend on besides its config
        }
        if config.task.positions != "first":  # the truth each phase sums, written out (a first-k task's: 0..k-1)
            info["relevant_positions"] = [list(config.task.relevant_positions(ph)) for ph in config.train.phases]
        writer = cls(path, config, info, lock)
        write_json(path / RUN_JSON, info)
        return writer

    @classmethod
    def reopen(cls, run: Run) -> RunWriter:
        """Take the lock of an existing run to continue it."""
        lock = RunLock(run.path).acquire()
        writer = cls(run.path, run.config, dict(run.info), lock)
        writer.metrics = list(run.metrics)
        return writer

    # ---- during training -----------------------------------------------------------------------
    def log(self, line: dict[str, Any]) -> None:
        self.metrics.append(line)

    def save_checkpoint(self, step: int, phase: int, weights: dict[str, Tensor], state: dict[str, Tensor], meta: dict) -> None:
        """Weights, then metrics up to now, then the resume state: each file complete or absent."""
        model_json = json.dumps(self.config.to_dict()["model"])
        save_tensors(
            self.path / CHECKPOINT_DIR / step_file(step), weights, {"step": step, "phase": phase, "model": model_json}
        )
        self.flush_metrics()
        self.save_state(step, phase, state, meta)

    def save_state(self, step: int, phase: int, state: dict[str, Tensor], meta: dict) -> None:
        """The optimiser state at `step` and how many metric lines precede it; the last `STATES_KEPT` are kept."""
        save_tensors(
            self.path / STATE_DIR / step_file(step),
            state,
            {k: json.dumps(v) for k, v in meta.items()} | {"step": step, "phase": phase, "n_metrics": len(self.metrics)},
        )
        for old in saved_steps(self.path / STATE_DIR)[:-STATES_KEPT]:
            (self.path / STATE_DIR / step_file(old)).unlink(missing_ok=True)

    def flush_metrics(self) -> None:
        text = "".join(json.dumps(line) + "\n" for line in self.metrics)
        write_atomic(self.path / METRICS, text.encode())

    def set_status(self, status: str, **extra: Any) -> None:
        self.info.update(status=status, updated=_now(), **extra)
        write_json(self.path / RUN_JSON, self.info)

    def close(self) -> None:
        self.lock.release()
