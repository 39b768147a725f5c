"""The training engine: the hooked model's exact function for S independent runs at once, cheaper.

Two facts make it cheaper than running `CrossAttentionTransformer` S times:
- z_t = RMS(W_E[x_t] + p_t) depends only on (token, position), so it is computed once per table
  entry (n_tokens x T rows) instead of once per sequence and position;
- attention is linear in the values, so sum_t a_t (z_t W_V) = (sum_t a_t z_t) W_V, and with the
  table that becomes (A ⊙ onehot(x)) @ (Z W_V): a [batch, V*T] x [V*T, d] product.

The S runs' weights live side by side in one flat buffer `theta` [S, P], so Adam is a handful of
whole-buffer operations. Tests hold this engine to the hooked model (logits and gradients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuitpath.config import ModelConfig
from circuitpath.model import weight_shapes


@dataclass(frozen=True)
class Layout:
    """Where each weight lives in a flat parameter row of length `size`."""

    cfg: ModelConfig
    shapes: dict[str, tuple[int, ...]]
    offsets: dict[str, tuple[int, int]]
    size: int

    @classmethod
    def of(cls, cfg: ModelConfig) -> Layout:
        shapes, offsets, start = weight_shapes(cfg), {}, 0
        for name, shape in shapes.items():
            offsets[name] = (start, start + math.prod(shape))
            start += math.prod(shape)
        return cls(cfg, shapes, offsets, start)

    def views(self, theta: Float[Tensor, "runs P"]) -> dict[str, Tensor]:
        """Weight views [runs, *shape] into theta (gradients flow back into theta)."""
        runs = theta.shape[0]
        return {
            name: theta[:, start:end].view(runs, *self.shapes[name])
            for name, (start, end) in self.offsets.items()
        }

    def pack(self, weights: list[dict[str, Tensor]]) -> Float[Tensor, "runs P"]:
        """Stack the weight dicts of several runs into one flat buffer."""
        return torch.stack(
            [torch.cat([w[name].reshape(-1).float() for name in self.shapes]) for w in weights]
        )

    def unpack(self, row: Float[Tensor, " P"]) -> dict[str, Tensor]:
        """The weight dict of one run (contiguous CPU copies, ready for safetensors)."""
        return {
            name: row[start:end].detach().reshape(self.shapes[name]).cpu().clone()
            for name, (start, end) in self.offsets.items()
        }


@dataclass(frozen=True)
class Encoded:
    """Sequences of S runs prepared for the engine: one-hot over (token, position) and score indices."""

    onehot: Float[Tensor, "runs batch table"]  # table = n_tokens * n_ctx, index token * n_ctx + pos
    index: Int[Tensor, "runs batch_pos"]
    targets: Int[Tensor, "runs batch"]

    @classmethod
    def of(cls, x: Int[Tensor, "runs batch pos"], y: Int[Tensor, "runs batch"], n_tokens: int) -> Encoded:
        runs, batch, n_ctx = x.shape
        index = x * n_ctx + torch.arange(n_ctx, device=x.device)
        onehot = torch.zeros(runs, batch, n_tokens * n_ctx, device=x.device)
        onehot.scatter_(2, index, 1.0)
        return cls(onehot, index.reshape(runs, batch * n_ctx), y)


def rms(x: Tensor, eps: float) -> Tensor:
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)


def forward(w: dict[str, Tensor], data: Encoded, cfg: ModelConfig) -> Float[Tensor, "runs batch n_tokens"]:
    """Logits of every run on its own sequences; the hooked model's function, batched over runs."""
    runs, batch, table = data.onehot.shape
    n_ctx, d = cfg.n_ctx, cfg.d_model
    z = rms(w["W_E"][:, :, None, :] + w["W_pos"][:, None, :, :], cfg.eps)  # [runs, V, T, d]
    z = z.reshape(runs, table, d)
    score_table = (z @ w["W_Q"][:, :, None]).squeeze(-1) / math.sqrt(d)  # [runs, table]
    scores = score_table.gather(1, data.index).view(runs, batch, n_ctx)
    pattern = scores.softmax(dim=-1)  # [runs, batch, key_pos]
    mixing = data.onehot * pattern.repeat(1, 1, cfg.n_tokens)  # [runs, batch, table]
    z_attn = mixing @ (z @ w["W_V"])  # [runs, batch, d]
    z_bar = rms(z_attn, cfg.eps)
    post = F.gelu(torch.baddbmm(w["b_in"][:, None, :], z_bar, w["W_in"]))  # [runs, batch, h]
    z_out = z_bar + torch.baddbmm(w["b_out"][:, None, :], post, w["W_out"])
    w_u = w["W_E"].transpose(1, 2) if cfg.tied else w["W_U"]
    return z_out @ w_u


def run_losses(logits: Tensor, targets: Int[Tensor, "runs batch"]) -> Float[Tensor, " runs"]:
    """Mean cross-entropy of each run."""
    runs, batch, n_tokens = logits.shape
    losses = F.cross_entropy(logits.reshape(-1, n_tokens), targets.reshape(-1), reduction="none")
    return losses.view(runs, batch).mean(1)


def loss_and_grad(
    theta: Float[Tensor, "runs P"], layout: Layout, data: Encoded
) -> tuple[Float[Tensor, " runs"], Float[Tensor, "runs P"]]:
    """Each run's loss and its gradient (runs are independent: the sum's gradient splits by row)."""
    theta = theta.detach().requires_grad_(True)
    losses = run_losses(forward(layout.views(theta), data, layout.cfg), data.targets)
    (grad,) = torch.autograd.grad(losses.sum(), theta)
    return losses.detach(), grad


@torch.no_grad()
def evaluate(
    theta: Float[Tensor, "runs P"], layout: Layout, data: Encoded
) -> tuple[Float[Tensor, " runs"], Float[Tensor, " runs"]]:
    """Loss and accuracy of each run on its own sequences."""
    logits = forward(layout.views(theta), data, layout.cfg)
    accuracy = (logits.argmax(-1) == data.targets).float().mean(1)
    return run_losses(logits, data.targets), accuracy


class Adam:
    """torch.optim.Adam's update (default betas and eps), on a flat [runs, P] buffer with one lr per run."""

    def __init__(self, theta: Tensor, lr: Float[Tensor, " runs"], betas=(0.9, 0.999), eps: float = 1e-8):
        self.m = torch.zeros_like(theta)
        self.v = torch.zeros_like(theta)
        self.step_count = 0
        self.lr = lr.to(theta)[:, None]
        self.beta1, self.beta2 = betas
        self.eps = eps

    @torch.no_grad()
    def step(self, theta: Tensor, grad: Tensor) -> None:
        self.step_count += 1
        self.m.lerp_(grad, 1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias1 = 1 - self.beta1**self.step_count
        bias2_sqrt = (1 - self.beta2**self.step_count) ** 0.5
        denom = (self.v.sqrt() / bias2_sqrt).add_(self.eps)
        theta.addcmul_(self.m / denom, self.lr, value=-1.0 / bias1)

    def state(self) -> dict[str, Tensor]:
        return {"m": self.m, "v": self.v}

    def load(self, m: Tensor, v: Tensor, step_count: int) -> None:
        self.m.copy_(m)
        self.v.copy_(v)
        self.step_count = step_count
