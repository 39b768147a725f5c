"""The training loop of one group of runs (S runs that share shapes and phases).

At each step g, with weights θ_g: log metrics if g is a log step, save a checkpoint (and the resume
state) if g is a checkpoint step, then take the Adam step to θ_{g+1}. A saved state at step g thus
means "everything of step g is on disk; the update to g + 1 is next". A stop request (Ctrl-C) is
honoured between two steps, after the record of the current step, so the saved state is consistent.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuitpath.config import ModelConfig, TrainConfig
from circuitpath.runs import Run, RunWriter, load_run
from circuitpath.training import fused
from circuitpath.training.engine import Adam, Encoded, Executor, Layout


class Interrupted(Exception):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint; the runs can be resumed."""

    def __init__(self, runs: list[Path], step: int):
        commands = " and ".join(f"circuitpath train --resume {run}" for run in runs[:2])
        more = f" (and {len(runs) - 2} more runs)" if len(runs) > 2 else ""
        super().__init__(f"interrupted at step {step}; resume with: {commands}{more}")
        self.runs, self.step = runs, step


def checkpoint_schedule(train: TrainConfig) -> list[int]:
    """Steps to checkpoint: log-spaced early, every `checkpoint_every` later, every phase boundary,
    and the `extra_checkpoints`."""
    total = train.total_steps
    dense = np.geomspace(1, train.checkpoint_every, num=train.dense_checkpoints) if train.dense_checkpoints else []
    steps = {0, total, *train.phase_starts(), *range(0, total + 1, train.checkpoint_every), *train.extra_checkpoints}
    steps |= {int(round(s)) for s in dense}
    return sorted(s for s in steps if 0 <= s <= total)


def log_schedule(train: TrainConfig) -> list[int]:
    steps = set(range(0, train.total_steps + 1, train.log_every)) | set(checkpoint_schedule(train))
    return sorted(steps)


def epoch_order(seed: int, phase: int, epoch: int, n: int) -> Tensor:
    """The order of a run's n training sequences in one epoch of one phase.

    Mini-batches are consecutive slices of it (n // batch_size of them an epoch; a remainder is left out of
    that epoch). A function of (seed, phase, epoch) alone, so a resumed or branched run draws the
    same batches as an uninterrupted one without any sampler state.
    """
    key = int(np.random.SeedSequence([seed, phase, epoch]).generate_state(1, dtype=np.uint64)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(key))


@dataclass
class Position:
    """Where training (re)starts: phase index and step within the phase."""

    phase: int = 0
    local: int = 0
    skip_record: bool = False  # the record (log + checkpoint) of this step is already on disk

    def step(self, train: TrainConfig) -> int:
        starts = train.phase_starts()
        return starts[self.phase] + self.local if self.phase < len(starts) else train.total_steps


class GroupTrainer:
    """The loop of one group, shared by fresh and resumed training.

    The orchestrator in `train.py` sets `stop` (Ctrl-C), `pool` (the shared CPU workers), `progress`
    and `bar_position` (one progress bar per group) before calling `run`.
    """

    def __init__(self, configs, writers, splits, theta, start: Position, adam_state=None):
        self.configs, self.writers, self.splits, self.theta = configs, writers, splits, theta
        self.start, self.adam_state = start, adam_state
        self.train_cfg: TrainConfig = configs[0].train
        self.model_cfg: ModelConfig = configs[0].model
        self.layout = Layout.of(self.model_cfg)
        self.log_steps = set(log_schedule(self.train_cfg))
        self.checkpoint_steps = set(checkpoint_schedule(self.train_cfg))
        self.record_steps = sorted(self.log_steps | self.checkpoint_steps)
        self._epoch: tuple[int, int] | None = None  # (phase, epoch) of the cached orders
        self.stop = threading.Event()
        self.pool = None
        self.progress = True
        self.bar_position = 0

    def run(self) -> list[Run]:
        """Train to the end (or to a stop request) and return the runs; the locks are released."""
        try:
            self._loop(self.start, self.adam_state)
        except Interrupted:
            for writer in self.writers:
                writer.set_status("interrupted")
            raise
        except BaseException as error:
            for writer in self.writers:
                _try_status(writer, "failed", error=f"{type(error).__name__}: {error}")
            raise
        finally:
            for writer in self.writers:
                writer.close()
        for writer in self.writers:
            writer.set_status("completed")
        return [load_run(w.path) for w in self.writers]

    def _loop(self, start: Position, adam_state) -> None:
        starts = self.train_cfg.phase_starts()
        total = self.train_cfg.total_steps
        first_step = start.step(self.train_cfg)
        name = self.writers[0].path.name
        desc = name if len(self.writers) == 1 else f"{self.writers[0].path.parent.name} ({len(self.writers)} runs)"
        executor = Executor(len(self.writers), self.theta.device, self.pool, self.model_cfg, self.train_cfg)
        with tqdm(total=total, initial=first_step, desc=desc, unit="step", dynamic_ncols=True,
                  disable=None if self.progress else True, mininterval=0.5,
                  position=self.bar_position, leave=True) as bar:
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
        onehot = not self.executor.fused
        full = self.executor.split(Encoded.of(x_train, y_train, self.model_cfg.n_tokens, onehot))
        test = self.executor.split(Encoded.of(
            torch.stack([s[index].x_test for s in self.splits]).to(device),
            torch.stack([s[index].y_test for s in self.splits]).to(device),
            self.model_cfg.n_tokens, onehot,
        ))
        lrs = torch.tensor([c.train.phases[index].lr for c in self.configs])
        adam = Adam.of_phase(self.theta, lrs, phase, self.layout)
        if adam_state is not None:
            adam.load(*adam_state)
        local = first
        while local < phase.steps:
            step = phase_start + local
            if not (skip_first and local == first):
                self._record(step, index, local, adam, full, test, skip_checkpoint=index > 0 and local == 0)
            if self.stop.is_set():
                self._save(step, index, local, adam)
                raise Interrupted([w.path for w in self.writers], step)
            if self.executor.fused:
                count = self._fused_updates(index, phase_start, local, x_train, y_train, full, adam)
            else:
                batch = full if phase.batch_size is None else self._minibatch(x_train, y_train, index, local, phase.batch_size)
                _, grad = self.executor.loss_and_grad(self.theta, self.layout, batch)
                adam.step(self.theta, grad)
                count = 1
            self.bar.update(count)
            local += count
        self._record(phase_start + phase.steps, index, phase.steps, adam, full, test, skip_checkpoint=False)

    def _fused_updates(self, index: int, phase_start: int, local: int, x_train, y_train, full, adam: Adam) -> int:
        """The updates from `local` up to the next record, the epoch's end or the phase's, in one
        compiled call per chunk (`fused.train_stretch`); returns how many were taken."""
        phase = self.train_cfg.phases[index]
        later = bisect.bisect_right(self.record_steps, phase_start + local)
        end = min(phase.steps, self.record_steps[later] - phase_start if later < len(self.record_steps) else phase.steps)
        if phase.batch_size is None:
            parts, first, stride, batch = full, 0, 0, x_train.shape[1]
        else:
            batch = phase.batch_size
            per_epoch = x_train.shape[1] // batch
            epoch, at = divmod(local, per_epoch)
            end = min(end, (epoch + 1) * per_epoch)
            self._minibatch(x_train, y_train, index, local, batch)  # this epoch's order, encoded once
            parts = [self._epoch_data.rows(rows) for rows in self.executor.chunks]
            first, stride = at * batch, batch
        count = end - local
        lrs = np.array([c.train.phases[index].lr for c in self.configs], dtype=np.float64)

        def stretch(rows: slice, data: Encoded) -> None:
            fused.train_stretch(self.theta[rows], adam.m[rows], adam.v[rows], lrs[rows], adam.step_count,
                                self.layout, data.index, data.targets, first, stride, batch, count)

        self.executor._map(stretch, parts)
        adam.step_count += count
        return count

    def _minibatch(self, x_train, y_train, phase: int, local: int, batch_size: int) -> list[Encoded]:
        """The batch of step `local` of a phase: the next slice of this epoch's order of the training set."""
        per_epoch = x_train.shape[1] // batch_size
        epoch, at = divmod(local, per_epoch)
        if self._epoch != (phase, epoch):  # the whole epoch's sequences in their order, encoded once
            self._epoch = (phase, epoch)
            orders = torch.stack([epoch_order(c.train.seed, phase, epoch, x_train.shape[1]) for c in self.configs])
            orders = orders.to(x_train.device)
            self._epoch_data = Encoded.of(*_in_order(x_train, y_train, orders), self.model_cfg.n_tokens,
                                          not self.executor.fused)
        return self.executor.split(self._epoch_data.batch(slice(at * batch_size, (at + 1) * batch_size)))

    def _record(self, step, index, local, adam, full, test, skip_checkpoint) -> None:
        if step in self.log_steps:
            self._log(step, index, full, test)
        if step in self.checkpoint_steps and not skip_checkpoint:
            self._save(step, index, local, adam)

    def _log(self, step: int, index: int, full: list[Encoded], test: list[Encoded]) -> None:
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
        for s, writer in enumerate(self.writers):
            state = {"m": m[s], "v": v[s]}
            meta = {"local": local, "adam_step": adam.step_count}
            writer.save_checkpoint(step, index, self.layout.unpack(theta[s]), state, meta)


def _in_order(x: Tensor, y: Tensor, orders: Tensor) -> tuple[Tensor, Tensor]:
    """Each run's sequences [runs, n, ...] and labels [runs, n] in its own order [runs, n]: rows picked from the
    runs' flattened sets (a row index_select: ~8x a gather with a broadcast index, which the d = 2 runs pay
    every epoch of 64 updates)."""
    runs, n = orders.shape
    rows = (orders + torch.arange(runs, device=orders.device)[:, None] * n).reshape(-1)
    return (x.reshape(runs * n, *x.shape[2:]).index_select(0, rows).reshape(x.shape),
            y.reshape(-1).index_select(0, rows).reshape(runs, n))


def _try_status(writer: RunWriter, status: str, **extra) -> None:
    try:
        writer.set_status(status, **extra)
    except Exception:  # the disk may be what failed; the last complete files stay readable
        pass

