"""The lean pass (the last block at the readout position alone) and position discovery on several threads."""

import pytest
import torch

from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases, train
from circuitpath.analysis.discovery import positions
from circuitpath.models.model import build_model
from circuitpath.models.transformer import StandardTransformer


def transformer(n_layers: int = 2, readout="cls") -> StandardTransformer:
    return StandardTransformer(ModelConfig(d_model=8, n_ctx=6, arch="transformer", n_layers=n_layers, n_heads=2,
                                           readout=readout, seed=3))


@pytest.mark.parametrize("n_layers, readout", [(1, "cls"), (2, "cls"), (2, "last"), (3, 2)])
def test_the_lean_pass_gives_the_full_pass_logits_up_to_rounding(n_layers, readout):
    model = transformer(n_layers, readout)
    tokens = torch.randint(0, 4, (64, 6), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(tokens, **model.lean_forward()), model(tokens), atol=1e-5)


def test_a_hook_in_the_last_block_gets_the_full_pass():
    model = transformer(2)
    lean = model.lean_forward
    assert lean(None) == lean("hook_embed") == lean("blocks.0.mlp.hook_post") == lean("blocks.1.hook_resid_pre") == {
        "engine": True}
    assert lean("blocks.1.attn.hook_pattern") == lean("blocks.1.hook_resid_post") == lean("ln_final.hook_scale") == {}
    paper = build_model(ModelConfig(n_ctx=6, d_model=8))
    assert paper.lean_forward("blocks.0.attn.hook_v") == {}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = RunConfig(
        task=TaskConfig(n_ctx=6, k=3, n_train=48, n_test=48, positions="random", seed=2),
        model=ModelConfig(d_model=8, n_ctx=6, arch="transformer", n_layers=2, n_heads=2, seed=2),
        train=TrainConfig(phases=parse_phases("2:20:1e-2,4:20:1e-2"), log_every=10, checkpoint_every=10,
                          dense_checkpoints=2))
    return train(config, tmp_path_factory.mktemp("lean") / "run", progress=False)


def test_position_scores_do_not_depend_on_how_many_checkpoints_run_at_once(run):
    alone = positions.discover_positions(run, n=32, workers=1)
    together = positions.discover_positions(run, n=32, workers=3)
    assert alone.steps == together.steps and len(alone.steps) >= 4
    for method in alone.methods:
        assert torch.equal(alone.scores[method], together.scores[method])
        assert torch.equal(alone.signed[method], together.signed[method])
    assert torch.equal(alone.accuracy, together.accuracy)

