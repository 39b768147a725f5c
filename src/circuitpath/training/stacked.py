"""The standard transformer's engine: S runs' stacked weights through one vmapped gradient.

The weights of S runs live in the engine's flat buffer `theta` [S, P] (`engine.Layout`); their views
[S, *shape] go through `torch.func.vmap` over the hooked model called by `torch.func.functional_call`,
so the hooked model itself (its hooks idle) is the function trained; autograd takes the gradient of
the summed losses straight into one [S, P] buffer for the engine's Adam.

Same config, same bytes: on the CPU, with every kernel on one thread, a vmapped run's bytes do not
depend on how many runs share its call or on its place among them, under each of PyTorch's CPU kernel
sets (tests/test_transformer.py holds every run of a vmapped call to the same run vmapped alone, and a
run trained in a group to the run trained alone). Every call is vmapped for that, a lone run's too:
called without vmap, a run's products are plain matrix products, whose rounding differs from the
batched ones (measured: gradients 1e-9 apart). So `engine.Executor` gives the transformer one chunk
of runs a core, as the fused path, and `call_groups` cuts a chunk into calls by their work alone.
On a GPU all runs go in one call. `benchmarks/bench_transformer.py` measures the arrangements.
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
from circuitpath.models.transformer import StandardTransformer

#: Sequence positions (runs x batch x positions) one vmapped call takes at most on the CPU. Small
#: batches of many runs share a call (a kernel call's overhead is paid once for them all); full
#: batches go a run or two a call, where batching buys nothing (`benchmarks/bench_transformer.py`).
WORK_PER_CALL = 8192

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
    vmapped over the runs. A lone run is vmapped too: called directly, its products would be plain
    matrix products instead of batched ones, which round differently."""
    return vmap(lambda w, x: functional_call(model, w, (x,), {"engine": True}))(weights, tokens)


def call_groups(runs: int, tokens: Tensor) -> list[slice]:
    """The runs of one vmapped call each: on the CPU at most WORK_PER_CALL sequence positions a call,
    at least one run; elsewhere every run in one call."""
    if tokens.device.type != "cpu":
        return [slice(0, runs)]
    size = max(1, WORK_PER_CALL // (tokens.shape[1] * tokens.shape[2]))
    return [slice(i, min(i + size, runs)) for i in range(0, runs, size)]


def loss_and_grad(theta: Float[Tensor, "runs P"], layout, data) -> tuple[Float[Tensor, " runs"], Float[Tensor, "runs P"]]:
    """Each run's mean cross-entropy on its sequences and its gradient [runs, P] (zero on the padding)."""
    tokens = tokens_of(data.index, layout.cfg.n_ctx)
    parts = [_loss_and_grad(theta[runs], layout, tokens[runs], data.targets[runs])
             for runs in call_groups(theta.shape[0], tokens)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _loss_and_grad(theta: Tensor, layout, tokens: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """One vmapped call; runs are independent, so the gradient of the summed losses splits by run.

    Each weight is a contiguous leaf of its own, whose gradients are laid side by side once: through
    views of theta, autograd would add a zero-padded [runs, P] copy of each weight's gradient into
    theta's (the same values, bitwise; 10-20% of a step, `benchmarks/bench_transformer.py`)."""
    weights = {name: view.detach().contiguous().requires_grad_(True) for name, view in layout.views(theta).items()}
    losses = run_losses(stacked_logits(template(layout.cfg, theta.device), weights, tokens), targets)
    grads = torch.autograd.grad(losses.sum(), list(weights.values()))
    return losses.detach(), layout.join(grads)


def run_losses(out: Float[Tensor, "runs batch n_tokens"], targets: Int[Tensor, "runs batch"]) -> Float[Tensor, " runs"]:
    runs, batch, n_tokens = out.shape
    return F.cross_entropy(out.reshape(-1, n_tokens), targets.reshape(-1), reduction="none").view(runs, batch).mean(1)


@torch.no_grad()
def evaluate(theta: Float[Tensor, "runs P"], layout, data) -> tuple[Float[Tensor, " runs"], Float[Tensor, " runs"]]:
    """Loss and accuracy of each run on its own sequences."""
    tokens, model = tokens_of(data.index, layout.cfg.n_ctx), template(layout.cfg, theta.device)
    losses, accuracies = [], []
    for runs in call_groups(theta.shape[0], tokens):
        out = stacked_logits(model, layout.views(theta[runs]), tokens[runs])
        losses.append(run_losses(out, data.targets[runs]))
        accuracies.append((out.argmax(-1) == data.targets[runs]).float().mean(1))
    return torch.cat(losses), torch.cat(accuracies)
