"""The fused step of small models: the hooked model's loss and gradients, and the same bytes in any group."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig, train, train_many
from circuitpath.config import parse_phases
from circuitpath.models.model import CrossAttentionTransformer
from circuitpath.models.weights import init_weights
from circuitpath.training import fused
from circuitpath.training.engine import Encoded, Executor, Layout


def test_erf_is_libm_erf_to_float32_resolution():
    fused._kernel()  # compiles erf too
    xs = [i / 1000 for i in range(-6000, 6001, 7)]
    assert max(abs(fused.erf(x) - math.erf(x)) for x in xs) < 1e-7


def test_exp_is_libm_exp_to_a_few_parts_in_a_trillion():
    fused._kernel()  # compiles _exp too
    xs = [-700 * i / 20000 for i in range(20001)]
    assert max(abs(fused._exp(x) / math.exp(x) - 1) for x in xs) < 3e-12
    assert fused._exp(0.0) == 1.0
    assert fused._exp(-1e6) == fused._exp(-700.0) > 0  # clamped: a normal number, never 0


def test_scores_too_spread_for_the_shared_table_take_each_sequences_largest():
    """Attention weights from each sequence's own largest score when the table's scores span more
    than `_SHARED_SPAN`: the loss and gradients are still the hooked model's (in float64, where its
    own softmax of such scores is exact enough to compare with)."""
    cfg = ModelConfig(d_model=2, d_mlp=32, n_ctx=12)
    layout = Layout.of(cfg)
    generator = torch.Generator().manual_seed(7)
    model = CrossAttentionTransformer(cfg)
    for p in model.parameters():
        p.data += 0.5 * torch.randn(p.shape, generator=generator)
    model.W_Q.data = torch.tensor([400.0, -300.0])
    weights = model.weights()
    resid = (weights["W_E"][:, None, :] + weights["W_pos"][None, :, :]).double()
    z = resid / (resid.pow(2).mean(-1, keepdim=True).sqrt() + cfg.eps)
    scores = z @ weights["W_Q"].double() / math.sqrt(2)
    assert scores.max() - scores.min() > fused._SHARED_SPAN
    theta = layout.pack([weights])
    x = torch.randint(0, 4, (1, 32, 12), generator=generator)
    y = x[:, :, :5].sum(-1) % 4
    data = Encoded.of(x, y, 4)
    losses, grad = fused.loss_and_grad(theta, layout, data.index, data.targets)
    model = model.double()
    loss = F.cross_entropy(model(x[0]), y[0])
    expected = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(losses[0].double(), loss.detach(), atol=1e-6, rtol=1e-6)
    got = layout.unpack(grad[0])
    for (name, _), value in zip(model.named_parameters(), expected):
        key = name.split(".")[-1]
        torch.testing.assert_close(got[key].double(), value, atol=2e-6, rtol=1e-4, msg=key)


@pytest.mark.parametrize("residual", ["attn_out", "normalized"])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("d_model", [2, 3])  # d = 2 is compiled apart from every other width
def test_loss_gradient_and_accuracy_are_the_hooked_models(tied, residual, d_model):
    cfg = ModelConfig(d_model=d_model, d_mlp=32, n_ctx=12, tied=tied, residual=residual)
    layout = Layout.of(cfg)
    generator = torch.Generator().manual_seed(3)
    models = [CrossAttentionTransformer(replace(cfg, seed=s)) for s in range(3)]
    for model in models:  # away from the initial weights, so that every term matters
        for p in model.parameters():
            p.data += 0.5 * torch.randn(p.shape, generator=generator)
    theta = layout.pack([m.weights() for m in models])
    x = torch.randint(0, 4, (3, 32, 12), generator=generator)
    y = x[:, :, :5].sum(-1) % 4
    data = Encoded.of(x, y, 4)
    losses, grad = fused.loss_and_grad(theta, layout, data.index, data.targets)
    eval_losses, accuracy = fused.evaluate(theta, layout, data.index, data.targets)
    for s, model in enumerate(models):
        logits = model(x[s])
        loss = F.cross_entropy(logits, y[s])
        expected = torch.autograd.grad(loss, list(model.parameters()))
        names = [name for name, _ in model.named_parameters()]
        torch.testing.assert_close(losses[s], loss.detach(), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(eval_losses[s], loss.detach(), atol=1e-6, rtol=1e-6)
        assert accuracy[s] == (logits.argmax(-1) == y[s]).float().mean()
        got = layout.unpack(grad[s])
        for name, value in zip(names, expected):
            key = name.split(".")[-1]
            torch.testing.assert_close(got[key], value, atol=2e-6, rtol=1e-4, msg=f"{s} {key}")
        assert not grad[s, sum(v.numel() for v in got.values()):].any()  # the row's padding stays zero


def test_the_path_is_a_function_of_the_config():
    cpu = torch.device("cpu")
    assert fused.takes_fused_path(ModelConfig(d_model=2, d_mlp=32), cpu)
    assert not fused.takes_fused_path(ModelConfig(), cpu)
    assert not fused.takes_fused_path(ModelConfig(d_model=2, d_mlp=32), torch.device("cuda"))
    assert not fused.takes_fused_path(ModelConfig(d_model=2, arch="transformer"), cpu)  # the paper's model only
    assert Executor(32, cpu, cfg=ModelConfig(d_model=2, d_mlp=32)).fused


def test_a_small_run_is_the_same_bytes_alone_and_in_a_group(tmp_path):
    def config(seed, lr=3e-3):
        return RunConfig(task=TaskConfig(seed=seed, n_train=256), model=ModelConfig(d_model=2, d_mlp=32, seed=seed),
                         train=TrainConfig(phases=parse_phases(f"2:40:{lr}:32,4:40:{lr}:32"), log_every=10,
                                           checkpoint_every=40, dense_checkpoints=0))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        alone = train(config(3), tmp_path / "alone", progress=False)
    finally:
        torch.set_num_threads(threads)
    group = train_many([config(s, 1e-2 if s % 2 else 3e-3) for s in (0, 1, 2)] + [config(3)] + [config(4)],
                       [tmp_path / f"g{s}" for s in range(5)], progress=False, workers=2)
    assert alone.metrics == group[3].metrics
    for step in alone.steps:
        assert (alone.checkpoint_path(step).read_bytes() == group[3].checkpoint_path(step).read_bytes()), step
    assert alone.metrics[-1]["train_loss"] != alone.metrics[0]["train_loss"]
    assert init_weights(config(3).model)["W_E"].shape == (4, 2)


def test_threads_asking_for_the_kernel_at_once_get_one_compiled_step():
    import subprocess
    import sys

    code = ("from concurrent.futures import ThreadPoolExecutor\nfrom circuitpath.training import fused\n"
            "with ThreadPoolExecutor(4) as pool:\n    kernels = list(pool.map(lambda _: fused._kernel(), range(8)))\n"
            "print(len({id(k) for k in kernels}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)  # a fresh process
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"


def test_a_stretch_of_updates_is_adam_on_the_hooked_model():
    """Five mini-batch updates in one compiled call against torch.optim.Adam on the hooked model."""
    cfg = ModelConfig(d_model=2, d_mlp=32, n_ctx=12)
    layout = Layout.of(cfg)
    generator = torch.Generator().manual_seed(5)
    models = [CrossAttentionTransformer(replace(cfg, seed=s)) for s in range(2)]
    theta = layout.pack([m.weights() for m in models])
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    x = torch.randint(0, 2, (2, 5 * 8, 12), generator=generator)
    y = x[:, :, :5].sum(-1) % 2
    data = Encoded.of(x, y, 4, onehot=False)
    lrs = [3e-3, 1e-2]
    fused.train_stretch(theta, m, v, lrs, 0, layout, data.index, data.targets, first=0, stride=8, batch=8, count=5)
    for s, model in enumerate(models):
        optimiser = torch.optim.Adam(model.parameters(), lr=lrs[s])
        for u in range(5):
            optimiser.zero_grad()
            F.cross_entropy(model(x[s, 8 * u:8 * (u + 1)]), y[s, 8 * u:8 * (u + 1)]).backward()
            optimiser.step()
        got = layout.unpack(theta[s])
        for name, value in model.weights().items():
            assert not torch.equal(got[name], init_weights(replace(cfg, seed=s))[name]), name  # it moved
            torch.testing.assert_close(got[name], value.detach(), atol=2e-5, rtol=1e-4, msg=f"{s} {name}")

