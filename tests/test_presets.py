"""The presets hold each figure's settings as its notebook has them, and check what a user may vary."""

import pytest

from circuitpath.errors import ConfigError
from circuitpath.paper import presets


def test_every_figure_names_experiments_that_exist():
    experiments = presets.experiments()
    for figure in presets.FIGURES.values():
        trained = [name for name in figure.experiments if name not in presets.branches_needed([figure.number])]
        assert trained and all(name in experiments for name in trained)
        assert all(figure.number in experiments[name].figures for name in trained)
    assert presets.branches_needed([4]) == [presets.VIS_RESET] and presets.VIS_RESET not in experiments


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
    assert presets.needed([3]) == ["curriculum", "vis_finetune"]
    assert presets.needed([4]) == ["vis_finetune", "vis_scratch"] and presets.branches_needed([2, 3, 5]) == []
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


VIS = ("vis_p2", "vis_finetune", "vis_scratch")


def test_the_d2_pipeline_is_train_py_and_finetune_py():
    experiments = presets.experiments()
    for name in VIS:
        e = experiments[name]
        assert (e.task.n_ctx, e.task.k, e.task.n_train, e.task.n_test, e.task.with_replacement) == (12, 5, 2048, 2048, True)
        assert (e.model.d_model, e.model.d_mlp, e.model.n_tokens, e.model.tied) == (2, 32, 4, True)
        assert (e.model.init, e.model.residual) == ("shared_stream", "attn_out")
        assert {(ph.steps, ph.lr, ph.batch_size) for ph in e.train.phases} == {(64_000, 3e-3, 32)}  # 1 000 epochs of 64
    assert [[ph.p for ph in experiments[name].train.phases] for name in VIS] == [[2], [2, 4], [4]]
    assert experiments["vis_finetune"].phases_text() == "2:64000:0.003:32,4:64000:0.003:32"
    assert {"small_curriculum", "small_scratch"} <= experiments.keys()  # factorization.ipynb's d = 2 setting stays


def test_the_grids_three_token_rows_and_finetune_py_s_p_3():
    grid = presets.experiments(vis_n_tokens=3, vis_finetune_p=3)
    assert grid["vis_p2"].config(0).model.n_tokens == 3
    assert [ph.p for ph in grid["vis_finetune"].config(0).train.phases] == [2, 3]


@pytest.mark.parametrize("kwargs, name, message", [
    ({"vis_n_tokens": 3}, "vis_finetune", "phase p = 4 exceeds the model's n_tokens = 3"),
    ({"vis_n_tokens": 3}, "vis_scratch", "phase p = 4 exceeds the model's n_tokens = 3"),
    ({"vis_n_tokens": 4, "vis_finetune_p": 5}, "vis_finetune", "phase p = 5 exceeds the model's n_tokens = 4"),
    ({"vis_n_tokens": 1}, "vis_p2", "n_tokens must be >= 2, got 1"),
])
def test_token_rows_below_a_phases_p_are_refused_by_value(kwargs, name, message):
    with pytest.raises(ConfigError, match=message):
        presets.experiments(**kwargs)[name].config(0)


def shortened(config, steps=3):
    from dataclasses import replace

    phases = tuple(replace(ph, steps=steps) for ph in config.train.phases)
    return replace(config, train=replace(config.train, phases=phases, log_every=steps, checkpoint_every=steps,
                                         dense_checkpoints=0))


@pytest.mark.parametrize("name", VIS)
def test_the_d2_pipeline_trains_and_reloads(tmp_path, name):
    """A few updates of each preset: the data, initial weights and phases the run saved are the pipeline's."""
    import numpy as np
    import torch

    from circuitpath import load_run, train
    from circuitpath.models.weights import init_weights

    config = shortened(presets.experiments()[name].config(6))
    run = load_run(train(config, tmp_path / name, progress=False).path)
    assert run.status == "completed" and run.config == config and run.steps[-1] == 3 * len(config.train.phases)
    for index, phase in enumerate(config.train.phases):
        rng = np.random.default_rng(6)  # every phase draws from the seed's stream, as finetune.py --seed 6
        assert np.array_equal(run.data(index).x_train.numpy(), rng.integers(0, phase.p, (2048, 12)))
        assert np.array_equal(run.data(index).x_test.numpy(), rng.integers(0, phase.p, (2048, 12)))
    start = run.weights_at(0)
    assert all(torch.equal(start[k], v) for k, v in init_weights(config.model).items())
    assert not torch.equal(start["W_in"], run.weights_at(run.steps[-1])["W_in"])


def write_preset(path, name, **kwargs):
    import json

    path.write_text(json.dumps(presets.experiments(**kwargs)[name].config(0).to_dict()))
    return str(path)


def test_a_preset_runs_from_the_command_line_as_a_config_file(tmp_path):
    from circuitpath import load_run
    from circuitpath.cli import main

    config = write_preset(tmp_path / "vis.json", "vis_finetune")
    assert main(["train", "--config", config, "--phases", "2:2:3e-3:32,4:2:3e-3:32", "--log-every", "2",
                 "--checkpoint-every", "2", "--dense-checkpoints", "0", "--seed", "1", "--out", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    assert (run.config.model.init, run.config.task.with_replacement, run.config.model.seed) == ("shared_stream", True, 1)


@pytest.mark.parametrize("name, args, message", [
    ("vis_finetune", ["--n-tokens", "3"], "phase p = 4 exceeds the model's n_tokens = 3"),
    ("vis_p2", ["--phases", "2:2:3e-3:32,5:2:3e-3:32"], "phase p = 5 exceeds the model's n_tokens = 4"),
    ("vis_p2", ["--d-mlp", "1"], "d_mlp must be >= d_model (2) with init shared_stream, got 1"),
])
def test_bad_token_rows_exit_2_in_one_line_and_write_nothing(tmp_path, capsys, name, args, message):
    from circuitpath.cli import main

    out = tmp_path / "bad"
    assert main(["train", "--config", write_preset(tmp_path / "c.json", name), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("circuitpath: error:") and "\n" not in err
    assert not out.exists()
