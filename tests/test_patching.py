import pytest
import torch

from circuitpath import CrossAttentionTransformer, HookError, InputError, ModelConfig
from circuitpath.analysis.patching import (
    HOOK_AXES,
    corrupt_positions,
    patch,
    patch_attn_out,
    patch_values_by_position,
)
from reference import patch_loop_reference
from test_model import HOOKS


@pytest.fixture
def setup():
    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, seed=4))
    clean = torch.randint(0, 4, (50, 8))
    corrupted = corrupt_positions(clean, [0, 1, 2], p=4, generator=torch.Generator().manual_seed(1))
    return model, clean, corrupted, clean[:, :3].sum(1) % 4, corrupted[:, :3].sum(1) % 4


def test_every_contract_hook_has_named_axes():
    assert list(HOOK_AXES) == HOOKS


@pytest.mark.parametrize("hook, over", [
    ("hook_embed", ("pos",)),
    ("blocks.0.attn.hook_attn_scores", ("key_pos",)),
    ("blocks.0.attn.hook_v", ("key_pos",)),
    ("blocks.0.mlp.hook_pre", ("d_mlp",)),
    ("blocks.0.hook_mlp_out", ()),
    ("blocks.0.hook_resid_post", ("d_model",)),
    ("blocks.0.attn.hook_pattern", ("key_pos",)),
    ("blocks.0.ln1.hook_normalized", ("pos",)),
    ("blocks.0.mlp.hook_post", ("d_mlp",)),
    ("blocks.0.attn.hook_v", ("key_pos", "d_model")),
])
@pytest.mark.parametrize("metric", ["logit_diff", "loss", "accuracy"])
def test_batched_patching_equals_one_forward_per_index_with_hand_written_hooks(setup, hook, over, metric):
    model, *inputs = setup
    result = patch(model, hook, *inputs, over=over, metric=metric, max_batch=230)  # several passes
    expected = patch_loop_reference(model, hook, *inputs, over=over, metric=metric)
    assert result.effects.shape == expected.shape
    torch.testing.assert_close(result.effects, expected, atol=1e-5, rtol=1e-5)


def test_patching_the_whole_attention_output_restores_the_clean_run(setup):
    model, *inputs = setup
    result = patch_attn_out(model, *inputs)
    assert result.effects.shape == ()
    assert result.effects.item() == pytest.approx(result.clean, abs=1e-5)
    assert result.clean != pytest.approx(result.corrupted)
    assert result.normalized().item() == pytest.approx(1.0, abs=1e-4)


def test_patching_an_untouched_position_does_nothing(setup):
    model, *inputs = setup
    result = patch_values_by_position(model, *inputs)
    # positions 3.. hold the same tokens in both runs, so their values are identical
    torch.testing.assert_close(result.effects[3:], torch.full((5,), result.corrupted), atol=1e-5, rtol=0)


def test_bad_requests(setup):
    model, *inputs = setup
    with pytest.raises(HookError, match="unknown hook 'blocks.0.hook_k'"):
        patch(model, "blocks.0.hook_k", *inputs)
    with pytest.raises(InputError, match="has axes .* not 'pos'"):
        patch(model, "blocks.0.attn.hook_v", *inputs, over=("pos",))
    with pytest.raises(InputError, match="unknown metric 'kl'"):
        patch(model, "blocks.0.attn.hook_v", *inputs, metric="kl")


def test_resuming_the_forward_pass_at_any_resumable_hook_gives_the_same_logits(setup):
    from circuitpath.analysis.replacing import RESUMABLE

    model, clean, *_ = setup
    logits, cache = model.run_with_cache(clean)
    for hook in RESUMABLE:
        doubled = torch.cat([cache[hook], cache[hook]])
        torch.testing.assert_close(model.run_from(hook, doubled, cache), torch.cat([logits, logits]), msg=hook)
    with pytest.raises(HookError, match="cannot resume the forward pass at 'hook_embed'"):
        model.run_from("hook_embed", cache["hook_embed"], cache)
