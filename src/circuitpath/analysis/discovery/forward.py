"""The forward pass written over the graph's sites: with gradients at every site, or with sites knocked out.

`forward_sites` runs the model from the attention's inputs and returns every site's activation as a
tensor autograd can differentiate against. `late_gradients` runs it from z_A and returns a metric's
gradient at every site from z_A on, derived by hand (attribution patching). `run_kept` runs it with,
for each of many masks, the sites left out of the mask replaced by their mean (faithfulness curves,
greedy pruning). All are built from the model's own submodules; tests hold them to the hooked
forward pass and to autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitpath.analysis.discovery.graph import GROUPS, ModelGraph
from circuitpath.analysis.replacing import DEFAULT_MAX_BATCH
from circuitpath.errors import InputError
from circuitpath.models.weights import root_mean_square
from circuitpath.training.engine import rms_backward as _rms_backward


def embed(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """W_E[x_t] + p_t, the input of the block (`blocks.0.hook_resid_pre`)."""
    model.check_tokens(tokens)
    return model.embed(tokens) + model.pos_embed(tokens)


def attention_inputs(model, resid: Float[Tensor, "batch pos d_model"]) -> tuple[Tensor, Tensor]:
    """The attention pattern [batch, key_pos] and values [batch, key_pos, d_model] of the block's input."""
    attn = model.blocks[0].attn
    z = model.blocks[0].ln1(resid)
    return attn.pattern((z @ attn.W_Q) / attn.scale), z @ attn.W_V


@dataclass
class TokenAttention:
    """The attention's inputs for token sequences, kept as tables: z_t, its score and its value depend
    only on (token, position), so each is computed once per pair, and z_A = sum_t a_t v_t is one
    product of a [batch, pairs] weight matrix with the [pairs, d_model] value table."""

    pattern: Float[Tensor, "batch key_pos"]
    rows: Int[Tensor, "batch key_pos"]  # the (token, position) pair of each input position
    table: Float[Tensor, "pair d_model"]  # value of each pair

    @classmethod
    def of(cls, model, tokens: Int[Tensor, "batch pos"], tables: tuple[Tensor, Tensor] | None = None) -> TokenAttention:
        """`tables`: `token_tables(model)`, to share between several token batches."""
        model.check_tokens(tokens)
        scores, values = token_tables(model) if tables is None else tables
        rows = tokens * tokens.shape[1] + torch.arange(tokens.shape[1], device=tokens.device)
        return cls(model.blocks[0].attn.pattern(F.embedding(rows, scores[:, None]).squeeze(-1)), rows, values)

    def values(self) -> Float[Tensor, "batch key_pos d_model"]:
        return F.embedding(self.rows, self.table)  # 5x faster than advanced indexing

    def z_attn(self) -> Float[Tensor, "batch d_model"]:
        weights = self.pattern.new_zeros(self.pattern.shape[0], self.table.shape[0])
        return weights.scatter_add_(1, self.rows, self.pattern) @ self.table

    def read(self, per_pair: Float[Tensor, "batch pair"]) -> Float[Tensor, "batch key_pos"]:
        """Each input position's entry of a per-pair table (e.g. v . g for every pair: `g @ table.T`)."""
        return per_pair.gather(1, self.rows)


def token_tables(model) -> tuple[Float[Tensor, " pair"], Float[Tensor, "pair d_model"]]:
    """The attention score and the value of z_t for every (token, position) pair, pair = token * T + t."""
    attn = model.blocks[0].attn
    z = model.blocks[0].ln1(model.W_E[:, None, :] + model.W_pos[None]).flatten(0, 1)  # [pair, d_model]
    return z @ attn.W_Q / attn.scale, z @ attn.W_V


def forward_sites(model, pattern: Float[Tensor, "batch key_pos"], values: Float[Tensor, "batch key_pos d_model"]) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits [batch, n_tokens] and each site group's activation, in one autograd graph from the
    attention's inputs on."""
    logits, acts = forward_from_attention(model, model.blocks[0].attn.mix(pattern, values))
    return logits, {"value": values, "pattern": pattern, **acts}


def forward_from_attention(model, z_attn: Float[Tensor, "batch d_model"]) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits and the activations of the sites from z_A on (attention, neuron_in, neuron, mlp, residual)."""
    block = model.blocks[0]
    mlp = block.mlp
    z_bar = block.ln2(z_attn)
    pre = torch.addmm(mlp.b_in, z_bar, mlp.W_in)
    post = F.gelu(pre)
    mlp_out = mlp.from_post(post)
    residual = block.residual(z_attn, z_bar).clone()  # a copy, so that its gradient is the residual path's alone
    logits = _times_w_u(residual + mlp_out, model.W_U)
    return logits, {"attention": z_attn, "neuron_in": pre, "neuron": post, "mlp": mlp_out, "residual": residual}


def late_gradients(model, z_attn: Float[Tensor, "rows d_model"], logits_gradient
                   ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """`forward_from_attention`, and the gradient of a metric at each of its sites, derived by hand
    from the metric's gradient at the logits, `logits_gradient(logits)` (`metric_gradient`).

    With r the residual path and z_O = r + MLP(z̄_A): g_mlp = g_r = g_logits W_Uᵀ, g_neuron =
    g_mlp W_outᵀ, g_neuron_in = GELU'(pre) g_neuron, and g_attention is the RMS norm's backward of
    g_neuron_in W_inᵀ (+ g_r where r = z̄_A), + g_r where r = z_A. A test holds it to autograd."""
    block = model.blocks[0]
    mlp = block.mlp
    logits, acts = forward_from_attention(model, z_attn)
    g_logits = logits_gradient(logits)
    g_out = g_logits @ model.W_U.T  # the gradient at the MLP output and at the residual path
    g_post = g_logits @ (model.W_U.T @ mlp.W_out.T)  # [n_tokens, d_mlp] first: 2x faster than via g_out
    g_pre = torch.ops.aten.gelu_backward(g_post, acts["neuron_in"])
    g_bar = g_pre @ mlp.W_in.T
    normalized = block.residual_carries != "attn_out"
    root = root_mean_square(z_attn)
    g_attn = _rms_backward(g_bar + g_out if normalized else g_bar, z_attn, root + block.ln2.eps, root)
    grads = {"attention": g_attn if normalized else g_attn + g_out, "neuron_in": g_pre, "neuron": g_post,
             "mlp": g_out, "residual": g_out}
    return logits, acts, grads


def metric_gradient(metric: str, labels: Int[Tensor, " rows"], corrupted_labels: Int[Tensor, " rows"]):
    """The gradient at the logits [rows, n_tokens] of a metric of `patching.METRICS` averaged over the
    rows: logit_diff (logit of the label - logit of the corrupted label) or loss (cross-entropy)."""
    def gradient(logits: Tensor) -> Tensor:
        rows = logits.shape[0]
        if metric == "logit_diff":
            g = logits.new_zeros(logits.shape).scatter_(1, labels[:, None], 1.0 / rows)
            return g.scatter_add_(1, corrupted_labels[:, None], logits.new_full((rows, 1), -1.0 / rows))
        if metric == "loss":
            return logits.softmax(-1).scatter_add_(1, labels[:, None], logits.new_full((rows, 1), -1.0)).div_(rows)
        raise InputError(f"no gradient for metric {metric!r}")
    return gradient


def _times_w_u(z_out: Float[Tensor, "rows d_model"], w_u: Float[Tensor, "d_model n_tokens"]) -> Tensor:
    """z_O W_U computed as (W_Uᵀ z_Oᵀ)ᵀ: with 4 output columns this orientation is ~1.5x faster on the CPU."""
    return (w_u.T @ z_out.T).T


def site_means(acts: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each group's activation averaged over the batch: what a knocked-out site is replaced by."""
    return {group: value.mean(0) for group, value in acts.items()}


@torch.no_grad()
def run_kept(
    model,
    graph: ModelGraph,
    acts: dict[str, Tensor],
    keep: Bool[Tensor, "mask site"],
    means: dict[str, Tensor] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Float[Tensor, "mask batch n_tokens"]:
    """Logits with, for each mask, every site the mask leaves out replaced by its mean over the batch.

    `acts` are the site activations of the inputs (`forward_sites` or `site_activations`); `means`
    default to their batch means. The layers up to the MLP's nonlinearity run once per distinct
    choice of the sites before it (the masks of a faithfulness curve share a few), at most
    `max_batch` rows (choices x batch) a pass; after it the logits are linear in the neurons, the
    MLP output and the residual path, so a mask's logits are a few small products.
    """
    means = site_means(acts) if means is None else means
    batch, keep = acts["attention"].shape[0], keep.to(acts["attention"].device)
    choices, which = torch.unique(keep[:, : graph.slices["neuron"].start].to(torch.uint8), dim=0, return_inverse=True)
    terms = _attention_terms(acts)
    late = _LateLogits(model, graph, means, keep)
    out = acts["attention"].new_empty(keep.shape[0], batch, model.W_U.shape[1])
    per_pass = max(1, max_batch // batch)
    for first in range(0, len(choices), per_pass):
        chunk = choices[first : first + per_pass].bool()
        for offset, (post, residual) in enumerate(zip(*_up_to_neurons(model, graph, terms, acts, means, chunk))):
            rows = (which == first + offset).nonzero().squeeze(1)
            out[rows] = late(rows, post, residual)
    return out


def _attention_terms(acts: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """a_t v_t and v_t, each [key_pos, batch x d_model], the layout a mask's weights over key_pos multiply."""
    values = acts["value"].transpose(0, 1)  # [key_pos, batch, d_model]
    return (acts["pattern"].T.unsqueeze(-1) * values).flatten(1), values.flatten(1)


def _up_to_neurons(model, graph, terms, acts, means, keep) -> tuple[Tensor, Tensor]:
    """The neurons and the residual path [choice, batch, ...] for each choice of kept early sites.

    With a' = k a + (1 - k) mean(a) and v' likewise, z_A = sum_t a'_t v'_t is the sum of four
    products: k^a k^v (a v), (1 - k^a) k^v mean(a) v, k^a (1 - k^v) a mean(v), and the means' product."""
    block, (products, values) = model.blocks[0], terms
    k = {group: keep[:, graph.slices[group]] for group in ("value", "pattern", "attention", "neuron_in")}
    kp, kv = k["pattern"].to(values.dtype), k["value"].to(values.dtype)
    a_mean, v_mean = means["pattern"], means["value"]
    z_attn = ((kp * kv) @ products + ((1 - kp) * kv * a_mean) @ values).view(keep.shape[0], -1, v_mean.shape[-1])
    z_attn += ((kp * (1 - kv))[:, None, :] * acts["pattern"]) @ v_mean  # [choice, batch, key_pos] x [key_pos, d_model]
    z_attn += (((1 - kp) * (1 - kv) * a_mean) @ v_mean)[:, None]
    z_attn = _keep(z_attn, means["attention"], k["attention"])
    z_bar = block.ln2(z_attn)
    pre = torch.addmm(block.mlp.b_in, z_bar.flatten(0, 1), block.mlp.W_in).view(*z_bar.shape[:2], -1)
    return F.gelu(_keep(pre, means["neuron_in"], k["neuron_in"])), block.residual(z_attn, z_bar)


class _LateLogits:
    """A mask's logits from its choice's neurons and residual path: (residual' + post' W_out + b_out) W_U,
    a primed term its mean where the mask drops it. The logits are linear in post' = mean + k (post -
    mean), so the neurons add post (k W_out W_U) - mean (k W_out W_U) to the MLP's mean logits."""

    def __init__(self, model, graph: ModelGraph, means: dict[str, Tensor], keep: Tensor):
        self.w_u, self.mean_post = model.W_U, means["neuron"]
        self.to_logits = model.W_out @ self.w_u  # [d_mlp, n_tokens]
        self.k = {group: keep[:, graph.slices[group]] for group in ("neuron", "mlp", "residual")}
        self.mlp_base = (means["neuron"] @ model.W_out + model.b_out) @ self.w_u  # every neuron at its mean
        self.mlp_mean, self.residual_mean = means["mlp"] @ self.w_u, means["residual"] @ self.w_u

    def __call__(self, rows: Tensor, post: Float[Tensor, "batch d_mlp"], residual: Float[Tensor, "batch d_model"]) -> Tensor:
        weights = self.k["neuron"][rows, :, None] * self.to_logits  # [mask, d_mlp, n_tokens]
        neurons = torch.einsum("bh,mho->mbo", post, weights) - (self.mean_post @ weights)[:, None]
        mlp = torch.where(self.k["mlp"][rows, :, None], self.mlp_base + neurons, self.mlp_mean)
        return mlp + torch.where(self.k["residual"][rows, :, None], residual @ self.w_u, self.residual_mean)


def _keep(value: Tensor, mean: Tensor, keep: Tensor) -> Tensor:
    """value [choice, batch, units] where keep [choice, units or 1] holds, the mean elsewhere."""
    if bool(keep.all()):
        return value
    return torch.where(keep[:, None, :], value, mean)
