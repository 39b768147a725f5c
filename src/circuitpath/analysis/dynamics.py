"""How the attention of the single query moves over training (the paper's Fig. 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuitpath.analysis.clusters import MAX_CLUSTERS, find_clusters
from circuitpath.analysis.models import require_paper
from circuitpath.data import at_positions, truth_of
from circuitpath.errors import InputError
from circuitpath.runs import Run, as_run


@dataclass
class AttentionOverTraining:
    """Mean attention on each key position at each checkpoint, over a fixed set of probe inputs."""

    steps: list[int]
    pattern: Tensor  # [n_steps, key_pos]
    k: int
    phase_switches: list[int]
    relevant: tuple[int, ...] | None = None  # the summed positions when they are not the first k

    @property
    def truth(self) -> int | tuple[int, ...]:
        return self.k if self.relevant is None else self.relevant

    @property
    def first_k_mass(self) -> Tensor:
        """Attention mass on the k summed positions (the first k in the paper's task), per checkpoint."""
        return at_positions(self.pattern, self.truth).sum(1)

    @property
    def max_spurious(self) -> Tensor:
        """Largest mean attention on any one spurious position, per checkpoint (0 when k = T)."""
        if self.k == self.pattern.shape[1]:
            return torch.zeros(len(self.steps))
        return at_positions(self.pattern, self.truth, spurious=True).max(1).values


@torch.no_grad()
def attention_over_training(run: Run, n: int = 512, phase: int = -1, steps: list[int] | None = None) -> AttentionOverTraining:
    """Read `blocks.0.attn.hook_pattern` at every checkpoint on the first n test inputs of `phase`, against
    that phase's truth. The single query is the paper's model's (`flow.readout_flow`: any model's, per layer and head)."""
    run = as_run(run)  # a Run, or its directory
    require_paper(run.config.model, "the single query's attention over training", "flow.readout_flow reads the "
                  "readout position's per layer and head")
    probe = run.data(phase).x_test[:n]
    steps = run.steps if steps is None else steps
    patterns = []
    for step in steps:
        _, cache = run.model_at(step).run_with_cache(probe, names_filter="blocks.0.attn.hook_pattern")
        patterns.append(cache["blocks.0.attn.hook_pattern"].mean(0))
    truth = truth_of(run.config.task, run.config.train.phases[phase])
    if isinstance(truth, int):
        return AttentionOverTraining(list(steps), torch.stack(patterns), truth, run.phase_boundaries())
    return AttentionOverTraining(list(steps), torch.stack(patterns), len(truth), run.phase_boundaries(), truth)


@dataclass
class CircuitOverTraining:
    """When the useful circuit forms and the spurious one is pruned, on one time axis with the loss."""

    steps: list[int]
    position_effects: Tensor  # [n_steps, key_pos] accuracy lost when each position's value is mean-ablated
    first_k_mass: Tensor  # [n_steps]
    max_spurious: Tensor  # [n_steps]
    n_clusters: list[int]  # clusters of z_A found at each step (1: no well-separated groups)
    train_loss: list[float]
    test_loss: list[float]
    k: int
    phase_switches: list[int]
    inputs: str = "test"  # which inputs the effects, attention and clusters are measured on: train or test
    relevant: tuple[int, ...] | None = None  # the summed positions of the last phase when they are not the first k


def _spread(steps: list[int], count: int, keep: list[int]) -> list[int]:
    """About `count` steps spread evenly through `steps` (by index), plus those in `keep`."""
    if len(steps) <= count:
        return steps
    picked = {steps[round(i * (len(steps) - 1) / (count - 1))] for i in range(count)}
    return sorted(picked | {s for s in keep if s in steps})


@torch.no_grad()
def circuit_over_training(run: Run, n: int = 256, points: int = 12, max_clusters: int = MAX_CLUSTERS,
                          on: str = "test") -> CircuitOverTraining:
    """Position ablations, attention mass and cluster count at about `points` checkpoints.

    Each checkpoint is measured on the `on` inputs (train or test) of the phase it belongs to: a
    memorising model loses accuracy only on training inputs, where it has something to lose.
    """
    run = as_run(run)  # a Run, or its directory
    require_paper(run.config.model, "the circuit over training (the single query's attention, the clusters of z_A)")
    if on not in ("train", "test"):
        raise InputError(f"measure on train or test, got {on!r}")
    from circuitpath.analysis.ablation import ablate

    steps = _spread(run.steps, points, run.phase_boundaries())
    task, lines = run.config.task, {(m["step"], m["phase"]): m for m in run.metrics}
    effects, masses, spurious, clusters, train_loss, test_loss = [], [], [], [], [], []
    for step in steps:
        phase = run.phase_at(step)
        split, model, p = run.data(phase), run.model_at(step), run.config.train.phases[phase].p
        truth = truth_of(task, run.config.train.phases[phase])
        x, y = (split.x_train[:n], split.y_train[:n]) if on == "train" else (split.x_test[:n], split.y_test[:n])
        ablated = ablate(model, x, y, method="mean")
        effects.append(ablated.base_accuracy - ablated.accuracy)
        _, cache = model.run_with_cache(x, names_filter="blocks.0.attn.hook_pattern")
        pattern = cache["blocks.0.attn.hook_pattern"].mean(0)
        masses.append(at_positions(pattern, truth).sum())
        rest = at_positions(pattern, truth, spurious=True)
        spurious.append(rest.max() if len(rest) else torch.tensor(0.0))
        clusters.append(find_clusters(model, x, p, truth, max_clusters=max_clusters).n_clusters)
        metric = lines.get((step, phase), {})
        train_loss.append(metric.get("train_loss", float("nan")))
        test_loss.append(metric.get("test_loss", float("nan")))
    k, relevant = (truth, None) if isinstance(truth, int) else (len(truth), truth)
    return CircuitOverTraining(steps, torch.stack(effects), torch.stack(masses), torch.stack(spurious), clusters,
                               train_loss, test_loss, k, run.phase_boundaries(), on, relevant)
