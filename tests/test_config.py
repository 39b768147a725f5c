import pytest

from circuitpath import ConfigError, ModelConfig, Phase, RunConfig, TaskConfig, TrainConfig, parse_phases


def test_defaults_are_the_paper_setting():
    cfg = RunConfig()
    assert (cfg.task.n_ctx, cfg.task.k, cfg.task.n_train) == (12, 5, 2048)
    assert (cfg.model.d_model, cfg.model.d_mlp, cfg.model.n_tokens, cfg.model.tied) == (32, 128, 4, True)
    assert cfg.train.phases == (Phase(p=4, steps=10_000, lr=1e-2),)


def test_phases_parse():
    assert parse_phases("2:3000:1e-3,4:7000:1e-2") == (Phase(2, 3000, 1e-3), Phase(4, 7000, 1e-2))
    assert parse_phases("4:10:0.1:32")[0].batch_size == 32


@pytest.mark.parametrize("text, message", [
    ("2:3000", "p:steps:lr"),
    ("2:x:1e-3", "with numbers, got '2:x:1e-3'"),
    ("2:0:1e-3", "steps must be >= 1, got 0"),
    ("2:10:-1", "lr must be a positive number, got -1.0"),
    ("", "an empty phase in ''"),
    ("2:30:1e-3,,4:10:1e-2", "an empty phase in '2:30:1e-3,,4:10:1e-2': phases are separated by single commas"),
])
def test_bad_phases(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_phases(text)


@pytest.mark.parametrize("build, message", [
    (lambda: ModelConfig(d_model=0), "d_model must be >= 1, got 0"),
    (lambda: ModelConfig(n_tokens=1.5), "n_tokens must be an integer, got 1.5"),
    (lambda: ModelConfig(tied="yes"), "tied must be true or false"),
    (lambda: TrainConfig(log_every=0), "log_every must be >= 1, got 0"),
    (lambda: TrainConfig(phases=()), "at least one phase"),
    (lambda: RunConfig(model=ModelConfig(n_ctx=8)), r"model.n_ctx \(8\) must equal task.n_ctx \(12\)"),
    (lambda: RunConfig(train=TrainConfig(phases=(Phase(5, 10, 1e-2),))), "p = 5 exceeds the model's n_tokens = 4"),
    (lambda: RunConfig(train=TrainConfig(phases=(Phase(4, 10, 1e-2, batch_size=5000),))), "batch_size must be <= n_train"),
    (lambda: ModelConfig(init="paper"), "init must be one of ordered, shared_stream, gpt2, got 'paper'"),
    (lambda: ModelConfig(d_mlp=4096, init="shared_stream"), "d_mlp must be <= 2048 with init shared_stream, got 4096"),
    (lambda: ModelConfig(d_model=8, d_mlp=4, init="shared_stream"), r"d_mlp must be >= d_model \(8\) with init shared_stream, got 4"),
    (lambda: RunConfig(model=ModelConfig(n_tokens=3), train=TrainConfig(phases=parse_phases("2:5:1e-3,4:5:1e-3"))),
     "phase p = 4 exceeds the model's n_tokens = 3"),
    (lambda: RunConfig(model=ModelConfig(n_tokens=2), train=TrainConfig(phases=parse_phases("3:5:1e-3"))),
     "phase p = 3 exceeds the model's n_tokens = 2"),
])
def test_bad_values_raise_naming_the_value(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_dict_round_trip_and_unknown_keys():
    cfg = RunConfig(task=TaskConfig(seed=3), train=TrainConfig(phases=parse_phases("2:5:1e-3,4:5:1e-2")))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    data = cfg.to_dict()
    data["model"]["d_modle"] = 16
    with pytest.raises(ConfigError, match="unknown key 'd_modle' in model"):
        RunConfig.from_dict(data)
    with pytest.raises(ConfigError, match="unknown key 'optimiser' in run config"):
        RunConfig.from_dict({"optimiser": {}})
    with pytest.raises(ConfigError, match=r"train.phases\[\]"):
        RunConfig.from_dict({"train": {"phases": [{"p": 2, "steps": 3}]}})


def test_configs_saved_before_the_draw_options_load_as_todays_draws():
    saved = RunConfig().to_dict()
    del saved["task"]["with_replacement"], saved["model"]["init"]
    config = RunConfig.from_dict(saved, saved=True)
    assert config.task.with_replacement is False and config.model.init == "ordered"
    new = RunConfig(task=TaskConfig(with_replacement=True), model=ModelConfig(d_model=2, d_mlp=32, init="shared_stream"))
    assert RunConfig.from_dict(new.to_dict(), saved=True) == new


def test_with_replacement_lifts_the_limit_on_n_train():
    with pytest.raises(ConfigError, match="n_train must be < p\\*\\*n_ctx"):
        RunConfig(task=TaskConfig(n_ctx=4, k=2, n_train=20), model=ModelConfig(n_ctx=4), train=TrainConfig(phases=parse_phases("2:5:1e-3")))
    config = RunConfig(task=TaskConfig(n_ctx=4, k=2, n_train=20, with_replacement=True), model=ModelConfig(n_ctx=4),
                       train=TrainConfig(phases=parse_phases("2:5:1e-3")))
    assert config.task.n_train == 20


def test_a_task_s_phase_is_a_phase_not_its_index():
    """run.data(1) and run.phase_at take indices; the task's truth takes the Phase, and says so when given an index."""
    task, phase = TaskConfig(k=3), parse_phases("2:10:1e-3:k=2")[0]
    assert task.relevant_positions(phase) == (0, 1) and task.relevant_positions() == (0, 1, 2)
    with pytest.raises(ConfigError, match=r"a task's phase is a Phase, e.g. run.config.train.phases\[i\] .* got 0"):
        task.relevant_positions(0)
