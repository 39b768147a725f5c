"""Which input positions a model reads, at every checkpoint, scored against the task's truth: any model.

The nodes are the input positions: position t is the first residual stream at t (`blocks.0.hook_resid_pre`,
token and position embedding), which every later computation of the model reads t through. Each
checkpoint is probed as `discover` probes it (the first n test inputs of its phase, corrupted by a fixed
reordering of the same inputs, `Probe.shuffled`), with up to three methods:

- attribution   |(corrupted - clean) . d metric / d resid_pre[t]| (one forward and one backward pass)
- patching      |metric with position t's resid_pre taken from the corrupted input - metric clean|
- ablation      |loss with position t's resid_pre replaced (zero, mean or resample) - loss intact|

each averaged over the inputs (the mean of each input's |change|, as `ModelGraph.position_scores` reads
the paper's graph), where the metric is logit_diff (clean answer - corrupted answer) or the loss. The
scores' AUROC and precision@k against the relevant positions say when the model reads the truth. The
paper's model's richer graph (values, attention weights, neurons) is `discover`'s.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from circuitpath.analysis.ablation import METHODS as ABLATIONS
from circuitpath.analysis.ablation import replacement_for
from circuitpath.analysis.discovery.methods import METHODS, Probe
from circuitpath.analysis.discovery.timeline import LEVEL, probe_of, select_steps
from circuitpath.analysis.discovery.truth import auroc, first_reaching, precision_at_k, reaching_text, stays_from
from circuitpath.analysis.patching import selection_masks
from circuitpath.analysis.replacing import run_replaced
from circuitpath.analysis.threads import single_threaded
from circuitpath.data import relevant_mask
from circuitpath.errors import ConfigError
from circuitpath.runs import ANALYSIS_DIR, Run, as_run
from circuitpath.runs.storage import write_json

#: The hook whose index t carries input position t.
HOOK = "blocks.0.hook_resid_pre"
POSITIONS_JSON = "positions.json"
METRICS = ("logit_diff", "loss")


def _metric(logits: Tensor, probe: Probe, metric: str) -> Tensor:
    """Per input: logit[clean answer] - logit[corrupted answer], or the loss on the clean answer ([..., batch])."""
    if metric == "loss":
        flat = F.cross_entropy(logits.flatten(0, -2), probe.labels.expand(logits.shape[:-1]).flatten(), reduction="none")
        return flat.view(logits.shape[:-1])
    picked = logits.gather(-1, torch.stack([probe.labels, probe.corrupted_labels], -1).expand(*logits.shape[:-1], 2))
    return picked[..., 0] - picked[..., 1]


def _logits(model, tokens: Tensor, **hooks) -> Tensor:
    """The model's logits by its lean pass (`HookedModel.lean_forward`): every score here compares lean
    passes with lean passes, so the rounding of a full pass never enters a difference."""
    if hooks:
        return model.run_with_hooks(tokens, **hooks, **model.lean_forward(HOOK))
    return model(tokens, **model.lean_forward())


def _masks(shape: torch.Size, n_ctx: int) -> Tensor:
    """One mask per input position over a [pos, d_model] activation (a CLS position is never a node)."""
    return selection_masks(shape, [{0: t} for t in range(n_ctx)])


@torch.no_grad()
def patching_scores(model, probe: Probe, n_ctx: int, metric: str = "logit_diff") -> Tensor:
    """[pos, batch] each input's change of the metric when position t comes from its corrupted input."""
    _, clean = model.run_with_cache(probe.clean, names_filter=HOOK)
    _, corrupted = model.run_with_cache(probe.corrupted, names_filter=HOOK)
    base = _metric(_logits(model, probe.clean), probe, metric)
    logits = run_replaced(model, HOOK, probe.clean, clean, corrupted[HOOK], _masks(clean[HOOK].shape[1:], n_ctx), lean=True)
    return _metric(logits, probe, metric) - base


@torch.no_grad()
def ablation_scores(model, probe: Probe, n_ctx: int, method: str = "mean", seed: int = 0) -> Tensor:
    """[pos, batch] each input's change of the loss when position t is ablated."""
    _, cache = model.run_with_cache(probe.clean, names_filter=HOOK)
    replacement = replacement_for(cache[HOOK], method, torch.Generator().manual_seed(seed))
    logits = run_replaced(model, HOOK, probe.clean, cache, replacement, _masks(cache[HOOK].shape[1:], n_ctx), lean=True)
    return _metric(logits, probe, "loss") - _metric(_logits(model, probe.clean), probe, "loss")


def attribution_scores(model, probe: Probe, n_ctx: int, metric: str = "logit_diff") -> Tensor:
    """[pos, batch] the first-order estimate of `patching_scores`: (corrupted - clean) . gradient at t."""
    with torch.no_grad():
        _, corrupted = model.run_with_cache(probe.corrupted, names_filter=HOOK)
    kept = {}

    def leaf(act, hook):
        kept["clean"] = act.detach().requires_grad_(True)
        return kept["clean"]

    with torch.enable_grad():
        logits = _logits(model, probe.clean, fwd_hooks=[(HOOK, leaf)])
        (gradient,) = torch.autograd.grad(_metric(logits, probe, metric).sum(), kept["clean"])
    change = ((corrupted[HOOK] - kept["clean"].detach()) * gradient).sum(-1)  # [batch, pos]
    return change[:, :n_ctx].T


@dataclass
class PositionTimeline:
    """Each method's position scores at each checkpoint, against the truth of each checkpoint's phase."""

    run: str
    steps: list[int]
    phases: list[int]
    n_ctx: int
    metric: str
    n: int  # inputs probed per checkpoint (at most)
    scores: dict[str, Tensor]  # method -> [n_steps, pos]: mean over inputs of each input's |change|
    signed: dict[str, Tensor]  # method -> [n_steps, pos]: mean over inputs of each input's change
    accuracy: Tensor  # [n_steps] the intact model on the probe
    relevant: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def truth(self) -> Tensor:
        """[n_steps, pos] True at each step's relevant positions."""
        return torch.stack([relevant_mask(r, self.n_ctx) for r in self.relevant])

    def auroc(self, method: str) -> Tensor:
        return auroc(self.scores[method], self.truth())

    def precision(self, method: str) -> Tensor:
        return precision_at_k(self.scores[method], self.truth())

    def first_reaching(self, method: str, level: float = LEVEL) -> int | None:
        return first_reaching(self.steps, self.auroc(method), level)

    def stays_from(self, method: str, level: float = LEVEL) -> int | None:
        """The step from which the AUROC stays >= `level` to the last step scored (None: below at the end)."""
        return stays_from(self.steps, self.auroc(method), level)

    def reaching(self, method: str) -> str:
        """When the AUROC holds >= LEVEL, in words (`truth.reaching_text`)."""
        return reaching_text(self.first_reaching(method), self.stays_from(method), LEVEL)

    def to_dict(self) -> dict:
        return {"run": self.run, "steps": self.steps, "phases": self.phases, "n_ctx": self.n_ctx, "metric": self.metric,
                "n": self.n, "hook": HOOK, "relevant": [list(r) for r in self.relevant],
                "accuracy": self.accuracy.tolist(),
                "methods": {m: {"auroc": self.auroc(m).tolist(), "precision_at_k": self.precision(m).tolist(),
                                "first_reaching": self.first_reaching(m),
                                "stays_from": self.stays_from(m), "scores": self.scores[m].tolist(),
                                "signed": self.signed[m].tolist()} for m in self.methods}}


def discover_positions(run: Run, methods: tuple[str, ...] = METHODS, *, n: int = 1024, metric: str = "logit_diff",
                       ablation: str = "mean", seed: int = 0, steps: list[int] | str | None = None,
                       device: str = "cpu", workers: int | None = None) -> PositionTimeline:
    """Score every input position at every chosen checkpoint with each method (checks before any work).

    `workers` checkpoints are scored at once, each single-threaded (default: one a core on the CPU,
    one at a time elsewhere); the scores are the same bytes for any number."""
    run = as_run(run)  # a Run, or its directory
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown method {unknown[0] if unknown else ''!r}; known: {', '.join(METHODS)}")
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if ablation not in ABLATIONS:
        raise ConfigError(f"unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}")
    if n < 2:
        raise ConfigError(f"n must be >= 2 (inputs are corrupted with each other), got {n}")
    steps = select_steps(run, steps)
    phases = [run.phase_at(step) for step in steps]
    task = run.config.task
    for phase in sorted(set(phases)):
        if not task.spurious_positions(run.config.train.phases[phase]):
            raise ConfigError(f"{run.path} sums all {task.n_ctx} positions in phase {phase}: no position is spurious, "
                              "so there is no truth to tell apart")
    probes = {phase: probe_of(run, phase, n, seed).to(device) for phase in sorted(set(phases))}
    score = {"attribution": lambda model, probe: attribution_scores(model, probe, task.n_ctx, metric),
             "patching": lambda model, probe: patching_scores(model, probe, task.n_ctx, metric),
             "ablation": lambda model, probe: ablation_scores(model, probe, task.n_ctx, ablation, seed)}
    def checkpoint(step: int, phase: int) -> tuple[float, dict[str, Tensor]]:
        model, probe = run.model_at(step, device=device), probes[phase]
        with torch.no_grad():
            accuracy = float((_logits(model, probe.clean).argmax(-1) == probe.labels).float().mean())
        return accuracy, {method: score[method](model, probe).float().cpu() for method in methods}

    with single_threaded(), ThreadPoolExecutor(workers or _workers(device, len(steps))) as pool:
        done = list(pool.map(checkpoint, steps, phases))  # each checkpoint on one thread: the same bytes on any count
    scores = {m: [change[m].abs().mean(-1) for _, change in done] for m in methods}
    signed = {m: [change[m].mean(-1) for _, change in done] for m in methods}
    accuracy = [acc for acc, _ in done]
    return PositionTimeline(
        run=run.path.name, steps=steps, phases=phases, n_ctx=task.n_ctx, metric=metric,
        n=min(n, *(len(p.clean) for p in probes.values())),
        scores={m: torch.stack(v) for m, v in scores.items()}, signed={m: torch.stack(v) for m, v in signed.items()},
        accuracy=torch.tensor(accuracy),
        relevant=[task.relevant_positions(run.config.train.phases[phase]) for phase in phases])


def _workers(device: str, checkpoints: int) -> int:
    """Checkpoints scored at once: one a core on the CPU (each single-threaded), one at a time elsewhere."""
    return max(1, min(checkpoints, os.cpu_count() or 1)) if torch.device(device).type == "cpu" else 1


def save_positions(timeline: PositionTimeline, directory: str | Path) -> Path:
    """`timeline` as RUN/analysis/discovery/positions.json (or `directory`/positions.json)."""
    path = Path(directory) / POSITIONS_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, timeline.to_dict())
    return path


def positions_dir(run: Run) -> Path:
    return run.path / ANALYSIS_DIR / "discovery"
