import pytest
import torch

from circuitpath import CrossAttentionTransformer, InputError, ModelConfig
from circuitpath.analysis.ablation import ablate, ablate_heads, position_sets
from circuitpath.models.transformer import StandardTransformer
from reference import ablate_loop_reference


@pytest.fixture
def setup():
    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, seed=6))
    tokens = torch.randint(0, 4, (64, 8))
    return model, tokens, tokens[:, :3].sum(1) % 4


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_position_ablation_equals_hand_written_hooks(setup, method):
    model, tokens, labels = setup
    sets = position_sets(3, 8)
    result = ablate(model, tokens, labels, sets=sets, method=method, generator=torch.Generator().manual_seed(2))
    assert result.names[:8] == [f"v{i}" for i in range(8)] and result.names[8:] == list(sets)
    _, cache = model.run_with_cache(tokens)
    v = cache["blocks.0.attn.hook_v"]
    replacement = {"zero": torch.zeros_like(v), "mean": v.mean(0, keepdim=True).expand_as(v),
                   "resample": v[torch.randperm(64, generator=torch.Generator().manual_seed(2))]}[method]
    masks = [torch.zeros(8, 16, dtype=torch.bool) for _ in range(10)]
    for i in range(8):
        masks[i][i] = True
    masks[8][:3], masks[9][3:] = True, True
    expected = ablate_loop_reference(model, tokens, labels, "blocks.0.attn.hook_v", masks, replacement)
    assert result.accuracy.tolist() == pytest.approx(expected, abs=1e-6)


def test_mlp_neurons_and_whole_attention_output(setup):
    model, tokens, labels = setup
    neurons = ablate(model, tokens, labels, hook="blocks.0.mlp.hook_post", over=("d_mlp",), method="zero")
    assert neurons.names[:2] == ["n0", "n1"] and len(neurons.names) == 64 and neurons.loss.shape == (64,)
    torch.testing.assert_close(neurons.effect, neurons.base_accuracy - neurons.accuracy)
    whole = ablate(model, tokens, labels, hook="blocks.0.hook_attn_out", over=(), method="mean")
    assert whole.names == ["all"]
    # with z_A replaced by its mean every input gets the same prediction
    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_attn_out", lambda a, hook: a.mean(0, keepdim=True).expand_as(a))])
    assert whole.accuracy.item() == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    assert len(set(logits.argmax(-1).tolist())) == 1


def test_bad_requests(setup):
    model, tokens, labels = setup
    with pytest.raises(InputError, match="unknown ablation method 'noise'"):
        ablate(model, tokens, labels, method="noise")
    with pytest.raises(InputError, match="index 8 is out of range for axis 'key_pos' of size 8"):
        ablate(model, tokens, labels, sets={"bad": [8]})


def test_position_sets_refuse_k_past_the_sequence():
    with pytest.raises(InputError, match="k must be between 1 and the sequence length n_ctx = 12, got 13"):
        position_sets(13, 12)
    with pytest.raises(InputError, match="got 0"):
        position_sets(0, 12)
    assert position_sets(12, 12) == {"first k (0-11)": list(range(12))}


def test_resampling_without_a_generator_is_seeded(setup):
    model, tokens, labels = setup
    first, again = (ablate(model, tokens, labels, method="resample") for _ in range(2))
    assert torch.equal(first.loss, again.loss)


def _transformer():
    cfg = ModelConfig(d_model=8, n_tokens=4, n_ctx=6, arch="transformer", n_layers=2, n_heads=2, seed=3)
    tokens = torch.randint(0, 4, (40, 6), generator=torch.Generator().manual_seed(1))
    return StandardTransformer(cfg), tokens, tokens[:, :3].sum(1) % 4


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_a_set_of_one_head_is_ablate_over_that_layers_heads(method):
    """ablate_heads on one (layer, head) is ablate on blocks.{layer}.attn.hook_z over head_index."""
    model, tokens, labels = _transformer()
    sets = {f"L{layer}H{head}": [(layer, head)] for layer in range(2) for head in range(2)}
    together = ablate_heads(model, tokens, labels, sets, method)
    alone = torch.cat([ablate(model, tokens, labels, hook=f"blocks.{layer}.attn.hook_z", over=("head_index",),
                              method=method).loss for layer in range(2)])
    torch.testing.assert_close(together.loss, alone)
    assert together.names == list(sets) and not torch.equal(together.loss, torch.full_like(alone, together.base_loss))


def test_heads_of_two_layers_ablated_together_change_more_than_each():
    model, tokens, labels = _transformer()
    result = ablate_heads(model, tokens, labels, {"a": [(0, 1)], "b": [(1, 0)], "both": [(0, 1), (1, 0)]}, "zero")
    change = (result.loss - result.base_loss).abs()
    assert change[2] != change[0] and change[2] != change[1] and change.min() > 0
    with pytest.raises(InputError, match=r"head \(2, 0\) is not a \(layer, head\) of 2 layers x 2 heads"):
        ablate_heads(model, tokens, labels, {"bad": [(2, 0)]})
    with pytest.raises(InputError, match="needs a standard transformer"):
        ablate_heads(CrossAttentionTransformer(ModelConfig(d_model=8, n_tokens=4, n_ctx=6)), tokens, labels, {})
