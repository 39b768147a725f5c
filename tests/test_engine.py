from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from circuitpath import CrossAttentionTransformer, ModelConfig
from circuitpath.models.model import WEIGHT_KEYS
from circuitpath.training.engine import ROW_ALIGN, Adam, Encoded, Layout, forward, loss_and_grad
from reference import reference_train


@pytest.mark.parametrize("residual", ["attn_out", "normalized"])
@pytest.mark.parametrize("tied", [True, False])
def test_logits_and_gradients_match_the_hooked_model(tied, residual):
    cfg = ModelConfig(d_model=32, n_tokens=4, n_ctx=12, tied=tied, residual=residual, seed=5)
    model = CrossAttentionTransformer(cfg)
    x, y = torch.randint(0, 4, (256, 12)), torch.randint(0, 4, (256,))
    layout = Layout.of(cfg)
    theta = layout.pack([model.weights()])
    data = Encoded.of(x[None], y[None], cfg.n_tokens)

    logits = forward(layout.views(theta), data, cfg)[0]
    torch.testing.assert_close(logits, model(x), atol=1e-5, rtol=1e-5)

    losses, grad = loss_and_grad(theta, layout, data)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    params = dict(model.named_parameters())
    expected = layout.pack([{name: params[WEIGHT_KEYS[name]].grad for name in layout.shapes}])
    torch.testing.assert_close(losses[0], loss.detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)


def test_runs_in_a_batch_equal_runs_alone():
    cfg = ModelConfig(d_model=16, n_tokens=4, n_ctx=8)
    layout = Layout.of(cfg)
    weights = [CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, seed=s)).weights() for s in range(3)]
    x, y = torch.randint(0, 4, (3, 100, 8)), torch.randint(0, 4, (3, 100))
    together = layout.pack(weights)
    adam = Adam(together, torch.tensor([1e-2, 3e-3, 1e-3]))
    for _ in range(10):
        adam.step(together, loss_and_grad(together, layout, Encoded.of(x, y, 4))[1])
    for s, lr in enumerate([1e-2, 3e-3, 1e-3]):
        alone = layout.pack([weights[s]])
        adam_alone = Adam(alone, torch.tensor([lr]))
        for _ in range(10):
            adam_alone.step(alone, loss_and_grad(alone, layout, Encoded.of(x[s:s + 1], y[s:s + 1], 4))[1])
        torch.testing.assert_close(together[s], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("residual", ["attn_out", "normalized"])
def test_engine_adam_follows_torch_adam_on_the_reference_function(residual):
    cfg = ModelConfig(d_model=16, n_tokens=4, n_ctx=8, residual=residual, seed=2)
    layout = Layout.of(cfg)
    start = CrossAttentionTransformer(cfg).weights()
    x = torch.randint(0, 4, (128, 8))
    y = x[:, :3].sum(1) % 4
    theta = layout.pack([start])
    adam = Adam(theta, torch.tensor([1e-2]))
    data = Encoded.of(x[None], y[None], 4)
    for _ in range(25):
        adam.step(theta, loss_and_grad(theta, layout, data)[1])
    expected = reference_train(start, x, y, [(1e-2, 25, x, y)], residual=residual)
    for name, value in layout.unpack(theta[0]).items():
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-4, msg=name)
    assert not torch.allclose(expected["W_Q"], start["W_Q"])


def test_layout_round_trip():
    cfg = ModelConfig(d_model=8, n_ctx=4, tied=False)
    layout = Layout.of(cfg)
    weights = CrossAttentionTransformer(cfg).weights()
    used = sum(v.numel() for v in weights.values())
    assert layout.size % ROW_ALIGN == 0 and used <= layout.size < used + ROW_ALIGN  # rows padded, no more
    row = layout.pack([weights])[0]
    assert not row[used:].any()
    back = layout.unpack(row)
    assert all(torch.equal(back[k], weights[k]) for k in weights)


@pytest.mark.parametrize("residual", ["attn_out", "normalized"])
@pytest.mark.parametrize("tied", [True, False])
def test_fast_path_equals_autograd_path(tied, residual):
    from circuitpath.training.engine import autograd_loss_and_grad, fast_path_safe

    cfg = ModelConfig(d_model=16, n_tokens=4, n_ctx=8, tied=tied, residual=residual)
    layout = Layout.of(cfg)
    theta = layout.pack([CrossAttentionTransformer(replace(cfg, seed=s)).weights()
                         for s in range(2)])
    x = torch.randint(0, 4, (2, 64, 8))
    data = Encoded.of(x, x[:, :, :3].sum(-1) % 4, 4)
    assert fast_path_safe(layout.views(theta))
    fast_losses, fast_grad = loss_and_grad(theta, layout, data)
    slow_losses, slow_grad = autograd_loss_and_grad(theta, layout, data)
    torch.testing.assert_close(fast_losses, slow_losses, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fast_grad, slow_grad, atol=1e-5, rtol=1e-4)


def test_sharp_attention_falls_back_to_the_softmax_path():
    from circuitpath.training.engine import fast_path_safe

    cfg = ModelConfig(d_model=16, n_tokens=4, n_ctx=8)
    model = CrossAttentionTransformer(cfg)
    with torch.no_grad():
        model.blocks[0].attn.W_Q.mul_(300 / model.W_Q.norm())  # scores spread over 600
    layout = Layout.of(cfg)
    theta = layout.pack([model.weights()])
    assert not fast_path_safe(layout.views(theta))
    x = torch.randint(0, 4, (64, 8))
    losses, grad = loss_and_grad(theta, layout, Encoded.of(x[None], (x[:, 0] % 4)[None], 4))
    loss = F.cross_entropy(model(x), x[:, 0] % 4)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(losses[0], loss.detach(), atol=1e-5, rtol=1e-5)
