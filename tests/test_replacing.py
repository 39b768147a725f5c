"""run_replaced's shortcuts (linear logits, linear attention) against one hooked forward pass per mask."""

import pytest
import torch

from circuitpath import CrossAttentionTransformer, ModelConfig
from circuitpath.analysis.replacing import RESUMABLE, run_replaced
from reference import logits_with_each_mask_replaced


@pytest.fixture(params=["attn_out", "normalized"])
def setup(request):
    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, residual=request.param, seed=7))
    tokens = torch.randint(0, 4, (40, 8), generator=torch.Generator().manual_seed(2))
    return model, tokens


def replacements(activation):
    generator = torch.Generator().manual_seed(3)
    return {
        "zero": torch.zeros_like(activation),
        "mean": activation.mean(0, keepdim=True).expand_as(activation),
        "resample": activation[torch.randperm(activation.shape[0], generator=generator)],
    }


@pytest.mark.parametrize("hook", RESUMABLE)
@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_any_masks_equal_one_hooked_forward_each(setup, hook, method):
    model, tokens = setup
    _, cache = model.run_with_cache(tokens)
    replacement = replacements(cache[hook])[method]
    # arbitrary element masks, not only whole slices, so the general paths run too
    masks = torch.rand(6, *cache[hook].shape[1:], generator=torch.Generator().manual_seed(4)) < 0.3
    got = run_replaced(model, hook, tokens, cache, replacement, masks, max_batch=90)  # several passes
    expected = torch.stack(list(logits_with_each_mask_replaced(model, tokens, hook, masks, replacement)))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hook", ["blocks.0.mlp.hook_post", "blocks.0.attn.hook_v"])
def test_an_attached_hook_still_acts_on_every_patched_copy(setup, hook):
    model, tokens = setup
    _, cache = model.run_with_cache(tokens)
    masks = torch.eye(cache[hook].shape[1], dtype=torch.bool)[:4]
    if masks.ndim < cache[hook].ndim:  # hook_v: whole key positions
        masks = masks[..., None].expand(-1, -1, cache[hook].shape[-1])
    replacement = torch.zeros_like(cache[hook])
    plain = run_replaced(model, hook, tokens, cache, replacement, masks)
    model.add_perma_hook("blocks.0.hook_resid_post", lambda resid, hook: 2 * resid)
    try:
        got = run_replaced(model, hook, tokens, cache, replacement, masks)
        expected = torch.stack(list(logits_with_each_mask_replaced(model, tokens, hook, masks, replacement)))
    finally:
        model.reset_hooks(including_permanent=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, 2 * plain, atol=1e-5, rtol=1e-5)
