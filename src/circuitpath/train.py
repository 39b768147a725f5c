"""One training loop for scratch, curriculum and fine-tuning runs, and for S such runs at once.

A run is a list of phases (p, steps, lr, batch size). The S runs trained together share their shapes
and phase structure (p, steps, batch size) but not their seeds or learning rates; each is written to
its own run directory and equals what training it alone gives.

At each step g, with weights θ_g: log metrics if g is a log step, save a checkpoint (and the resume
state) if g is a checkpoint step, then take the Adam step to θ_{g+1}. A saved state at step g thus
means "everything of step g is on disk; the update to g + 1 is next".
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from circuitpath.config import ModelConfig, RunConfig, TrainConfig
from circuitpath.data import make_split
from circuitpath.engine import Adam, Encoded, Executor, Layout
from circuitpath.errors import ConfigError
from circuitpath.model import init_weights
from circuitpath.runs import CHECKPOINT_DIR, STATE_DIR, Run, RunWriter, load_run, saved_steps, step_file
from circuitpath.storage import load_tensors


class Interrupted(Exception):
    """Training stopped on Ctrl-C after saving a checkpoint; the runs can be resumed."""

    def __init__(self, runs: list[Path], step: int):
        super().__init__(f"interrupted at step {step}; resume with: circuitpath train --resume {runs[0]}")
        self.runs, self.step = runs, step


def checkpoint_schedule(train: TrainConfig) -> list[int]:
    """Steps to checkpoint: log-spaced early, every `checkpoint_every` later, and every phase boundary."""
    total = train.total_steps
    dense = np.geomspace(1, train.checkpoint_every, num=train.dense_checkpoints) if train.dense_checkpoints else []
    steps = {0, total, *train.phase_starts(), *range(0, total + 1, train.checkpoint_every)}
    steps |= {int(round(s)) for s in dense}
    return sorted(s for s in steps if 0 <= s <= total)


def log_schedule(train: TrainConfig) -> list[int]:
    steps = set(range(0, train.total_steps + 1, train.log_every)) | set(checkpoint_schedule(train))
    return sorted(steps)


@dataclass
class Position:
    """Where training (re)starts: phase index and step within the phase."""

    phase: int = 0
    local: int = 0
    skip_record: bool = False  # the record (log + checkpoint) of this step is already on disk

    def step(self, train: TrainConfig) -> int:
        starts = train.phase_starts()
        return starts[self.phase] + self.local if self.phase < len(starts) else train.total_steps


def _shape_key(config: RunConfig) -> tuple:
    task, model, train = config.task, config.model, config.train
    phases = tuple((ph.p, ph.steps, ph.batch_size) for ph in train.phases)
    model_shape = (model.d_model, model.d_mlp, model.n_tokens, model.n_ctx, model.tied, model.eps)
    return (task.n_ctx, task.k, task.n_train, task.n_test, model_shape, phases,
            train.log_every, train.checkpoint_every, train.dense_checkpoints)


def _check_group(configs: list[RunConfig], outs: list[Path]) -> None:
    if not configs:
        raise ConfigError("no run to train")
    if len(configs) != len(outs):
        raise ConfigError(f"{len(configs)} configs but {len(outs)} output directories")
    if len({Path(o).resolve() for o in outs}) != len(outs):
        raise ConfigError("two runs of one batch share an output directory")
    key = _shape_key(configs[0])
    for config in configs[1:]:
        if _shape_key(config) != key:
            raise ConfigError(
                "runs trained together must share shapes, phases (p, steps, batch size) and schedules; "
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
) -> list[Run]:
    """Train S runs in one batched computation, each into its own run directory."""
    outs = [Path(o) for o in outs]
    _check_group(configs, outs)
    device = resolve_device(device)
    for out in outs:  # every target is checked before any is written
        RunWriter.check_target(out, force)
    splits = [[make_split(c.task, ph.p) for ph in c.train.phases] for c in configs]
    writers = []
    try:
        for config, out, split in zip(configs, outs, splits):
            writers.append(RunWriter.create(out, config, split, force=force))
    except BaseException:
        for writer in writers:
            writer.close()
        raise
    theta = Layout.of(configs[0].model).pack([init_weights(c.model) for c in configs])
    generators = [torch.Generator().manual_seed(c.train.seed) for c in configs]
    trainer = _Trainer(configs, writers, splits, theta.to(device), generators)
    return trainer.run(Position())


def resume(paths: list[str | Path], *, device: str = "cpu", progress: bool = True) -> list[Run]:
    """Continue runs from their last common saved state; the result equals an uninterrupted run.

    Runs that were killed before their first checkpoint start again from their initial weights.
    """
    runs = [load_run(p) for p in paths]
    configs = [run.config for run in runs]
    _check_group(configs, [run.path for run in runs])
    device = resolve_device(device)
    writers = [RunWriter.reopen(run) for run in runs]
    try:
        theta, generators, start, adam_state = _restart_point(runs, writers)
        for writer in writers:
            writer.set_status("running", resumed_from=start.step(configs[0].train))
    except BaseException:
        for writer in writers:
            writer.close()
        raise
    splits = [[run.data(i) for i in range(len(run.config.train.phases))] for run in runs]
    trainer = _Trainer(configs, writers, splits, theta.to(device), generators)
    if adam_state is not None:
        adam_state = (adam_state[0].to(device), adam_state[1].to(device), adam_state[2])
    return trainer.run(start, adam_state)


def _restart_point(runs: list[Run], writers: list[RunWriter]):
    """Weights, samplers, position and Adam state at the last step every run saved a state for.

    Everything is read and checked before anything on disk is changed.
    """
    common = set.intersection(*(set(saved_steps(run.path / STATE_DIR)) for run in runs))
    if not common:  # killed before the first checkpoint: start over
        for writer in writers:
            _drop_after(writer.path, -1)
            writer.metrics = []
        theta = Layout.of(runs[0].config.model).pack([init_weights(run.config.model) for run in runs])
        generators = [torch.Generator().manual_seed(run.config.train.seed) for run in runs]
        return theta, generators, Position(), None
    step = max(common)
    states = [load_tensors(run.path / STATE_DIR / step_file(step)) for run in runs]
    theta = Layout.of(runs[0].config.model).pack([run.weights_at(step) for run in runs])
    generators = []
    for tensors, _ in states:
        generators.append(torch.Generator())
        generators[-1].set_state(tensors["rng"])
    for writer, (_, meta) in zip(writers, states):
        writer.metrics = writer.metrics[: int(meta["n_metrics"])]
        _drop_after(writer.path, step)
    meta = states[0][1]
    phase, local = int(meta["phase"]), int(json.loads(meta["local"]))
    if local == runs[0].config.train.phases[phase].steps:  # saved at a phase's end: next phase, fresh Adam
        return theta, generators, Position(phase + 1, 0, False), None
    adam_state = (
        torch.stack([tensors["m"] for tensors, _ in states]),
        torch.stack([tensors["v"] for tensors, _ in states]),
        int(json.loads(meta["adam_step"])),
    )
    return theta, generators, Position(phase, local, True), adam_state


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



class _Trainer:
    """The loop itself, shared by fresh and resumed training."""

    def __init__(self, configs, writers, splits, theta, generators):
        self.configs, self.writers, self.splits, self.theta = configs, writers, splits, theta
        self.generators = generators
        self.train_cfg: TrainConfig = configs[0].train
        self.model_cfg: ModelConfig = configs[0].model
        self.layout = Layout.of(self.model_cfg)
        self.log_steps = set(log_schedule(self.train_cfg))
        self.checkpoint_steps = set(checkpoint_schedule(self.train_cfg))
        self.stop_requested = False

    def run(self, start: Position, adam_state=None) -> list[Run]:
        previous = signal.getsignal(signal.SIGINT)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._request_stop)
        try:
            self._loop(start, adam_state)
        except Interrupted:
            for writer in self.writers:
                writer.set_status("interrupted")
            raise
        except BaseException as error:
            for writer in self.writers:
                _try_status(writer, "failed", error=f"{type(error).__name__}: {error}")
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
            for writer in self.writers:
                writer.close()
        for writer in self.writers:
            writer.set_status("completed")
        return [load_run(w.path) for w in self.writers]

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def _loop(self, start: Position, adam_state) -> None:
        starts = self.train_cfg.phase_starts()
        total = self.train_cfg.total_steps
        first_step = start.step(self.train_cfg)
        desc = "train" if len(self.writers) == 1 else f"train {len(self.writers)} runs"
        with tqdm(total=total, initial=first_step, desc=desc, unit="step", dynamic_ncols=True,
                  disable=None, mininterval=0.5) as bar, Executor(len(self.writers), self.theta.device) as executor:
            self.bar, self.executor = bar, executor
            for index in range(start.phase, len(self.train_cfg.phases)):
                resumed = index == start.phase
                self._phase(index, starts[index], start.local if resumed else 0,
                            start.skip_record and resumed, adam_state if resumed else None)

    def _phase(self, index: int, phase_start: int, first: int, skip_first: bool, adam_state) -> None:
        phase = self.train_cfg.phases[index]
        device = self.theta.device
        x_train = torch.stack([s[index].x_train for s in self.splits]).to(device)
        y_train = torch.stack([s[index].y_train for s in self.splits]).to(device)
        full = Encoded.of(x_train, y_train, self.model_cfg.n_tokens)
        test = Encoded.of(
            torch.stack([s[index].x_test for s in self.splits]).to(device),
            torch.stack([s[index].y_test for s in self.splits]).to(device),
            self.model_cfg.n_tokens,
        )
        lrs = torch.tensor([c.train.phases[index].lr for c in self.configs])
        adam = Adam(self.theta, lrs)
        if adam_state is not None:
            adam.load(*adam_state)
        for local in range(first, phase.steps):
            step = phase_start + local
            if not (skip_first and local == first):
                self._record(step, index, local, adam, full, test, skip_checkpoint=index > 0 and local == 0)
            if self.stop_requested:
                self._save(step, index, local, adam)
                raise Interrupted([w.path for w in self.writers], step)
            batch = full if phase.batch_size is None else self._minibatch(x_train, y_train, phase.batch_size)
            _, grad = self.executor.loss_and_grad(self.theta, self.layout, batch)
            adam.step(self.theta, grad)
            self.bar.update(1)
        self._record(phase_start + phase.steps, index, phase.steps, adam, full, test, skip_checkpoint=False)

    def _minibatch(self, x_train, y_train, batch_size: int) -> Encoded:
        rows = torch.stack([torch.randperm(x_train.shape[1], generator=g)[:batch_size] for g in self.generators])
        rows = rows.to(x_train.device)
        x = torch.gather(x_train, 1, rows[:, :, None].expand(-1, -1, x_train.shape[2]))
        return Encoded.of(x, torch.gather(y_train, 1, rows), self.model_cfg.n_tokens)

    def _record(self, step, index, local, adam, full, test, skip_checkpoint) -> None:
        if step in self.log_steps:
            self._log(step, index, full, test)
        if step in self.checkpoint_steps and not skip_checkpoint:
            self._save(step, index, local, adam)

    def _log(self, step: int, index: int, full: Encoded, test: Encoded) -> None:
        train_loss, train_acc = self.executor.evaluate(self.theta, self.layout, full)
        test_loss, test_acc = self.executor.evaluate(self.theta, self.layout, test)
        values = torch.stack([train_loss, train_acc, test_loss, test_acc]).cpu().tolist()
        for s, writer in enumerate(self.writers):
            phase = writer.config.train.phases[index]
            writer.log({
                "step": step, "phase": index, "p": phase.p, "lr": phase.lr,
                "train_loss": values[0][s], "train_acc": values[1][s],
                "test_loss": values[2][s], "test_acc": values[3][s],
            })
        mean = [sum(v) / len(v) for v in values]
        self.bar.set_postfix(p=self.train_cfg.phases[index].p, loss=f"{mean[0]:.3g}",
                             acc=f"{mean[1]:.3f}", test_acc=f"{mean[3]:.3f}", refresh=False)

    def _save(self, step: int, index: int, local: int, adam: Adam) -> None:
        theta = self.theta.detach().cpu()
        m, v = adam.m.cpu(), adam.v.cpu()
        for s, (writer, generator) in enumerate(zip(self.writers, self.generators)):
            state = {"m": m[s], "v": v[s], "rng": generator.get_state()}
            meta = {"local": local, "adam_step": adam.step_count}
            writer.save_checkpoint(step, index, self.layout.unpack(theta[s]), state, meta)


def _try_status(writer: RunWriter, status: str, **extra) -> None:
    try:
        writer.set_status(status, **extra)
    except Exception:  # the disk may be what failed; the last complete files stay readable
        pass

