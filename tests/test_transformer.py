"""The standard transformer: hooks as TransformerLens names them, its forward pass against a plain one,
its ActivationCache, and training through the run machinery (checkpoints, resume, group == alone)."""

from __future__ import annotations


import os
import subprocess
import sys

import pytest
import torch

from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig, load_run, parse_phases, resume, train
from circuitpath.cli import main
from circuitpath.config import ConfigError
from circuitpath.models.transformer import StandardTransformer
from circuitpath.runs import saved_steps
from circuitpath.training.branch import branch
from circuitpath.training.engine import Encoded, Layout, evaluate, loss_and_grad
from circuitpath.training.train import train_many
from cli_status import exit_status
from reference_transformer import reference_logits

BLOCK_HOOKS = [
    "hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized",
    "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
    "hook_attn_out", "hook_resid_mid", "ln2.hook_scale", "ln2.hook_normalized",
    "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
]
HOOKS = ["hook_embed", "hook_pos_embed", *(f"blocks.{layer}.{name}" for layer in (0, 1) for name in BLOCK_HOOKS),
         "ln_final.hook_scale", "ln_final.hook_normalized"]


def model_config(**fields) -> ModelConfig:
    return ModelConfig(**({"arch": "transformer", "d_model": 8, "n_layers": 2, "n_heads": 2, "n_ctx": 6} | fields))


def run_config(phases="2:24:1e-2", seed=0, **fields) -> RunConfig:
    return RunConfig(task=TaskConfig(n_ctx=6, k=3, n_train=40, n_test=50, seed=seed),
                     model=model_config(seed=seed, **fields),
                     train=TrainConfig(phases=parse_phases(phases), log_every=4, checkpoint_every=8, dense_checkpoints=2))


def tokens(batch=5, n_ctx=6, seed=1):
    return torch.randint(0, 4, (batch, n_ctx), generator=torch.Generator().manual_seed(seed))


# ---- the model -----------------------------------------------------------------------------------
def test_hook_names_follow_transformer_lens_in_forward_order():
    assert StandardTransformer(model_config()).hook_names() == HOOKS


def test_weights_stack_over_layers_as_transformer_lens_names_them():
    cfg = model_config(d_model=8, n_heads=2, d_mlp=12, n_layers=3)
    model = StandardTransformer(cfg)
    L, H, d, e, h = 3, 2, 8, 4, 12
    shapes = {"W_Q": (L, H, d, e), "W_K": (L, H, d, e), "W_V": (L, H, d, e), "W_O": (L, H, e, d),
              "b_Q": (L, H, e), "b_K": (L, H, e), "b_V": (L, H, e), "b_O": (L, d),
              "W_in": (L, d, h), "b_in": (L, h), "W_out": (L, h, d), "b_out": (L, d), "b_U": (cfg.n_tokens,)}
    for name, shape in shapes.items():
        assert tuple(getattr(model, name).shape) == shape, name
    for layer, block in enumerate(model.blocks):
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            assert torch.equal(getattr(model, name)[layer], getattr(block.attn, name)), (name, layer)
        for name in ("W_in", "b_in", "W_out", "b_out"):
            assert torch.equal(getattr(model, name)[layer], getattr(block.mlp, name)), (name, layer)
    assert not model.W_Q.data_ptr() == model.blocks[0].attn.W_Q.data_ptr()  # a stacked copy, not the parameter
    assert torch.equal(model.b_U, torch.zeros(cfg.n_tokens))


@pytest.mark.parametrize("readout, positions", [("cls", 7), ("last", 6), (2, 6)])
def test_activations_have_transformer_lens_shapes(readout, positions):
    _, cache = StandardTransformer(model_config(readout=readout)).run_with_cache(tokens())
    b, p = 5, positions
    expected = {"hook_embed": (b, p, 8), "blocks.1.ln2.hook_scale": (b, p, 1), "blocks.0.attn.hook_q": (b, p, 2, 4),
                "blocks.0.attn.hook_k": (b, p, 2, 4), "blocks.1.attn.hook_v": (b, p, 2, 4),
                "blocks.1.attn.hook_z": (b, p, 2, 4), "blocks.0.attn.hook_attn_scores": (b, 2, p, p),
                "blocks.1.attn.hook_pattern": (b, 2, p, p), "blocks.0.mlp.hook_post": (b, p, 32),
                "blocks.1.hook_resid_mid": (b, p, 8), "ln_final.hook_normalized": (b, p, 8)}
    assert {name: tuple(cache[name].shape) for name in expected} == expected
    assert len(cache) == len(HOOKS)


@pytest.mark.parametrize("fields", [{}, {"readout": "last", "norm": "layer", "tied": False}, {"readout": 3, "n_layers": 1,
                                                                                            "n_heads": 4}])
def test_hooked_forward_equals_the_plain_reference(fields):
    cfg = model_config(seed=3, **fields)
    model = StandardTransformer(cfg)
    with torch.no_grad():  # perturb the zero-initialised biases and unit gains, so the test reads them too
        for value in model.parameters():
            value.add_(0.1 * torch.randn_like(value))
    x = tokens(7)
    expected = reference_logits(model.weights(), x, cfg)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, engine=True), expected, atol=1e-5, rtol=1e-5)  # the last block at the readout only


def test_activation_cache_methods_add_up_to_the_logits():
    model = StandardTransformer(model_config(seed=2, norm="layer"))
    logits, cache = model.run_with_cache(tokens())
    final = cache["resid_post", 1]
    stack, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    assert labels == ["0_pre", "1_pre", "final_post"]
    torch.testing.assert_close(stack[-1][:, model.readout_at] @ model.W_U, logits)  # the logit lens's last row
    torch.testing.assert_close(cache.decompose_resid().sum(0), final, atol=1e-5, rtol=0)
    heads = cache.stack_head_results(layer=-1)  # [layer * head, batch, pos, d_model]
    assert heads.shape == (4, 5, 7, 8)
    torch.testing.assert_close(heads[2:].sum(0) + model.blocks[1].attn.b_O, cache["attn_out", 1], atol=1e-5, rtol=0)
    for neurons in (False, True):  # heads, MLPs (or their neurons), embeddings and the biases
        full = cache.get_full_resid_decomposition(expand_neurons=neurons)
        assert full.shape[0] == 4 + (2 * 32 if neurons else 2) + 3
        torch.testing.assert_close(full.sum(0), final, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_logit_attributions_add_up_to_the_logit_of_a_fresh_model(norm):
    model = StandardTransformer(model_config(seed=4, norm=norm))  # unit gains and zero biases: TransformerLens's folded norm
    logits, cache = model.run_with_cache(tokens())
    answers = logits.argmax(-1)
    stack = cache.decompose_resid(pos_slice=model.readout_at)  # [component, batch, d_model]
    attrs = cache.logit_attrs(stack, tokens=answers, pos_slice=model.readout_at)
    assert attrs.shape == (6, 5)  # embed, pos_embed, then attention and MLP of each layer
    torch.testing.assert_close(attrs.sum(0), logits.gather(1, answers[:, None])[:, 0], atol=1e-5, rtol=0)


def test_a_hook_changes_everything_downstream():
    model, x = StandardTransformer(model_config(seed=1)), tokens()
    clean = model(x)
    uniform = lambda pattern, hook: torch.full_like(pattern, 1 / pattern.shape[-1])  # noqa: E731
    patched = model.run_with_hooks(x, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
    assert not torch.allclose(patched, clean)
    torch.testing.assert_close(model(x), clean)  # the hook is gone afterwards


@pytest.mark.parametrize("fields, message", [
    ({"n_heads": 3}, "n_heads must divide d_model (8), got 3"),
    ({"n_layers": 0}, "n_layers must be >= 1, got 0"),
    ({"readout": 6}, "readout position must be in 0..5"),
    ({"readout": "first"}, "readout must be one of cls, last or a position, got 'first'"),
    ({"norm": "batch"}, "norm must be one of rms, layer, got 'batch'"),
    ({"arch": "cross_attention"}, "n_layers applies to arch transformer (the paper's model keeps 1), got 2"),
])
def test_bad_model_configs_name_the_value(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_config(**fields)


def test_the_paper_model_keeps_its_answers_and_old_configs_load():
    paper = ModelConfig()
    assert (paper.arch, paper.n_layers, paper.n_heads, paper.d_head) == ("cross_attention", 1, 1, 32)
    old = RunConfig().to_dict()
    for key in ("arch", "n_layers", "n_heads", "readout", "norm"):
        del old["model"][key]
    assert RunConfig.from_dict(old, saved=True).model == paper  # a run.json written before these fields
    assert model_config().to_shape() != model_config(n_heads=4).to_shape() != model_config(norm="layer").to_shape()


# ---- the engine and training -------------------------------------------------------------------
def test_engine_gradient_equals_autograd_of_the_reference_for_each_run():
    cfgs = [model_config(seed=s, tied=False) for s in range(3)]
    layout = Layout.of(cfgs[0])
    theta = layout.pack([StandardTransformer(c).weights() for c in cfgs])
    x = torch.stack([tokens(9, seed=s) for s in range(3)])
    y = x[:, :, :3].sum(-1) % 4
    losses, grad = loss_and_grad(theta, layout, Encoded.of(x, y, 4))
    for s in range(3):
        w = {k: v.clone().requires_grad_(True) for k, v in layout.unpack(theta[s]).items()}
        loss = torch.nn.functional.cross_entropy(reference_logits(w, x[s], cfgs[s]), y[s])
        loss.backward()
        torch.testing.assert_close(losses[s], loss.detach())
        expected = layout.pack([{k: v.grad for k, v in w.items()}])[0]
        torch.testing.assert_close(grad[s], expected, atol=1e-5, rtol=1e-4)


def test_training_lowers_the_loss_and_a_checkpoint_gives_the_logged_logits(tmp_path):
    run = train(run_config("2:40:1e-2"), tmp_path / "run", progress=False)
    assert run.metrics[-1]["train_loss"] < run.metrics[0]["train_loss"] - 0.05
    assert run.config.model.arch == "transformer" and run.steps[-1] == 40
    model, split = run.model_at(), run.data(0)
    assert isinstance(model, StandardTransformer)
    layout = Layout.of(run.config.model)
    theta = layout.pack([run.weights_at(40)])
    loss, accuracy = evaluate(theta, layout, Encoded.of(split.x_train[None], split.y_train[None], 4))
    logits = model(split.x_train)
    assert loss.item() == pytest.approx(run.metrics[-1]["train_loss"], abs=1e-6)
    assert (logits.argmax(-1) == split.y_train).float().mean().item() == run.metrics[-1]["train_acc"] == accuracy.item()
    torch.testing.assert_close(torch.nn.functional.cross_entropy(logits, split.y_train), loss[0])


def test_resume_mid_phase_equals_uninterrupted(tmp_path):
    config = run_config("2:16:1e-2,4:16:1e-2:8")
    full = train(config, tmp_path / "full", progress=False)
    cut = train(config, tmp_path / "cut", progress=False)
    assert saved_steps(cut.path / "state") == [24, 32]
    (cut.path / "state" / "step_0000032.safetensors").unlink()
    run_json = cut.path / "run.json"
    run_json.write_text(run_json.read_text().replace('"completed"', '"running"'))
    (resumed,) = resume([cut.path], progress=False)
    assert resumed.metrics == full.metrics and resumed.steps == full.steps
    for step in full.steps:
        assert (resumed.path / "checkpoints").joinpath(f"step_{step:07d}.safetensors").read_bytes() == \
            (full.path / "checkpoints").joinpath(f"step_{step:07d}.safetensors").read_bytes()


#: A run vmapped among others, at each place, against the same run vmapped alone: same bytes.
VMAP_CHECK = """
import torch
from dataclasses import replace
from circuitpath.config import ModelConfig
from circuitpath.training import stacked
from circuitpath.training.engine import Encoded, Layout
torch.set_num_threads(1)
for fields in ({"tied": False, "norm": "layer", "readout": "last"}, {"readout": 2, "n_layers": 1}, {}):
    cfg = ModelConfig(**({"arch": "transformer", "d_model": 8, "n_layers": 2, "n_heads": 2, "n_ctx": 6} | fields))
    layout = Layout.of(cfg)
    theta = layout.pack([stacked.StandardTransformer(replace(cfg, seed=s)).weights() for s in range(5)])
    x = torch.randint(0, 4, (5, 11, 6), generator=torch.Generator().manual_seed(0))
    data = Encoded.of(x, x[:, :, :3].sum(-1) % 4, 4)
    together = stacked.loss_and_grad(theta, layout, data), stacked.evaluate(theta, layout, data)
    for run in range(5):
        one = data.rows(slice(run, run + 1)).copy()
        alone = stacked.loss_and_grad(theta[run:run + 1].clone(), layout, one), stacked.evaluate(theta[run:run + 1].clone(), layout, one)
        for a, b in zip([*alone[0], *alone[1]], [*together[0], *together[1]]):
            assert torch.equal(a[0], b[run]), (fields, run)
print(torch.backends.cpu.get_cpu_capability())
"""


def test_a_vmapped_run_is_the_same_bytes_alone_and_among_others():
    exec(VMAP_CHECK, {})  # this CPU's best kernel set, in this process


def test_so_it_is_under_the_default_kernel_set():
    """The plain kernels every x86 CPU runs (ATEN_CPU_CAPABILITY=default), in a fresh process."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    done = subprocess.run([sys.executable, "-c", VMAP_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().lower() == "default"  # the kernel set asked for is the one that ran


def test_a_run_is_the_same_bytes_alone_and_in_a_group(tmp_path, monkeypatch):
    monkeypatch.setattr("circuitpath.training.engine.os.cpu_count", lambda: 1)  # all three runs in one chunk, the target second
    configs = [run_config(f"2:8:{lr},4:8:{lr}:8", seed=s) for s, lr in ((5, 3e-3), (7, 1e-2), (9, 3e-2))]
    group = train_many(configs, [tmp_path / f"g{i}" for i in range(3)], progress=False, workers=2)
    alone = train(configs[1], tmp_path / "alone", progress=False)
    assert alone.metrics == group[1].metrics and alone.metrics != group[0].metrics
    for step in alone.steps:
        name = f"step_{step:07d}.safetensors"
        assert (alone.path / "checkpoints" / name).read_bytes() == (group[1].path / "checkpoints" / name).read_bytes()


def test_a_branch_equals_its_concatenated_run_trained_from_scratch(tmp_path):
    parent = train(run_config("2:16:1e-2", seed=3), tmp_path / "parent", progress=False)
    child = branch(parent, 8, parse_phases("4:8:3e-3:8"), tmp_path / "branch", progress=False)
    scratch = train(child.config, tmp_path / "scratch", progress=False)
    assert child.config.model.arch == "transformer" and child.metrics == scratch.metrics and child.steps == scratch.steps
    for step in child.steps:
        assert child.checkpoint_path(step).read_bytes() == scratch.checkpoint_path(step).read_bytes()


# ---- the command line ----------------------------------------------------------------------------
TINY = ["--n-ctx", "6", "--k", "3", "--n-train", "40", "--n-test", "50", "--d-model", "8", "--p", "2",
        "--log-every", "5", "--checkpoint-every", "10", "--dense-checkpoints", "0"]


def test_train_a_transformer_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--out", str(out), *TINY, "--steps", "10", "--model", "transformer", "--n-layers", "2",
                 "--n-heads", "4", "--readout", "last", "--norm", "layer"]) == 0
    model = load_run(out).config.model
    assert (model.arch, model.n_layers, model.n_heads, model.readout, model.norm) == ("transformer", 2, 4, "last", "layer")
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert '"readout": "last"' in shown and '"n_heads": 4' in shown and '"norm": "layer"' in shown


@pytest.mark.parametrize("args, message", [
    (["--n-heads", "3"], "n_heads must divide d_model (8), got 3"),
    (["--n-layers", "0"], "n_layers must be >= 1, got 0"),
    (["--readout", "6"], "readout position must be in 0..5 (the sequence has n_ctx = 6 positions), got 6"),
    (["--readout", "-1"], "got -1"),
    (["--model", "gpt"], "argument --model: invalid choice: 'gpt'"),
    (["--norm", "batch"], "argument --norm: invalid choice: 'batch'"),
])
def test_bad_transformer_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    model = [] if "--model" in args else ["--model", "transformer"]
    assert exit_status(["train", "--out", str(out), *TINY, "--steps", "5", *model, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("circuitpath: error:") and "\n" not in err
    assert not out.exists()
