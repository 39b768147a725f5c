"""The model at the start of a fine-tune: how far from the new task it starts, and why.

At the switch from p = 2 to p = 4 the tokens 2 and 3 have never been inputs; with a tied unembedding
their rows of W_E were trained only as outputs, pushed down on every example. This measures, on the
fine-tune's training data, the loss and accuracy at the switch, the scale of the logits, and for
each token row whether it was seen as an input before, its norm, its mean logit and the loss of the
examples whose target it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from circuitpath.config import ModelConfig
from circuitpath.data import Split
from circuitpath.errors import RunError
from circuitpath.models.model import CrossAttentionTransformer
from circuitpath.runs import Run


@dataclass(frozen=True)
class TokenRow:
    """One row of the embedding table at the switch."""

    token: int
    seen: bool
    """Whether the token appeared as an input in the earlier phases' training data."""
    norm: float
    """|W_E[token]|, its length as an input embedding and (tied) as an output direction."""
    mean_logit: float
    """Its logit, averaged over the fine-tune's training inputs."""
    target_loss: float
    """Mean cross-entropy of the training examples whose target is this token (nan if none)."""
    targets: int
    """Number of training examples whose target is this token."""


@dataclass(frozen=True)
class FinetuneStart:
    """The model at a fine-tune's first step, measured on the fine-tune's training set."""

    p: int
    loss: float
    """Mean cross-entropy at the switch (ln p at chance)."""
    accuracy: float
    mean_max_abs_logit: float
    """Largest |logit| of an input, averaged over the inputs: the scale of the predictions."""
    rows: tuple[TokenRow, ...]

    @property
    def chance_loss(self) -> float:
        return math.log(self.p)

    @property
    def unseen(self) -> list[int]:
        """Tokens of the fine-tune's alphabet never seen as inputs before it."""
        return [row.token for row in self.rows if not row.seen and row.token < self.p]


def seen_tokens(inputs: list[Int[Tensor, "batch pos"]]) -> set[int]:
    """Every token value that occurs in the given input tensors."""
    return {int(t) for x in inputs for t in torch.unique(x).tolist()}


@torch.no_grad()
def finetune_start(weights: dict[str, Tensor], cfg: ModelConfig, split: Split, p: int, seen: set[int]) -> FinetuneStart:
    """Measure `weights` on the fine-tune's training set (`split`, modulus `p`); `seen`: tokens input before."""
    logits = CrossAttentionTransformer(cfg, weights)(split.x_train)  # [batch, n_tokens]
    losses = F.cross_entropy(logits, split.y_train, reduction="none")
    rows = tuple(_row(token, weights["W_E"], logits, losses, split.y_train, token in seen) for token in range(cfg.n_tokens))
    return FinetuneStart(p=p, loss=losses.mean().item(), accuracy=(logits.argmax(-1) == split.y_train).float().mean().item(),
                         mean_max_abs_logit=logits.abs().amax(-1).mean().item(), rows=rows)


def _row(token: int, W_E: Tensor, logits: Tensor, losses: Tensor, y: Tensor, seen: bool) -> TokenRow:
    mask = y == token
    target_loss = losses[mask].mean().item() if mask.any() else math.nan
    return TokenRow(token=token, seen=seen, norm=W_E[token].norm().item(), mean_logit=logits[:, token].mean().item(),
                    target_loss=target_loss, targets=int(mask.sum()))


def run_finetune_start(run: Run, phase: int = 1) -> FinetuneStart:
    """`finetune_start` of a run at the first step of `phase` (by default its second), on that phase's data."""
    phases = run.config.train.phases
    if not 1 <= phase < len(phases):
        raise RunError(f"phase must be 1..{len(phases) - 1} (a phase after another) in {run.path}, got {phase}")
    step = run.config.train.phase_starts()[phase]
    seen = seen_tokens([run.data(i).x_train for i in range(phase)])
    return finetune_start(run.weights_at(step), run.config.model, run.data(phase), phases[phase].p, seen)
