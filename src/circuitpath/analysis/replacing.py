"""Logits with parts of one activation replaced, for many masks at once: the engine of patching and ablation.

Each mask selects a part of the activation at one hook; for every mask the model runs on the inputs
with that part taken from a replacement (the clean run, zeros, a mean, other inputs). The masks'
copies of the batch go through the model together, and only as much of the model is recomputed as
the hook needs:

- after the MLP's nonlinearity (`hook_pre`, `hook_post`, `hook_mlp_out`, `hook_resid_post`) the
  logits are linear in the activation, so each copy's logits are the cached ones plus the masked
  change times a fixed matrix: no forward pass at all;
- at the values and the attention pattern, z_A = sum_t a_t v_t is linear in each, so a copy's z_A is
  the cached one plus its masked change mixed in, and only the layers after z_A run again;
- from the attention scores on the model resumes at the hook (`CrossAttentionTransformer.run_from`);
- before that, a full forward pass with a hook that swaps the activation in.

The standard transformer (`analysis.models.is_paper` false) always takes the last way: a full
forward pass with the activation swapped in at the hook, whatever the hook.

The shortcuts skip hook points, so they apply only while no hook is attached to the model; with a
hook attached every later hook point fires as in an ordinary forward pass.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitpath.analysis.models import is_paper
from circuitpath.models.model import CrossAttentionTransformer

PATTERN, VALUES, ATTN_OUT = "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_v", "blocks.0.hook_attn_out"
PRE, POST, MLP_OUT, RESID_POST = (
    "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post",
)

#: Hooks from which the forward pass can resume (`CrossAttentionTransformer.run_from`).
RESUMABLE = (
    "blocks.0.attn.hook_attn_scores", PATTERN, VALUES, ATTN_OUT, "blocks.0.ln2.hook_normalized",
    PRE, POST, MLP_OUT, RESID_POST,
)

#: Rows (copies x batch) a pass: small enough to stay in the CPU caches, where the MLP runs fastest.
DEFAULT_MAX_BATCH = 1 << 13


@torch.no_grad()
def run_replaced(
    model: CrossAttentionTransformer,
    hook: str,
    tokens: Int[Tensor, "batch pos"],
    cache: dict[str, Tensor],
    replacement: Tensor,
    masks: Bool[Tensor, "n ..."],
    max_batch: int = DEFAULT_MAX_BATCH,
    lean: bool = False,
) -> Float[Tensor, "n batch n_tokens"]:
    """Logits on `tokens` with, for each mask, the masked part of `hook` taken from `replacement`.

    `cache` holds every activation of `tokens` (`model.run_with_cache(tokens)`); `replacement` has
    the activation's shape and `masks` is [n, *activation shape without batch]. At most `max_batch`
    sequences (copies x batch) go through the model a pass. `lean` runs the passes with
    `model.lean_forward(hook)` (compare them with a lean pass: the logits differ by rounding).
    """
    batch = cache[hook].shape[0]
    run, rows_per_mask = _plan(model, hook, tokens, cache, replacement, lean)
    chunks = masks.split(max(1, max_batch // max(batch * rows_per_mask, 1)))
    return torch.cat([run(chunk).view(len(chunk), batch, -1) for chunk in chunks])


def _plan(model, hook, tokens, cache, replacement, lean=False) -> tuple[Callable[[Tensor], Tensor], int]:
    """The function from a chunk of masks to their logits [masks x batch, n_tokens], and the model
    rows a mask costs per input (0 where no layer runs again: the chunk is all the masks)."""
    if not is_paper(model):
        return partial(_swapped, model, hook, tokens, cache, replacement, model.lean_forward(hook) if lean else {}), 1
    hooked = any(point._forward_hooks or point._forward_pre_hooks for point in model.hook_dict.values())
    if not hooked and hook in (PRE, POST, MLP_OUT, RESID_POST):
        return _linear_logits(model, hook, cache, replacement), 0
    if not hooked and hook in (VALUES, PATTERN):
        return _linear_attention(model, hook, cache, replacement), 1
    return partial(_resume, model, hook, tokens, cache, replacement), 1


def _linear_logits(model, hook, cache, replacement) -> Callable[[Tensor], Tensor]:
    """logits = (z̄_A + post W_out + b_out) W_U: linear in post, mlp_out and resid_post.

    A neuron of hook_pre only reaches the logits through GELU of itself, so replacing it is
    replacing post with GELU(replacement) on the same mask.
    """
    if hook == PRE:
        hook, replacement = POST, F.gelu(replacement)
    to_logits = model.W_out @ model.W_U if hook == POST else model.W_U
    # [unit, batch * vocab]: what each unit's change adds to each logit
    change = ((replacement - cache[hook]).T.unsqueeze(-1) * to_logits.unsqueeze(1)).flatten(1)
    logits = (cache[RESID_POST] @ model.W_U).flatten()
    return lambda masks: (logits + masks.to(change.dtype) @ change).view(-1, to_logits.shape[-1])


def _linear_attention(model, hook, cache, replacement) -> Callable[[Tensor], Tensor]:
    """z_A = sum_t a_t v_t: a copy's z_A is the cached one plus the mixed-in change of its masked part."""
    pattern, values = cache[PATTERN], cache[VALUES]
    if hook == VALUES:
        change = pattern.unsqueeze(-1) * (replacement - values)
    else:
        change = (replacement - pattern).unsqueeze(-1) * values
    # masks over whole key positions (the usual case) mix in with one product: [n, key_pos] x [key_pos, batch * d]
    by_position = einops.rearrange(change, "batch key_pos d_model -> key_pos (batch d_model)")

    def run(masks: Tensor) -> Tensor:
        masks = masks.to(change.dtype)
        if masks.ndim == 3 and bool((masks == masks[..., :1]).all()):
            masks = masks[..., 0]
        if masks.ndim == 2:
            moved = (masks @ by_position).view(len(masks), *cache[ATTN_OUT].shape)
        else:
            moved = einops.einsum(masks, change, "n key_pos d_model, batch key_pos d_model -> n batch d_model")
        return model.run_from(ATTN_OUT, (cache[ATTN_OUT] + moved).flatten(0, 1), cache)

    return run


def _resume(model, hook, tokens, cache, replacement, masks) -> Tensor:
    """Resume the forward pass at the hook, or run it whole with the activation swapped in."""
    # [n, 1, ...] mask against [1, batch, ...] activations: only the result is materialised
    patched = torch.where(masks[:, None], replacement[None], cache[hook][None])
    patched = einops.rearrange(patched, "n batch ... -> (n batch) ...")
    if hook in RESUMABLE:
        return model.run_from(hook, patched, cache)
    return _forward_swapped(model, hook, tokens, masks.shape[0], patched)


def _swapped(model, hook, tokens, cache, replacement, options, masks) -> Tensor:
    """A forward pass per mask with the masked part of the activation swapped in (any model);
    `options` go to the model's forward."""
    patched = torch.where(masks[:, None], replacement[None], cache[hook][None])
    return _forward_swapped(model, hook, tokens, masks.shape[0], einops.rearrange(patched, "n batch ... -> (n batch) ..."),
                            options)


def _forward_swapped(model, hook, tokens, copies: int, patched: Tensor, options: dict | None = None) -> Tensor:
    return model.run_with_hooks(tokens.repeat(copies, 1), fwd_hooks=[(hook, lambda act, hook: patched)], **(options or {}))
