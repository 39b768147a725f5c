"""How the attention of the single query moves over training (the paper's Fig. 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuitpath.runs import Run


@dataclass
class AttentionOverTraining:
    """Mean attention on each key position at each checkpoint, over a fixed set of probe inputs."""

    steps: list[int]
    pattern: Tensor  # [n_steps, key_pos]
    k: int
    phase_switches: list[int]

    @property
    def first_k_mass(self) -> Tensor:
        """Attention mass on the k summed positions, per checkpoint."""
        return self.pattern[:, : self.k].sum(1)

    @property
    def max_spurious(self) -> Tensor:
        """Largest mean attention on any one spurious position, per checkpoint (0 when k = T)."""
        if self.k == self.pattern.shape[1]:
            return torch.zeros(len(self.steps))
        return self.pattern[:, self.k :].max(1).values


@torch.no_grad()
def attention_over_training(run: Run, n: int = 512, phase: int = -1, steps: list[int] | None = None) -> AttentionOverTraining:
    """Read `blocks.0.attn.hook_pattern` at every checkpoint on the first n test inputs of `phase`."""
    probe = run.data(phase).x_test[:n]
    steps = run.steps if steps is None else steps
    patterns = []
    for step in steps:
        _, cache = run.model_at(step).run_with_cache(probe, names_filter="blocks.0.attn.hook_pattern")
        patterns.append(cache["blocks.0.attn.hook_pattern"].mean(0))
    return AttentionOverTraining(list(steps), torch.stack(patterns), run.config.task.k, run.phase_boundaries())
