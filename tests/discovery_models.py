"""Models with a known circuit, for testing discovery: hand-set weights that sum the first k tokens,
and a small model trained on labels that have nothing to do with any position."""

from __future__ import annotations

import itertools
import math

import torch

from circuitpath import CrossAttentionTransformer, ModelConfig


def summing_model(p: int = 4, k: int = 3, n_ctx: int = 6, d_model: int = 8,
                  residual: str = "attn_out", positions: tuple[int, ...] | None = None) -> CrossAttentionTransformer:
    """Weights set by hand so that the model computes (x_1 + ... + x_k) mod p exactly, or the sum at the k
    given `positions`.

    - Embeddings: token x on axis x, position t on axis p with sign + for a summed t and - else, so every
      z_t has the same norm and its score z_t . W_Q / sqrt(d) is +40 on the summed positions and -40
      elsewhere: attention 1/k on each summed position and about 1e-35 on the others.
    - W_V keeps the token axes, so z_A is proportional to the count vector of the first k tokens.
    - One MLP neuron per multiset of k tokens: its input weight is that multiset's unit z̄_A and its
      bias sits halfway between the largest cosine of two different multisets and 1, so exactly
      one neuron fires (at +20; the others at <= -20, where GELU is 0 in float32).
    - W_out sends neuron j to the axis of its multiset's sum mod p; W_U = W_E.T reads it as the logit
      of that token, 20 against at most sqrt(d) from the residual (z_A or z̄_A).
    """
    multisets = list(itertools.combinations_with_replacement(range(p), k))
    cfg = ModelConfig(d_model=d_model, d_mlp=len(multisets), n_tokens=p, n_ctx=n_ctx, tied=True, residual=residual)
    eye = torch.eye(d_model)
    W_E = eye[:p].clone()
    summed = set(range(k) if positions is None else positions)
    W_pos = torch.stack([eye[p] if t in summed else -eye[p] for t in range(n_ctx)])
    z = lambda x: x / (torch.sqrt(x.square().mean(-1, keepdim=True)) + cfg.eps)  # RMS, equation 1 and 3
    axis = float(z(W_E[0] + W_pos[min(summed)])[p])  # every z_t has this on the position axis, up to its sign
    W_Q = eye[p] * 40 * math.sqrt(d_model) / axis
    W_V = torch.diag(torch.tensor([1.0] * p + [0.0] * (d_model - p)))
    counts = torch.zeros(len(multisets), d_model)
    for j, multiset in enumerate(multisets):
        for token in multiset:
            counts[j, token] += 1
    z_bar = z(counts * axis / k)  # z̄_A of each multiset
    unit = z_bar / z_bar.norm(dim=1, keepdim=True)
    c_max = float((unit @ unit.T - 2 * torch.eye(len(multisets))).max())  # closest two different multisets
    beta = 20 / (float(z_bar.norm(dim=1).min()) * (1 - c_max) / 2)
    W_out = torch.zeros(len(multisets), d_model)
    for j, multiset in enumerate(multisets):
        W_out[j, sum(multiset) % p] = 1.0
    weights = {"W_E": W_E, "W_pos": W_pos, "W_Q": W_Q, "W_V": W_V, "W_in": beta * unit.T,
               "b_in": -beta * z_bar.norm(dim=1) * (1 + c_max) / 2, "W_out": W_out, "b_out": torch.zeros(d_model)}
    return CrossAttentionTransformer(cfg, weights).eval()


def shuffled_label_model(seed: int, n_ctx: int = 12, p: int = 2, n: int = 256, steps: int = 300):
    """A model trained (Adam, full batch) on n random sequences whose labels are a random permutation
    of the task's: no position carries the answer. Returns (model, inputs, labels it was trained on)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(p, (n, n_ctx), generator=generator)
    y = x[:, : n_ctx // 2].sum(1) % p
    y = y[torch.randperm(n, generator=generator)]
    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_tokens=p, n_ctx=n_ctx, seed=seed))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # kernels this small only wait on each other across threads, badly on a busy machine
    try:
        for _ in range(steps):
            optimiser.zero_grad()
            model(x, return_type="loss", targets=y).backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), x, y
