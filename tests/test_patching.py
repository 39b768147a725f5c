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
    assert result.patched.shape == expected.shape
    torch.testing.assert_close(result.patched, expected, atol=1e-5, rtol=1e-5)


def test_patching_the_whole_attention_output_restores_the_clean_run(setup):
    model, *inputs = setup
    result = patch_attn_out(model, *inputs)
    assert result.patched.shape == ()
    assert result.patched.item() == pytest.approx(result.clean, abs=1e-5)
    assert result.clean != pytest.approx(result.corrupted)
    assert result.normalized().item() == pytest.approx(1.0, abs=1e-4)


def test_patching_an_untouched_position_does_nothing(setup):
    model, *inputs = setup
    result = patch_values_by_position(model, *inputs)
    # positions 3.. hold the same tokens in both runs, so their values are identical
    torch.testing.assert_close(result.patched[3:], torch.full((5,), result.corrupted), atol=1e-5, rtol=0)


def test_effects_are_changes_from_the_corrupted_baseline_and_every_index_is_named(setup):
    model, *inputs = setup
    result = patch_values_by_position(model, *inputs)
    torch.testing.assert_close(result.effect, result.patched - result.corrupted)
    # an untouched position changes nothing: its effect is 0, not the corrupted metric repeated
    assert result.effect[3:].abs().max() < 1e-5 and result.effect[:3].abs().max() > 1e-3
    assert result.labels == [f"v{t}" for t in range(8)]
    neurons = patch(model, "blocks.0.mlp.hook_post", *inputs, over=("d_mlp",))
    assert neurons.labels[:3] == ["n0", "n1", "n2"] and len(neurons.labels) == model.cfg.d_mlp
    assert patch(model, "blocks.0.hook_mlp_out", *inputs).labels == ["all"]
    assert patch(model, "blocks.0.attn.hook_v", *inputs, over=("key_pos", "d_model")).labels[1] == "v0 d_model 1"
    with pytest.warns(DeprecationWarning, match="patched"):
        assert result.effects is result.patched


def test_corruption_without_a_generator_is_the_same_draw_every_time_and_follows_its_seed():
    from circuitpath.analysis.patching import position_patching

    clean = torch.randint(0, 4, (64, 8), generator=torch.Generator().manual_seed(3))
    first, again = corrupt_positions(clean, [0, 1, 2], p=4), corrupt_positions(clean, [0, 1, 2], p=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, corrupt_positions(clean, [0, 1, 2], p=4, seed=1))
    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, seed=4))
    a, b = position_patching(model, clean, p=4, k=3, seed=5), position_patching(model, clean, p=4, k=3, seed=5)
    assert a.seed == 5 and torch.equal(a.patched.nan_to_num(), b.patched.nan_to_num())


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


# ---- one position at a time --------------------------------------------------------------------
def test_redraw_position_changes_exactly_that_token_to_another_value():
    from circuitpath.analysis.patching import redraw_position

    tokens = torch.randint(0, 4, (500, 8))
    corrupted = redraw_position(tokens, 3, p=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(corrupted[:, [0, 1, 2, 4, 5, 6, 7]], tokens[:, [0, 1, 2, 4, 5, 6, 7]])
    assert (corrupted[:, 3] != tokens[:, 3]).all() and corrupted.max() < 4
    assert len({(a, b) for a, b in zip(tokens[:, 3].tolist(), corrupted[:, 3].tolist())}) == 12  # every other value


def uniform_on_first(k):
    """Attention spread evenly over the first k positions: z_A ignores the others, and no token moves it."""
    def hook(pattern, hook):
        uniform = torch.zeros_like(pattern)
        uniform[:, :k] = 1 / k
        return uniform
    return hook


def test_position_patching_restores_fully_where_attention_ignores_tokens_and_skips_ignored_positions():
    from circuitpath.analysis.patching import position_patching

    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, seed=4))
    model.add_perma_hook("blocks.0.attn.hook_pattern", uniform_on_first(3))
    clean = torch.randint(0, 4, (300, 8))
    result = position_patching(model, clean, p=4, k=3, generator=torch.Generator().manual_seed(0))
    assert result.patched.shape == (8,) and result.labels[:4] == ["v0", "v1", "v2", "v3"]
    # the pattern does not depend on the tokens, so the clean value of the corrupted position is
    # all that differs: patching it back gives exactly the clean run
    assert (result.measured[:3] > 0).all()
    torch.testing.assert_close(result.normalized()[:3], torch.ones(3), atol=1e-5, rtol=0)
    # positions 3.. carry no attention: corrupting them flips no answer, nothing to restore
    assert result.measured[3:].tolist() == [0] * 5 and result.normalized()[3:].isnan().all()
    assert (result.clean[:3] > 0).all() and (result.corrupted[:3] < 0).all()


def test_position_patching_equals_one_hand_written_hook_per_position():
    from circuitpath.analysis.patching import position_patching, redraw_position

    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, seed=4))
    clean = torch.randint(0, 4, (200, 8))
    result = position_patching(model, clean, p=4, k=3, generator=torch.Generator().manual_seed(7))
    assert (result.measured > 0).sum() >= 4  # a random model: many positions flip some answers
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean)
        answer = clean_logits.argmax(-1)
        for position in range(8):
            corrupted = redraw_position(clean, position, 4, generator)

            def put_back(values, hook, position=position):
                values = values.clone()
                values[:, position] = cache["blocks.0.attn.hook_v"][:, position]
                return values

            corrupted_logits = model(corrupted)
            patched = model.run_with_hooks(corrupted, fwd_hooks=[("blocks.0.attn.hook_v", put_back)])
            rival = corrupted_logits.argmax(-1)
            flipped = rival != answer
            rows = torch.arange(len(clean))[flipped]
            difference = lambda logits: (logits[rows, answer[rows]] - logits[rows, rival[rows]]).mean()
            assert result.measured[position] == flipped.sum()
            if flipped.any():
                assert result.patched[position].item() == pytest.approx(difference(patched).item(), abs=1e-4)
                assert result.corrupted[position].item() == pytest.approx(difference(corrupted_logits).item(), abs=1e-4)
                assert result.clean[position].item() == pytest.approx(difference(clean_logits).item(), abs=1e-4)


@pytest.mark.parametrize("args, message", [
    ({"p": 5}, "p must be between 2 and the model's n_tokens = 4, got 5"),
    ({"k": 9}, "k must be between 1 and the sequence length 8, got 9"),
    ({"p": 2}, "clean inputs hold token 3, not in F_p for p = 2"),
])
def test_position_patching_refuses_bad_requests(args, message):
    from circuitpath.analysis.patching import position_patching

    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, seed=4))
    clean = torch.randint(0, 4, (20, 8))
    clean[0, 0] = 3
    with pytest.raises(InputError, match=message):
        position_patching(model, clean, **({"p": 4, "k": 3} | args))
