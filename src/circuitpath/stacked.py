"""The standard transformer's engine: S runs' stacked weights through one vmapped gradient.

The weights of S runs live in the engine's flat buffer `theta` [S, P] (`engine.Layout`); their views
[S, *shape] go through `torch.func.vmap` over the hooked model called by `torch.func.functional_call`,
so the hooked model itself (its hooks idle) is the function trained; autograd takes the gradient of
the summed losses straight into one [S, P] buffer for the engine's Adam.

Same config, same bytes: `engine.Executor` calls this with one run a chunk on the CPU, every kernel on
one thread, so a run's arithmetic never depends on its batch-mates (a vmapped product over S runs is
a batched matrix product whose code path and alignment depend on S). On a GPU the whole group is one
chunk. `benchmarks/bench_transformer.py` measures what either arrangement costs.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from torch.func import functional_call, vmap

from circuitpath.config import ModelConfig
from circuitpath.transformer import StandardTransformer

_local = threading.local()  # one template model per thread: functional_call swaps its parameters in place


def template(cfg: ModelConfig, device: torch.device) -> StandardTransformer:
    """This thread's model of `cfg` on `device`, whose parameters functional_call replaces."""
    models = _local.__dict__.setdefault("models", {})
    key = (replace(cfg, seed=0), str(device))  # the seed only draws weights, which are replaced
    if key not in models:
        models[key] = StandardTransformer(key[0]).to(device)
    return models[key]


def tokens_of(index: Int[Tensor, "runs batch_pos"], n_ctx: int) -> Int[Tensor, "runs batch pos"]:
    """The sequences back from the engine's (token, position) index, token * n_ctx + position."""
    return torch.div(index, n_ctx, rounding_mode="floor").view(index.shape[0], -1, n_ctx)


def stacked_logits(model: StandardTransformer, weights: dict[str, Tensor],
                   tokens: Int[Tensor, "runs batch pos"]) -> Float[Tensor, "runs batch n_tokens"]:
    """Each run's logits with its own weights [runs, *shape]: the hooked model under `functional_call`,
    vmapped over the runs (a lone run is called directly: the same function, without vmap's overhead)."""
    def call(w: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, w, (x,), {"engine": True})

    if tokens.shape[0] == 1:
        return call({name: value[0] for name, value in weights.items()}, tokens[0])[None]
    return vmap(call)(weights, tokens)


def loss_and_grad(theta: Float[Tensor, "runs P"], layout, data) -> tuple[Float[Tensor, " runs"], Float[Tensor, "runs P"]]:
    """Each run's mean cross-entropy on its sequences and its gradient [runs, P] (zero on the padding);
    runs are independent, so the gradient of the sum of losses splits by run."""
    theta = theta.detach().requires_grad_(True)
    model = template(layout.cfg, theta.device)
    out = stacked_logits(model, layout.views(theta), tokens_of(data.index, layout.cfg.n_ctx))
    losses = run_losses(out, data.targets)
    (grad,) = torch.autograd.grad(losses.sum(), theta)
    return losses.detach(), grad


def run_losses(out: Float[Tensor, "runs batch n_tokens"], targets: Int[Tensor, "runs batch"]) -> Float[Tensor, " runs"]:
    runs, batch, n_tokens = out.shape
    return F.cross_entropy(out.reshape(-1, n_tokens), targets.reshape(-1), reduction="none").view(runs, batch).mean(1)


@torch.no_grad()
def evaluate(theta: Float[Tensor, "runs P"], layout, data) -> tuple[Float[Tensor, " runs"], Float[Tensor, " runs"]]:
    """Loss and accuracy of each run on its own sequences."""
    model = template(layout.cfg, theta.device)
    out = stacked_logits(model, layout.views(theta), tokens_of(data.index, layout.cfg.n_ctx))
    return run_losses(out, data.targets), (out.argmax(-1) == data.targets).float().mean(1)
