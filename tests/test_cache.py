"""run_with_cache returns a TransformerLens ActivationCache; its general methods work or say why not."""

import pytest
import torch
from transformer_lens import ActivationCache

from circuitpath import CrossAttentionTransformer, ModelConfig
from circuitpath.errors import NotApplicableError


@pytest.fixture(params=["attn_out", "normalized"])
def cached(request):
    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, residual=request.param, seed=1))
    tokens = torch.randint(0, 4, (6, 8), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    return model, cache


def test_the_cache_is_an_activation_cache_with_the_true_config(cached):
    model, cache = cached
    assert isinstance(cache, ActivationCache)
    cfg = model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.d_mlp) == (1, 1, 16, 4, 64)
    assert cfg.normalization_type == "RMSPre" and cfg.act_fn == "gelu" and not cfg.attn_only
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])
    assert torch.equal(cache["normalized", 0, "ln2"], cache["blocks.0.ln2.hook_normalized"])
    _, plain = model.run_with_cache(torch.zeros(2, 8, dtype=torch.long), return_cache_object=False)
    assert type(plain) is dict


def test_stacks_and_neuron_results_work(cached):
    model, cache = cached
    assert torch.equal(cache.stack_activation("pattern")[0], cache["pattern", 0])
    neurons = cache.stack_neuron_results(1)  # [neuron, batch, d_model]: post_i * W_out[i]
    torch.testing.assert_close(neurons.sum(0) + model.b_out, cache["mlp_out", 0], atol=1e-5, rtol=1e-5)


def test_decompose_resid_sums_to_z_o_when_the_residual_carries_z_a(cached):
    model, cache = cached
    if model.cfg.residual == "attn_out":
        parts = cache.decompose_resid(incl_embeds=False)
        torch.testing.assert_close(parts.sum(0), cache["resid_post", 0])
    else:
        with pytest.raises(NotApplicableError, match="residual carries RMS"):
            cache.decompose_resid(incl_embeds=False)


@pytest.mark.parametrize("method, args, says", [
    ("accumulated_resid", (), r"\[batch, pos, d_model\] up to the attention"),
    ("decompose_resid", (), "pass incl_embeds=False"),
    ("logit_lens", (), "resid_post"),
    ("compute_head_results", (), "no output matrix W_O"),
    ("stack_head_results", (), "no output matrix W_O"),
    ("get_full_resid_decomposition", (), "no output matrix W_O"),
    ("apply_ln_to_stack", (torch.zeros(1, 6, 16),), "no final norm"),
    ("logit_attrs", (torch.zeros(1, 6, 16),), "no final norm"),
])
def test_methods_that_do_not_apply_say_why(cached, method, args, says):
    _, cache = cached
    with pytest.raises(NotApplicableError, match=f"{method}.* does not apply to this model: .*{says}"):
        getattr(cache, method)(*args)
