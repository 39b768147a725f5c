"""The presets hold each figure's settings as its notebook has them, and check what a user may vary."""

import pytest

from circuitpath import presets
from circuitpath.errors import ConfigError


def test_every_figure_names_experiments_that_exist():
    experiments = presets.experiments()
    for figure in presets.FIGURES.values():
        assert figure.experiments and all(name in experiments for name in figure.experiments)
        assert all(figure.number in experiments[name].figures for name in figure.experiments)


def test_fig2_is_the_mini_batch_run_of_graph_notebook():
    e = presets.experiments()["minibatch"]
    (phase,) = e.train.phases
    assert (e.task.n_ctx, e.task.k, e.task.n_train) == (8, 5, 2048)
    assert (e.model.d_model, e.model.d_mlp, e.model.n_tokens) == (32, 128, 4)
    assert (phase.p, phase.lr, phase.batch_size, phase.steps) == (4, 1e-3, 32, 150 * 64)
    assert e.train.extra_checkpoints == tuple(range(1, 65))  # every update of the first epoch


def test_fig4_is_d2_with_an_mlp_of_32_and_figs_5_7_are_d32():
    experiments = presets.experiments()
    for name in ("small_curriculum", "small_scratch"):
        assert (experiments[name].model.d_model, experiments[name].model.d_mlp) == (2, 32)
    assert [(ph.p, ph.steps, ph.lr) for ph in experiments["small_curriculum"].train.phases] == [(2, 3000, 1e-3), (4, 7000, 1e-2)]
    assert [(ph.p, ph.steps, ph.lr) for ph in experiments["curriculum"].train.phases] == [(2, 3000, 1e-3), (4, 7000, 1e-2)]
    assert [(ph.p, ph.steps, ph.lr) for ph in experiments["scratch"].train.phases] == [(4, 10_000, presets.SCRATCH_LR)]
    assert {e.model.residual for e in experiments.values()} == {"attn_out"}  # the variant that drew the figures


def test_a_seed_sets_data_weights_and_batches():
    config = presets.experiments()["minibatch"].config(5)
    assert config.task.seed == config.model.seed == config.train.seed == 5
    with pytest.raises(ConfigError, match="-1"):
        presets.experiments()["scratch"].config(-1)


def test_figures_are_parsed_and_unknown_ones_refused():
    assert presets.parse_figures("all") == [2, 3, 4, 5, 6, 7]
    assert presets.parse_figures("4, 2,4") == [2, 4]
    assert presets.needed([5, 6]) == ["scratch", "curriculum"]
    assert presets.needed([3]) == ["curriculum", "small_curriculum"]
    for bad in ("9", "2,x", ""):
        with pytest.raises(ConfigError, match="figure"):
            presets.parse_figures(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"residual": "prenorm"}, "'prenorm'"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"small_d_mlp": 0}, "d_mlp must be >= 1, got 0"),
    ({"scratch_lr": 0.0}, "lr must be a positive number, got 0.0"),
])
def test_bad_values_are_refused_by_name(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        for experiment in presets.experiments(**kwargs).values():
            experiment.config(0)


def test_a_batch_larger_than_the_training_set_is_refused():
    with pytest.raises(ConfigError, match="batch_size must be <= n_train \\(2048\\), got 4096"):
        presets.experiments(batch_size=4096)["minibatch"].config(0)


@pytest.mark.parametrize("name, shape", [("minibatch", (8, 32, 128, 32)), ("small_curriculum", (12, 2, 32, None))])
def test_the_presets_own_shapes_train_and_reload(tmp_path, name, shape):
    """Fig. 2's T = 8 mini-batch run and Fig. 4's d = 2 run, a few steps each, saved and read back."""
    from dataclasses import replace

    import torch

    from circuitpath import load_run, train

    config = presets.experiments()[name].config(3)
    phases = tuple(replace(ph, steps=4) for ph in config.train.phases)
    config = replace(config, train=replace(config.train, phases=phases, log_every=2, checkpoint_every=2,
                                           dense_checkpoints=0, extra_checkpoints=(1,)))
    run = load_run(train(config, tmp_path / name, progress=False).path)
    assert run.status == "completed" and run.config == config
    assert (run.config.task.n_ctx, run.config.model.d_model, run.config.model.d_mlp, phases[0].batch_size) == shape
    assert run.weights_at(1)["W_pos"].shape == (shape[0], shape[1])
    assert run.steps == sorted({0, 1, *range(2, 4 * len(phases) + 1, 2)})
    split = run.data(len(phases) - 1)
    accuracy = (run.model_at().forward(split.x_test).argmax(-1) == split.y_test).float().mean().item()
    assert accuracy == pytest.approx(run.final_metrics()["test_acc"], abs=1e-6)
    assert not torch.equal(run.weights_at(0)["W_E"], run.weights_at(run.steps[-1])["W_E"])
