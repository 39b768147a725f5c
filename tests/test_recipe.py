"""The optimiser recipe (AdamW, betas, warm-up, clipping) and GPT-2's initialisation."""

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from circuitpath import ModelConfig, Phase, load_run, parse_phases, resume, train
from circuitpath.cli import main
from circuitpath.config import RunConfig
from circuitpath.models.weights import init_weights, transformer_shapes
from circuitpath.training.engine import Adam, Encoded, Layout, clip_rows, decay_mask, loss_and_grad

from cli_status import exit_status
from conftest import tiny_config
from test_resume import as_killed, assert_same_run

PAPER = ModelConfig(d_model=8, n_ctx=6, tied=False)
TRANSFORMER = ModelConfig(arch="transformer", d_model=8, n_ctx=6, n_heads=2, n_layers=2, tied=False, norm="layer",
                          init="gpt2")
RECIPE = dict(weight_decay=0.5, betas=(0.9, 0.98), warmup=3, clip=0.5)


def _data(seed: int, batch: int = 16):
    generator = torch.Generator().manual_seed(100 + seed)
    x = torch.randint(0, 4, (batch, 6), generator=generator)
    return x, x[:, :3].sum(1) % 4


def _torch_loop(cfg: ModelConfig, phase: Phase, steps: int) -> dict[str, torch.Tensor]:
    """The reference: one run alone, torch.optim.AdamW with a LambdaLR warm-up and clip_grad_norm_ over its
    weights, each step's gradient that of the run alone (the engine's gradient is held to the hooked model's
    by test_engine and test_transformer; near-zero gradients such as b_K's, noise at 1e-9, would otherwise
    turn into lr-sized differences through Adam's normalisation)."""
    layout = Layout.of(cfg)
    weights = {n: w.clone().requires_grad_(True) for n, w in init_weights(cfg).items()}
    leaves = {n: n.rsplit(".", 1)[-1] for n in weights}  # b_Q, b_K, b_V [heads, d_head] are biases, not matrices
    matrices = [w for n, w in weights.items() if w.ndim >= 2 and leaves[n].startswith("W_")
                and leaves[n] not in ("W_E", "W_pos")]
    others = [w for w in weights.values() if not any(w is m for m in matrices)]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": phase.weight_decay},
                             {"params": others, "weight_decay": 0.0}], lr=phase.lr, betas=phase.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / phase.warmup))
    x, y = _data(cfg.seed)
    data = Encoded.of(x[None], y[None], cfg.n_tokens)
    for _ in range(steps):
        _, grad = loss_and_grad(layout.pack([{n: w.detach() for n, w in weights.items()}]), layout, data)
        for name, view in layout.views(grad).items():
            weights[name].grad = view[0].clone()
        torch.nn.utils.clip_grad_norm_(list(weights.values()), phase.clip)
        opt.step()
        schedule.step()
    return {n: w.detach() for n, w in weights.items()}


@pytest.mark.parametrize("base", [PAPER, TRANSFORMER], ids=["paper", "transformer"])
def test_adamw_matches_torch_per_run_in_a_batch_of_two(base):
    phase, steps = Phase(p=4, steps=6, lr=1e-2, **RECIPE), 6
    cfgs = [replace(base, seed=seed) for seed in (1, 2)]
    layout = Layout.of(base)
    theta = layout.pack([init_weights(c) for c in cfgs])
    xs, ys = zip(*(_data(c.seed) for c in cfgs))
    data = Encoded.of(torch.stack(xs), torch.stack(ys), base.n_tokens)
    adam = Adam.of_phase(theta, torch.tensor([phase.lr, phase.lr]), phase, layout)
    for _ in range(steps):
        _, grad = loss_and_grad(theta, layout, data)
        adam.step(theta, grad)
    for row, cfg in enumerate(cfgs):
        reference = _torch_loop(cfg, phase, steps)
        ours = layout.unpack(theta[row])
        for (name, want), got in zip(reference.items(), ours.values()):
            # b_K's true gradient is 0 (a key bias shifts every score of a query alike): Adam steps on rounding noise
            atol = 1e-4 if name.endswith("attn.b_K") else 2e-6
            torch.testing.assert_close(got, want, atol=atol, rtol=1e-4, msg=f"{name} of seed {cfg.seed}")
        start = init_weights(cfg)
        assert any(not torch.allclose(start[n], ours[n]) for n in ours)  # it moved


def test_decay_mask_covers_exactly_the_matrices():
    layout = Layout.of(TRANSFORMER)
    mask = decay_mask(layout)
    decayed = {n for n, (a, b) in layout.offsets.items() if mask[a:b].eq(1).all()}
    kept = {n for n, (a, b) in layout.offsets.items() if mask[a:b].eq(0).all()}
    assert decayed | kept == set(transformer_shapes(TRANSFORMER))
    assert decayed == {f"blocks.{i}.{m}" for i in range(2)
                       for m in ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out")} | {"unembed.W_U"}
    assert mask[max(b for _, b in layout.offsets.values()):].eq(0).all()  # no padding
    assert decay_mask(layout, "all")[: max(b for _, b in layout.offsets.values())].eq(1).all()
    paper = Layout.of(PAPER)  # W_Q is a vector per run: not a matrix
    assert {n for n, (a, b) in paper.offsets.items() if decay_mask(paper)[a:b].eq(1).all()} == {"W_V", "W_in", "W_out", "W_U"}


def test_warmup_scales_the_first_steps_and_weight_decay_alone_shrinks():
    theta = torch.ones(1, 32)
    adam = Adam(theta, torch.tensor([0.1]), warmup=4)
    moves = []
    for _ in range(6):
        before = theta.clone()
        adam.step(theta, torch.ones(1, 32))  # a constant gradient: Adam's step is lr_t exactly
        moves.append(float((before - theta)[0, 0]))
    assert moves == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rel=1e-5)
    mask = torch.zeros(32)
    mask[:8] = 1
    theta = torch.ones(1, 32)
    Adam(theta, torch.tensor([0.1]), weight_decay=0.5, decay=mask).step(theta, torch.zeros(1, 32))
    assert theta[0, :8].tolist() == pytest.approx([0.95] * 8) and theta[0, 8:].eq(1).all()


def test_clipping_bounds_each_runs_gradient_norm():
    grad = torch.stack([torch.full((16,), 3.0), torch.full((16,), 0.01)])
    clipped = clip_rows(grad, 1.0)
    norms = clipped.norm(dim=1)
    assert norms[0] == pytest.approx(1.0, rel=1e-5) and norms[0] < grad[0].norm()
    assert torch.equal(clipped[1], grad[1])  # under the bound: unchanged
    reference = grad[0].clone().requires_grad_()
    reference.grad = grad[0].clone()
    torch.nn.utils.clip_grad_norm_([reference], 1.0)
    torch.testing.assert_close(clipped[0], reference.grad)


def test_phase_strings_round_trip():
    text = "2:400:1e-3:128:wd=0.1:betas=0.9/0.98:warmup=40:clip=1:decay=all,4:10:1e-2:k=3:clip=none"
    first, second = parse_phases(text, weight_decay=0.05, clip=2.0)
    assert first == Phase(p=2, steps=400, lr=1e-3, batch_size=128, weight_decay=0.1, betas=(0.9, 0.98),
                          warmup=40, clip=1.0, decay="all")
    assert second == Phase(p=4, steps=10, lr=1e-2, k=3, weight_decay=0.05)  # flags fill what the string leaves
    for phase in (first, second):
        assert Phase(**json.loads(json.dumps(phase.to_dict()))) == phase
    assert Phase(p=2, steps=5, lr=1e-3).to_dict() == {"p": 2, "steps": 5, "lr": 1e-3, "batch_size": None, "k": None}


def test_a_run_json_without_the_recipe_reads_as_plain_adam():
    data = tiny_config().to_dict()
    assert set(data["train"]["phases"][0]) == {"p", "steps", "lr", "batch_size", "k"}
    phase = RunConfig.from_dict(data, saved=True).train.phases[0]
    assert phase.plain and phase.betas == (0.9, 0.999) and phase.clip is None


TINY = ["--n-ctx", "6", "--k", "3", "--n-train", "40", "--n-test", "50", "--d-model", "8",
        "--log-every", "5", "--checkpoint-every", "10", "--dense-checkpoints", "3"]


@pytest.mark.parametrize("args, message", [
    (["--weight-decay", "-0.1"], "argument --weight-decay: must be >= 0, got -0.1"),
    (["--weight-decay", "lots"], "argument --weight-decay: takes a number, got 'lots'"),
    (["--betas", "0.9,1.0"], "argument --betas: each beta must lie in [0, 1), got '0.9,1.0'"),
    (["--betas", "0.9"], "argument --betas: takes two numbers B1,B2, got '0.9'"),
    (["--phases", "2:10:1e-2:betas=0.9/-0.5"], "betas must each lie in [0, 1), got -0.5"),
    (["--warmup", "20"], "warmup must be <= the phase's steps (10), got 20"),
    (["--phases", "2:10:1e-2:warmup=11"], "warmup must be <= the phase's steps (10), got 11"),
    (["--clip", "0"], "argument --clip: must be > 0, got 0"),
    (["--warmup", "-1"], "argument --warmup: must be >= 0, got -1"),
    (["--init", "xavier"], "argument --init: invalid choice: 'xavier'"),
    (["--init", "gpt2"], "init gpt2 applies to arch transformer"),
])
def test_bad_recipes_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "x"
    steps = [] if "--phases" in args else ["--steps", "10"]
    assert exit_status(["train", "--out", str(out), *TINY, *steps, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_recipe_is_recorded_and_resumes_to_the_same_bytes(tmp_path, capsys):
    config = tiny_config("2:30:1e-2:wd=0.1:betas=0.9/0.98:warmup=5:clip=1,4:30:1e-2:8:wd=0.05:decay=all")
    full = train(config, tmp_path / "full", progress=False)
    recorded = json.loads((full.path / "run.json").read_text())["config"]["train"]["phases"]
    assert recorded[0]["weight_decay"] == 0.1 and recorded[0]["betas"] == [0.9, 0.98] and recorded[0]["clip"] == 1.0
    assert recorded[1]["decay"] == "all" and "betas" not in recorded[1]
    assert load_run(full.path).config == config
    cut = train(config, tmp_path / "cut", progress=False)
    (cut.path / "state" / sorted((cut.path / "state").iterdir())[-1].name).unlink()
    as_killed(cut.path)
    assert main(["train", "--resume", str(cut.path), "--weight-decay", "0.2"]) == 2  # another recipe: refused
    assert "--weight-decay 0.2 differs from the weight_decay 0.1" in capsys.readouterr().err
    (resumed,) = resume([cut.path], progress=False)
    assert_same_run(resumed, full)
    plain = train(tiny_config("2:30:1e-2,4:30:1e-2:8"), tmp_path / "plain", progress=False)
    assert plain.weights_at(60)["W_in"].norm() > full.weights_at(60)["W_in"].norm()  # the decay shrank it


def test_gpt2_init_draws_as_gpt2_and_leaves_ordered_unchanged():
    cfg = replace(TRANSFORMER, d_model=64, d_mlp=256, n_heads=4)
    weights = init_weights(cfg)
    for name, w in weights.items():
        leaf = name.rsplit(".", 1)[1]
        if leaf in ("w",):
            assert w.eq(1).all(), name
        elif leaf == "b" or leaf.startswith("b_"):
            assert w.eq(0).all(), name
        else:
            want = 0.02 / math.sqrt(2 * cfg.n_layers) if leaf in ("W_O", "W_out") else 0.02
            assert abs(float(w.std()) / want - 1) < 0.1 and abs(float(w.mean())) < want / 5, name
    assert "unembed.W_U" in weights  # the untied readout is drawn too
    ordered = init_weights(replace(cfg, init="ordered"))
    assert ordered["embed.W_E"].std() > 0.5  # N(0, 1), as before


def test_branch_and_switch_refuse_a_recipe_that_differs_from_the_recorded_one(tmp_path, capsys):
    parent = train(tiny_config("2:20:1e-2:wd=0.1:warmup=5"), tmp_path / "parent", progress=False)
    flags = [str(parent.path), "--at", "10", "--phases", "2:10:1e-2"]
    assert main(["branch", *flags, "--out", str(tmp_path / "b1")]) == 2  # continues phase 0 with plain Adam
    assert "changes its optimiser recipe: weight_decay 0.0 (recorded 0.1), warmup 0 (recorded 5)" in capsys.readouterr().err
    assert main(["branch", *flags, "--init", "gpt2", "--out", str(tmp_path / "b2")]) == 2
    assert "--init gpt2 differs from the init ordered" in capsys.readouterr().err
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()
    assert main(["branch", *flags, "--weight-decay", "0.1", "--warmup", "5", "--out", str(tmp_path / "b3")]) == 0
    branched = load_run(tmp_path / "b3")
    assert branched.config.train.phases == (Phase(p=2, steps=20, lr=1e-2, weight_decay=0.1, warmup=5),)
    assert_same_run(branched, parent)  # it continued the recipe: the parent's own bytes
    out = tmp_path / "switch"
    small = ["--n-ctx", "6", "--k", "3", "--n-train", "40", "--d-model", "8", "--log-every", "5",
             "--checkpoint-every", "10", "--seeds", "0", "--at", "0,10", "--total", "20"]
    assert main(["switch", "--out", str(out), *small, "--weight-decay", "0.1", "--clip", "1"]) == 0
    assert load_run(out / "switch_10" / "seed_0").config.train.phases[1].recipe["clip"] == 1.0
    capsys.readouterr()
    assert main(["switch", "--resume", str(out), "--clip", "2"]) == 2
    assert "--clip 2.0 differs from the clip 1.0 that the switch experiment" in capsys.readouterr().err
