import pytest
import torch

from circuitpath import ConfigError, TrainConfig, load_run, parse_phases, train, train_many
from circuitpath.training.train import checkpoint_schedule, log_schedule
from conftest import tiny_config
from reference import reference_train


def test_schedule_is_dense_early_regular_later_and_keeps_phase_boundaries():
    cfg = TrainConfig(phases=parse_phases("2:3000:1e-3,4:7000:1e-2"), checkpoint_every=250, dense_checkpoints=24)
    steps = checkpoint_schedule(cfg)
    early = [s for s in steps if s < 250]
    assert steps[0] == 0 and steps[-1] == 10_000 and 3000 in steps
    assert len(early) >= 18 and early[:5] == [0, 1, 2, 3, 4]
    assert all(s % 250 == 0 for s in steps if s > 250)
    assert set(steps) <= set(log_schedule(cfg))


def test_training_matches_a_plain_adam_loop_on_the_reference(tmp_path):
    cfg = tiny_config("2:15:1e-2,4:15:3e-3")
    run = train(cfg, tmp_path / "run", progress=False)
    start = run.weights_at(0)
    d0, d1 = run.data(0), run.data(1)
    expected = reference_train(start, None, None, [(1e-2, 15, d0.x_train, d0.y_train),
                                                   (3e-3, 15, d1.x_train, d1.y_train)])
    final = run.weights_at(30)
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_run_directory_holds_config_metrics_data_and_checkpoints(trained_run):
    run = load_run(trained_run.path)
    assert run.status == "completed"
    assert run.steps[0] == 0 and run.steps[-1] == 40 and 20 in run.steps
    lines = [(m["step"], m["phase"], m["p"]) for m in run.metrics]
    assert (20, 0, 2) in lines and (20, 1, 4) in lines and lines[-1] == (40, 1, 4)
    for line in run.metrics:
        assert 0 <= line["train_acc"] <= 1 and 0 <= line["test_acc"] <= 1 and line["train_loss"] > 0
    model = run.model_at(40)
    split = run.data(1)
    acc = (model(split.x_test).argmax(-1) == split.y_test).float().mean().item()
    assert acc == pytest.approx(run.final_metrics()["test_acc"], abs=1e-6)


def test_same_seed_same_result_other_seed_other_result(tmp_path):
    a = train(tiny_config(seed=1), tmp_path / "a", progress=False)
    b = train(tiny_config(seed=1), tmp_path / "b", progress=False)
    c = train(tiny_config(seed=2), tmp_path / "c", progress=False)
    assert a.metrics == b.metrics
    assert all(torch.equal(a.weights_at(30)[k], b.weights_at(30)[k]) for k in a.weights_at(30))
    assert not torch.equal(a.weights_at(30)["W_E"], c.weights_at(30)["W_E"])


def _same_files(a, b, sub: str) -> None:
    names = sorted(f.name for f in (a.path / sub).iterdir())
    assert names == sorted(f.name for f in (b.path / sub).iterdir())
    for name in names:
        assert (a.path / sub / name).read_bytes() == (b.path / sub / name).read_bytes(), name


@pytest.mark.parametrize("size", ["tiny", "paper"])
def test_a_run_is_bit_identical_alone_in_a_group_and_with_other_threads(tmp_path, size):
    """Batch invariance: no reduction, kernel or thread count that depends on the group."""
    from dataclasses import replace

    from circuitpath import ModelConfig, RunConfig, TaskConfig

    def config(seed, lr):
        if size == "tiny":
            return tiny_config(seed=seed, phases=f"2:10:{lr},4:10:{lr}:8")
        return RunConfig(task=TaskConfig(seed=seed), model=ModelConfig(seed=seed),
                         train=TrainConfig(phases=parse_phases(f"2:6:{lr},4:6:{lr}:32"), log_every=3,
                                           checkpoint_every=6, dense_checkpoints=0))

    pairs = [(0, 1e-2), (1, 3e-3), (2, 1e-2), (3, 1e-3), (4, 3e-2), (5, 1e-2)]
    configs = [config(s, lr) for s, lr in pairs]
    group = train_many(configs, [tmp_path / f"g{i}" for i in range(6)], progress=False)  # two chunks, in parallel
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            alone = train(configs[2], tmp_path / f"alone{count}", progress=False)
            assert alone.metrics == group[2].metrics
            _same_files(alone, group[2], "checkpoints")
    finally:
        torch.set_num_threads(threads)
    seed_2_again = train(replace(configs[2]), tmp_path / "again", progress=False)
    _same_files(seed_2_again, alone, "checkpoints")


def test_minibatches_train_and_are_reproducible(tmp_path):
    config = tiny_config(phases="4:20:1e-2:8")
    a = train(config, tmp_path / "a", progress=False)
    b = train(config, tmp_path / "b", progress=False)
    assert a.metrics == b.metrics
    full = train(tiny_config(phases="4:20:1e-2"), tmp_path / "c", progress=False)
    assert a.metrics[-1]["train_loss"] != full.metrics[-1]["train_loss"]


def test_minibatches_are_consecutive_slices_of_a_fresh_order_each_epoch(tmp_path):
    import torch.nn.functional as F

    from circuitpath.training.loop import epoch_order
    from reference import reference_forward

    config = tiny_config(phases="4:12:1e-2:8", n_train=40)  # 5 batches an epoch: 2 epochs and 2 steps
    run = train(config, tmp_path / "run", progress=False)
    orders = [epoch_order(config.train.seed, 0, epoch, 40) for epoch in range(3)]
    assert all(sorted(order.tolist()) == list(range(40)) for order in orders)
    assert not torch.equal(orders[0], orders[1])
    split = run.data(0)
    w = {k: v.clone().requires_grad_(True) for k, v in run.weights_at(0).items()}
    adam = torch.optim.Adam(list(w.values()), lr=1e-2)
    for step in range(12):
        epoch, at = divmod(step, 5)
        rows = orders[epoch][at * 8:(at + 1) * 8]
        adam.zero_grad()
        F.cross_entropy(reference_forward(w, split.x_train[rows])["logits"], split.y_train[rows]).backward()
        adam.step()
    for name, value in run.weights_at(12).items():
        torch.testing.assert_close(value, w[name].detach(), atol=1e-5, rtol=1e-4, msg=name)


def test_extra_checkpoints_are_saved_and_checked(tmp_path):
    run = train(tiny_config("2:30:1e-2", extra_checkpoints=(7, 13, 7)), tmp_path / "run", progress=False)
    assert {7, 13} <= set(run.steps) and 13 in {m["step"] for m in run.metrics}
    assert run.config.train.extra_checkpoints == (7, 13)
    with pytest.raises(ConfigError, match="extra checkpoint 31 is past the last step 30"):
        tiny_config("2:30:1e-2", extra_checkpoints=(31,))


def test_runs_of_different_shapes_cannot_share_a_batch(tmp_path):
    with pytest.raises(ConfigError, match="must share shapes"):
        train_many([tiny_config(), tiny_config(n_train=30)], [tmp_path / "a", tmp_path / "b"], progress=False)
    assert not (tmp_path / "a").exists()


def test_the_curriculum_sees_the_same_p4_data_as_scratch(tmp_path):
    scratch = train(tiny_config("4:5:1e-2"), tmp_path / "s", progress=False)
    curriculum = train(tiny_config("2:5:1e-3,4:5:1e-2"), tmp_path / "c", progress=False)
    assert torch.equal(scratch.data(0).x_train, curriculum.data(1).x_train)
    assert all(torch.equal(scratch.weights_at(0)[k], curriculum.weights_at(0)[k]) for k in scratch.weights_at(0))
