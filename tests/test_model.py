import math
import re

import pytest
import torch
from transformer_lens import ActivationCache

from circuitpath import CrossAttentionTransformer, HookError, InputError, ModelConfig
from circuitpath.models.weights import init_weights, weight_shapes
from reference import reference_forward

#: The contract: every hook point, in the order the forward pass reaches it.
HOOKS = [
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_v",
    "blocks.0.hook_attn_out",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
]

#: hook -> (reference intermediate, shape as a function of batch B, T, d, h)
HOOK_VALUES = {
    "hook_embed": ("embed", lambda B, T, d, h: (B, T, d)),
    "hook_pos_embed": ("pos_embed", lambda B, T, d, h: (B, T, d)),
    "blocks.0.hook_resid_pre": ("resid_pre", lambda B, T, d, h: (B, T, d)),
    "blocks.0.ln1.hook_normalized": ("z", lambda B, T, d, h: (B, T, d)),
    "blocks.0.attn.hook_attn_scores": ("scores", lambda B, T, d, h: (B, T)),
    "blocks.0.attn.hook_pattern": ("pattern", lambda B, T, d, h: (B, T)),
    "blocks.0.attn.hook_v": ("v", lambda B, T, d, h: (B, T, d)),
    "blocks.0.hook_attn_out": ("z_attn", lambda B, T, d, h: (B, d)),
    "blocks.0.ln2.hook_normalized": ("z_bar", lambda B, T, d, h: (B, d)),
    "blocks.0.mlp.hook_pre": ("mlp_pre", lambda B, T, d, h: (B, h)),
    "blocks.0.mlp.hook_post": ("mlp_post", lambda B, T, d, h: (B, h)),
    "blocks.0.hook_mlp_out": ("mlp_out", lambda B, T, d, h: (B, d)),
    "blocks.0.hook_resid_post": ("z_out", lambda B, T, d, h: (B, d)),
}


def random_model(tied=True, seed=3, residual="attn_out"):
    cfg = ModelConfig(d_model=32, n_tokens=4, n_ctx=12, tied=tied, residual=residual, seed=seed)
    return CrossAttentionTransformer(cfg)


def test_hook_list_is_the_contract_in_forward_order():
    model = random_model()
    assert model.hook_names() == HOOKS
    fired = []
    for name in HOOKS:
        model.add_hook(name, lambda t, hook: fired.append(hook.name))
    model(torch.randint(0, 4, (2, 12)))
    model.reset_hooks()
    assert fired == HOOKS


@pytest.mark.parametrize("residual", ["attn_out", "normalized"])
@pytest.mark.parametrize("tied", [True, False])
def test_logits_match_the_independent_implementation(tied, residual):
    model = random_model(tied=tied, residual=residual)
    tokens = torch.randint(0, 4, (64, 12))
    weights = {name: getattr(model, name).detach() for name in
               ["W_E", "W_pos", "W_Q", "W_V", "W_in", "b_in", "W_out", "b_out", "W_U"]}
    if tied:
        assert torch.equal(weights["W_U"], weights["W_E"].T)
    expected = reference_forward(weights, tokens, residual=residual)["logits"]
    # logits of size ~10 in float32: a few ulp of reordered arithmetic is ~2e-6
    torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("residual", ["attn_out", "normalized"])
def test_every_hook_holds_the_value_and_shape_of_the_contract(residual):
    model = random_model(residual=residual)
    tokens = torch.randint(0, 4, (5, 12))
    _, cache = model.run_with_cache(tokens)
    ref = reference_forward(model.weights(), tokens, residual=residual)
    assert list(cache) == HOOKS
    for hook, (key, shape) in HOOK_VALUES.items():
        assert tuple(cache[hook].shape) == shape(5, 12, 32, 128), hook
        torch.testing.assert_close(cache[hook], ref[key], atol=1e-6, rtol=1e-6, msg=hook)


def test_activation_cache_shorthand():
    model = random_model()
    tokens = torch.randint(0, 4, (3, 12))
    _, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])
    assert torch.equal(cache["attn_out", 0], cache["blocks.0.hook_attn_out"])
    torch.testing.assert_close(cache["pattern", 0].sum(-1), torch.ones(3))


def test_a_hook_name_the_model_lacks_is_a_hook_error_naming_the_ones_it_has():
    """In the cache, in run_with_hooks and in run_with_cache's names_filter (where a misspelt name cached nothing)."""
    model = random_model()
    tokens = torch.randint(0, 4, (3, 12))
    _, cache = model.run_with_cache(tokens)
    for key in [("z", 0), "pattern"]:
        with pytest.raises(HookError, match=r"this cache holds no activation .*; it holds hook_embed, "):
            cache[key]
    with pytest.raises(HookError, match="unknown hook 'nope'; valid hooks: hook_embed"):
        model.run_with_hooks(tokens, fwd_hooks=[("nope", lambda t, hook: t)])
    with pytest.raises(HookError, match="unknown hook 'nope'"):
        model.run_with_cache(tokens, names_filter=["blocks.0.hook_attn_out", "nope"])
    assert list(model.run_with_cache(tokens, names_filter="blocks.0.hook_attn_out")[1]) == ["blocks.0.hook_attn_out"]
    with pytest.raises(KeyError):  # still a KeyError, for code that catches TransformerLens's
        cache["nothing"]


def test_editing_a_hook_changes_everything_downstream():
    model = random_model()
    tokens = torch.randint(0, 4, (4, 12))
    clean_logits, clean = model.run_with_cache(tokens)

    def uniform(pattern, hook):
        return torch.full_like(pattern, 1 / pattern.shape[-1])

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)]):
        logits, patched = model.run_with_cache(tokens)
    assert torch.equal(patched["blocks.0.attn.hook_attn_scores"], clean["blocks.0.attn.hook_attn_scores"])
    for hook in HOOKS[HOOKS.index("blocks.0.hook_attn_out"):]:
        assert not torch.allclose(patched[hook], clean[hook]), hook
    assert not torch.allclose(logits, clean_logits)


def test_loss_return_type_and_gradients_flow_to_every_weight():
    model = random_model(tied=False)
    tokens, targets = torch.randint(0, 4, (8, 12)), torch.randint(0, 4, (8,))
    model(tokens, return_type="loss", targets=targets).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_same_seed_same_weights_and_shapes():
    a, b, c = random_model(seed=1), random_model(seed=1), random_model(seed=2)
    for name, shape in weight_shapes(a.cfg).items():
        assert tuple(getattr(a, name).shape) == shape
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.W_E, c.W_E)


def test_the_two_residuals_differ_only_in_what_the_mlp_is_added_to():
    a, b = random_model(residual="attn_out"), random_model(residual="normalized")
    tokens = torch.randint(0, 4, (16, 12))
    _, cache_a = a.run_with_cache(tokens)
    _, cache_b = b.run_with_cache(tokens)
    for hook in HOOKS[:-1]:
        torch.testing.assert_close(cache_a[hook], cache_b[hook], atol=0, rtol=0, msg=hook)
    torch.testing.assert_close(cache_a["blocks.0.hook_resid_post"] - cache_a["blocks.0.hook_attn_out"],
                               cache_b["blocks.0.hook_resid_post"] - cache_b["blocks.0.ln2.hook_normalized"])
    assert not torch.allclose(a(tokens), b(tokens))


def test_bigger_embedding_table_than_the_task_needs():
    model = CrossAttentionTransformer(ModelConfig(n_tokens=4))
    assert model(torch.randint(0, 2, (3, 12))).shape == (3, 4)


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.full((2, 12), 4), "token 4 is out of range [0, 4)"),
        (torch.full((2, 12), -1), "token -1 is out of range"),
        (torch.zeros(2, 11, dtype=torch.long), "shape [batch, 12], got [2, 11]"),
        (torch.zeros(12, dtype=torch.long), "shape [batch, 12], got [12]"),
        (torch.zeros(2, 12), "integer tensor"),
    ],
)
def test_bad_tokens_raise_a_clear_error(tokens, message):
    with pytest.raises(InputError, match=re.escape(message)):
        random_model()(tokens)


def test_unknown_hook_lists_the_valid_ones():
    with pytest.raises(HookError, match="unknown hook 'blocks.0.hook_q'.*blocks.0.attn.hook_pattern"):
        random_model().check_hook("blocks.0.hook_q")


def paper_init(seed, d, h, n_tokens, n_ctx):
    """projects/visualization/train.py lines 119, 149-163 and set_parameters, written out with torch.nn."""
    torch.manual_seed(seed)
    params = torch.rand(2048, 2 * d + 2)[:h] * 2 - 1
    emb, pos = torch.nn.Embedding(n_tokens, d), torch.nn.Embedding(n_ctx, d)
    query, value = torch.nn.Linear(d, 1, bias=False), torch.nn.Linear(d, d, bias=False)
    torch.nn.Linear(d, h), torch.nn.Linear(h, d)  # fc1, fc2: drawn, then overwritten from params
    output = torch.nn.Linear(d, n_tokens, bias=False)
    a, b = 1 / math.sqrt(d), 1 / math.sqrt(h)
    fc1, b1, fc2, b2 = params[:, :d] * a, params[:, 2 * d] * a, params[:, d:2 * d].T * b, params[:d, 2 * d + 1] * b
    return {"W_E": emb.weight, "W_pos": pos.weight, "W_Q": query.weight[0], "W_V": value.weight.T,
            "W_in": fc1.T, "b_in": b1, "W_out": fc2.T, "b_out": b2, "W_U": output.weight.T}


@pytest.mark.parametrize("seed, d, h, n_tokens", [(0, 2, 32, 3), (20, 2, 32, 4), (5, 4, 6, 4)])
def test_shared_stream_init_is_the_paper_pipelines_bit_for_bit(seed, d, h, n_tokens):
    cfg = ModelConfig(d_model=d, d_mlp=h, n_tokens=n_tokens, n_ctx=12, seed=seed, tied=False, init="shared_stream")
    expected = paper_init(seed, d, h, n_tokens, 12)
    weights = init_weights(cfg)
    for name, shape in weight_shapes(cfg).items():
        assert weights[name].shape == shape and torch.equal(weights[name], expected[name].detach()), name


def test_the_shared_stream_keeps_its_rows_across_mlp_widths():
    small, large = (init_weights(ModelConfig(d_model=2, d_mlp=h, n_tokens=4, init="shared_stream", seed=1)) for h in (8, 32))
    assert torch.equal(small["W_in"], large["W_in"][:, :8]) and torch.equal(small["b_in"], large["b_in"][:8])
    torch.testing.assert_close(small["W_out"] * math.sqrt(8), large["W_out"][:8] * math.sqrt(32))
    for name in ("W_E", "W_pos", "W_Q", "W_V"):  # drawn after the whole stream, whatever h
        assert torch.equal(small[name], large[name])


def test_the_default_init_is_unchanged_by_the_option():
    ordered = init_weights(ModelConfig(seed=2))
    assert ModelConfig().init == "ordered"
    generator = torch.Generator().manual_seed(2)
    assert torch.equal(ordered["W_E"], torch.randn(4, 32, generator=generator))
    assert not torch.equal(ordered["W_E"], init_weights(ModelConfig(seed=2, init="shared_stream"))["W_E"])
