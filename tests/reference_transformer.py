"""A plain standard transformer, written from its equations with no hooks and no module tree.

Tests hold `transformer.StandardTransformer` to it, and benchmarks time both against it. It reads the
weights by `state_dict()` key, as checkpoints store them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from circuitpath.config import ModelConfig


def norm(x: Tensor, w: dict[str, Tensor], name: str, cfg: ModelConfig) -> Tensor:
    """RMSNorm x / sqrt(mean(x**2) + eps) * w, or LayerNorm of the centred x with w and b."""
    if cfg.norm == "layer":
        x = x - x.mean(-1, keepdim=True)
    x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.eps) * w[f"{name}.w"]
    return x + w[f"{name}.b"] if cfg.norm == "layer" else x


def attention(x: Tensor, w: dict[str, Tensor], at: str, cfg: ModelConfig) -> Tensor:
    """Multi-head self-attention over every position, head by head."""
    out = w[f"{at}.b_O"]
    for head in range(cfg.n_heads):
        q, k, v = (x @ w[f"{at}.W_{m}"][head] + w[f"{at}.b_{m}"][head] for m in "QKV")  # [batch, pos, d_head]
        pattern = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(cfg.d_head), dim=-1)
        out = out + (pattern @ v) @ w[f"{at}.W_O"][head]
    return out


def reference_logits(w: dict[str, Tensor], tokens: Tensor, cfg: ModelConfig) -> Tensor:
    """Logits [batch, n_tokens] at the readout position."""
    if cfg.readout == "cls":
        tokens = torch.cat([tokens, torch.full_like(tokens[:, :1], cfg.n_tokens)], dim=1)
    resid = w["embed.W_E"][tokens] + w["pos_embed.W_pos"]
    for layer in range(cfg.n_layers):
        at = f"blocks.{layer}"
        resid = resid + attention(norm(resid, w, f"{at}.ln1", cfg), w, f"{at}.attn", cfg)
        hidden = F.gelu(norm(resid, w, f"{at}.ln2", cfg) @ w[f"{at}.mlp.W_in"] + w[f"{at}.mlp.b_in"])
        resid = resid + hidden @ w[f"{at}.mlp.W_out"] + w[f"{at}.mlp.b_out"]
    position = {"cls": cfg.n_ctx, "last": cfg.n_ctx - 1}.get(cfg.readout, cfg.readout)
    w_u = w["embed.W_E"][: cfg.n_tokens].T if cfg.tied else w["unembed.W_U"]
    return norm(resid, w, "ln_final", cfg)[:, position] @ w_u
