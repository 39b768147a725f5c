"""The task family: first-k or random relevant positions, sparse parity (p = 2), curricula over k."""

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from circuitpath import ConfigError, RunConfig, TaskConfig, load_run, make_split, train
from circuitpath.cli import main
from circuitpath.config import Phase, parse_phases
from circuitpath.data import positions_of, relevant_mask, targets, truth_name, truth_of


def reference_targets(rows: list[list[int]], positions, p: int) -> list[int]:
    return [sum(row[t] for t in positions) % p for row in rows]


def first_k_split_as_before(task: TaskConfig, p: int):
    """The enumerable draw of a first-k task as data.py wrote it before positions existed."""
    generator = torch.Generator().manual_seed(task.seed * 1_000_003 + p)
    codes = torch.randperm(p**task.n_ctx, generator=generator)
    x = (codes[:, None] // p ** torch.arange(task.n_ctx - 1, -1, -1)) % p
    x_train, x_test = x[: task.n_train], x[task.n_train :]
    return x_train, x_train[:, : task.k].sum(1) % p, x_test, x_test[:, : task.k].sum(1) % p


# ---- the truth -----------------------------------------------------------------------------------
def test_random_positions_are_a_function_of_the_seed():
    task = TaskConfig(n_ctx=12, k=5, positions="random", seed=3)
    assert task.relevant_positions() == TaskConfig(n_ctx=12, k=5, positions="random", seed=3).relevant_positions()
    drawn = {replace(task, seed=seed).relevant_positions() for seed in range(8)}
    assert len(drawn) > 1
    for positions in drawn:
        assert len(positions) == 5 and list(positions) == sorted(set(positions)) and 0 <= positions[0] and positions[-1] < 12
    assert TaskConfig(n_ctx=12, k=5).relevant_positions() == (0, 1, 2, 3, 4)


def test_a_phase_sums_the_first_k_of_the_task_order():
    task = TaskConfig(n_ctx=10, k=4, positions="random", seed=1)
    small, large = task.relevant_positions(Phase(2, 5, 1e-2, k=2)), task.relevant_positions(Phase(2, 5, 1e-2))
    assert len(small) == 2 and set(small) < set(large) and len(large) == 4
    assert task.spurious_positions() == tuple(t for t in range(10) if t not in large)
    assert set(task.position_order()[:4]) == set(large)


def test_explicit_positions_are_the_truth_and_json_lists_become_tuples():
    task = TaskConfig(n_ctx=8, k=3, positions=[6, 1, 4])
    assert task.positions == (6, 1, 4) and task.relevant_positions() == (1, 4, 6)
    assert task.relevant_positions(Phase(2, 5, 1e-2, k=1)) == (6,)


@pytest.mark.parametrize("fields, named", [
    ({"positions": tuple(range(9)), "k": 9}, "n_ctx = 8"),
    ({"positions": (0, 8, 2)}, "8"),
    ({"positions": (1, 1, 2)}, "distinct"),
    ({"positions": (1, 2)}, "k = 3"),
    ({"positions": "last"}, "'last'"),
    ({"k": 9}, "9"),
])
def test_bad_positions_are_refused_naming_the_value(fields, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        TaskConfig(**({"n_ctx": 8, "k": 3} | fields))


def test_a_phase_k_beyond_the_task_is_refused():
    with pytest.raises(ConfigError, match="phase k must be <= 3"):
        TaskConfig(n_ctx=8, k=3, n_train=64, positions=(1, 2, 3)).check_phase(Phase(2, 5, 1e-2, k=4))
    TaskConfig(n_ctx=8, k=3, n_train=64, positions="random").check_phase(Phase(2, 5, 1e-2, k=8))


def test_helpers_read_a_k_or_a_position_list():
    assert positions_of(3) == (0, 1, 2) and positions_of([5, 1]) == (1, 5)
    assert relevant_mask([1, 3], 5).tolist() == [False, True, False, True, False]
    assert truth_name(3) == "first k" and truth_name([0, 1, 2]) == truth_name([0, 2]) == "relevant"
    assert truth_of(TaskConfig(k=3)) == 3 and truth_of(TaskConfig(k=3), Phase(2, 5, 1e-2, k=2)) == 2
    assert truth_of(TaskConfig(n_ctx=6, k=2, positions=(4, 1))) == (1, 4)


# ---- data ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_replacement", [False, True])
def test_targets_sum_the_relevant_positions(with_replacement):
    task = TaskConfig(n_ctx=8, k=3, n_train=200, n_test=100, positions="random", seed=2, with_replacement=with_replacement)
    split, positions = make_split(task, 4), task.relevant_positions()
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        assert y.tolist() == reference_targets(x.tolist(), positions, 4)
    first = make_split(replace(task, positions="first"), 4)
    assert torch.equal(first.x_train, split.x_train)  # the sequences depend on (seed, p) only
    assert not torch.equal(first.y_train, split.y_train) or positions == (0, 1, 2)


def test_sparse_parity_is_the_case_p_2():
    task = TaskConfig(n_ctx=10, k=3, n_train=300, positions=(1, 4, 8))
    split = make_split(task, 2)
    x = split.x_train
    assert set(x.unique().tolist()) == {0, 1}
    assert torch.equal(split.y_train, x[:, 1] ^ x[:, 4] ^ x[:, 8])


@pytest.mark.parametrize("p", [2, 3])
def test_first_k_data_bytes_are_as_before(p):
    task = TaskConfig(n_ctx=8, k=3, n_train=200, seed=5)
    split = make_split(task, p)
    for new, old in zip(split.tensors().values(), first_k_split_as_before(task, p)):
        assert new.dtype == old.dtype and new.numpy().tobytes() == old.numpy().tobytes()


def test_first_k_draws_with_replacement_are_as_before():
    task = TaskConfig(n_ctx=12, k=5, n_train=64, n_test=32, seed=4, with_replacement=True)
    split = make_split(task, 2)
    rng = np.random.default_rng(4)
    x_train, x_test = rng.integers(0, 2, (64, 12)), rng.integers(0, 2, (32, 12))
    assert np.array_equal(split.x_train.numpy(), x_train) and np.array_equal(split.x_test.numpy(), x_test)
    assert np.array_equal(split.y_train.numpy(), x_train[:, :5].sum(1) % 2)


def test_targets_takes_a_k_or_positions():
    x = torch.tensor([[1, 2, 3, 0, 3], [3, 3, 1, 3, 2]])
    assert targets(x, 4, 2).tolist() == reference_targets(x.tolist(), [0, 1], 4)
    assert targets(x, 4, (1, 4)).tolist() == reference_targets(x.tolist(), [1, 4], 4)


# ---- phases and runs -----------------------------------------------------------------------------
def test_a_phase_parses_its_k():
    first, second = parse_phases("2:300:1e-3:k=2,4:700:1e-2:32")
    assert (first.p, first.steps, first.batch_size, first.k) == (2, 300, None, 2)
    assert (second.batch_size, second.k) == (32, None)
    assert Phase.parse("2:10:1e-2:16:k=3").batch_size == 16
    for bad in ("2:10:1e-2:j=3", "2:10:1e-2:k=x", "2:10:1e-2:k=0"):
        with pytest.raises(ConfigError):
            Phase.parse(bad)


def test_a_k_curriculum_trains_and_each_phase_has_its_own_targets(tmp_path, tiny):
    config = tiny("2:10:1e-2:k=1,2:10:1e-2,4:10:1e-2")
    config = replace(config, task=replace(config.task, positions="random", seed=1))
    run = train(config, tmp_path / "run", progress=False)
    task, phases = run.config.task, run.config.train.phases
    truths = [task.relevant_positions(phase) for phase in phases]
    assert len(truths[0]) == 1 and truths[1] == truths[2] and len(truths[1]) == 3
    for index, truth in enumerate(truths):
        split = run.data(index)
        assert split.y_train.tolist() == reference_targets(split.x_train.tolist(), truth, phases[index].p)
    assert torch.equal(run.data(0).x_train, run.data(1).x_train)  # same (seed, p): same sequences, new targets
    assert not torch.equal(run.data(0).y_train, run.data(1).y_train)
    assert run.status == "completed" and run.steps[-1] == 30
    assert run.info["relevant_positions"] == [list(truth) for truth in truths]  # the truth, written in run.json


def test_an_old_run_json_loads_as_a_first_k_task(tmp_path, tiny):
    run = train(tiny("2:10:1e-2,4:10:1e-2"), tmp_path / "run", progress=False)
    path = run.path / "run.json"
    info = json.loads(path.read_text())
    assert "relevant_positions" not in info  # a first-k run's run.json holds what it held before
    info["config"]["task"].pop("positions")
    for phase in info["config"]["train"]["phases"]:
        phase.pop("k")
    path.write_text(json.dumps(info))
    old = load_run(run.path)
    assert old.config == run.config and old.config.task.positions == "first"
    for index, phase in enumerate(old.config.train.phases):
        for saved, drawn in zip(old.data(index).tensors().values(), first_k_split_as_before(old.config.task, phase.p)):
            assert saved.numpy().tobytes() == drawn.numpy().tobytes()


def test_run_config_checks_every_phase_k():
    with pytest.raises(ConfigError, match="phase k must be <= 2"):
        RunConfig.from_dict({"task": {"n_ctx": 6, "k": 2, "positions": [0, 5], "n_train": 40},
                             "model": {"n_ctx": 6}, "train": {"phases": [{"p": 2, "steps": 5, "lr": 0.01, "k": 3}]}})


# ---- the command line ----------------------------------------------------------------------------
@pytest.mark.parametrize("flags, named", [
    (["-T", "6", "--positions", "0,1,2,3,4,5,6"], "7 positions"),
    (["-T", "6", "--k", "7", "--positions", "random"], "got 7"),
    (["-T", "6", "--positions", "0,x"], "'0,x'"),
    (["-T", "6", "--k", "2", "--phases", "2:5:1e-2:k=9"], "got 9"),
])
def test_the_cli_refuses_a_truth_larger_than_the_sequence(tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--n-train", "32", "--p", "2", "--steps", "5", *flags]
                if "--phases" not in flags else ["train", "--out", str(out), "--n-train", "32", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and named in err, err
    assert not out.exists()


def test_the_cli_trains_a_random_positions_task(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "-T", "6", "--k", "2", "--positions", "random", "--n-train", "32",
                 "--phases", "2:4:1e-2:k=1,2:4:1e-2", "--seed", "3", "--log-every", "4"]) == 0
    run = load_run(out)
    assert run.config.task.positions == "random" and run.config.task.seed == 3
    assert [ph.k for ph in run.config.train.phases] == [1, None]
    assert main(["train", "--out", str(tmp_path / "given"), "-T", "6", "--positions", "4,1", "--n-train", "32",
                 "--p", "2", "--steps", "4"]) == 0
    given = load_run(tmp_path / "given").config.task
    assert given.k == 2 and given.relevant_positions() == (1, 4)


# ---- analyses score against the task's truth -----------------------------------------------------
def hand_set(positions=(1, 3, 5), p=4, n_ctx=6):
    from discovery_models import summing_model

    task = TaskConfig(n_ctx=n_ctx, k=len(positions), positions=positions, n_train=500)
    every = torch.tensor(list(itertools.product(range(p), repeat=n_ctx)))
    x = every[torch.randperm(len(every), generator=torch.Generator().manual_seed(0))][:512]
    return summing_model(p, len(positions), n_ctx, positions=positions), task, x, targets(x, p, task.relevant_positions())


def test_the_hand_set_model_sums_the_given_positions():
    model, task, x, y = hand_set()
    assert (model(x).argmax(-1) == y).all()
    assert not (model(x).argmax(-1) == targets(x, 4, task.k)).all()


@pytest.mark.parametrize("method", ["attribution", "patching", "ablation"])
def test_discovery_finds_random_positions(method):
    from circuitpath.analysis.discovery import ModelGraph, Probe, auroc, precision_at_k, score_sites

    model, task, x, y = hand_set()
    positions = ModelGraph.of(model).position_scores(score_sites(model, method, Probe.shuffled(x, y)).magnitude)
    truth = task.relevant_positions()
    assert auroc(positions, truth) == 1.0 and precision_at_k(positions, truth) == 1.0
    assert auroc(positions, task.k) < 1.0  # scored against the first k, the same scores fall short


def test_ablation_knocks_out_the_relevant_set_not_the_spurious_one():
    from circuitpath.analysis.ablation import ablate, position_sets

    model, task, x, y = hand_set()
    sets = position_sets(task.relevant_positions(), task.n_ctx)
    assert list(sets.values()) == [[1, 3, 5], [0, 2, 4]] and list(sets)[0].startswith("relevant")
    result = ablate(model, x, y, sets=sets, method="mean")
    by_name = dict(zip(result.names, result.accuracy.tolist()))
    assert result.base_accuracy == 1.0
    assert by_name[list(sets)[0]] < 0.5 and by_name[list(sets)[1]] == 1.0


def test_per_row_truths_score_each_row_against_its_own():
    from circuitpath.analysis.discovery.truth import auroc, precision_at_k

    scores = torch.tensor([[5.0, 0.0, 4.0, 1.0], [0.0, 3.0, 1.0, 2.0]])
    mask = torch.tensor([[True, False, True, False], [False, True, False, False]])
    assert auroc(scores, mask).tolist() == [1.0, 1.0] and precision_at_k(scores, mask).tolist() == [1.0, 1.0]
    assert auroc(scores, [0, 2]).tolist() == [1.0, 0.0]


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """A k-curriculum on a random-positions task: 1 then 3 of 6 positions summed."""
    from conftest import tiny_config

    config = tiny_config("2:12:1e-2:k=1,2:12:1e-2", n_ctx=6, k=3)
    config = replace(config, task=replace(config.task, positions="random", seed=2))
    return train(config, tmp_path_factory.mktemp("tasks") / "run", progress=False)


def test_a_discovery_timeline_scores_each_phase_against_its_truth(random_run, tmp_path):
    from circuitpath.analysis.discovery import DiscoveryConfig, discover, load_timeline, save_timeline
    from circuitpath.analysis.discovery.truth import auroc

    run = random_run
    timeline = discover(run, DiscoveryConfig(methods=("attribution",), n=16), progress=False)
    task, phases, steps = run.config.task, run.config.train.phases, timeline.steps
    assert [timeline.relevant_at(i) for i in range(len(steps))] == [task.relevant_positions(phases[run.phase_at(s)])
                                                                   for s in steps]
    assert timeline.truth().shape == (len(steps), 6)  # the truth changes at the switch
    expected = [float(auroc(row, timeline.relevant_at(i))) for i, row in enumerate(timeline.positions("attribution"))]
    assert timeline.auroc("attribution").tolist() == pytest.approx(expected)
    save_timeline(timeline, tmp_path / "saved")
    assert load_timeline(tmp_path / "saved").relevant == timeline.relevant


def test_flow_and_attention_mark_each_phase_truth(random_run):
    from circuitpath.analysis.dynamics import attention_over_training
    from circuitpath.analysis.flow import attention_flow

    run, task = random_run, random_run.config.task
    flow = attention_flow(run)
    for graph, phase in zip(flow.graphs, flow.phases):
        summed = {data["position"] for _, data in graph.nodes(data=True) if data.get("summed")}
        assert summed == set(task.relevant_positions(run.config.train.phases[phase]))
    attention = attention_over_training(run, n=16, phase=1)
    truth = list(task.relevant_positions(run.config.train.phases[1]))
    assert torch.allclose(attention.first_k_mass, attention.pattern[:, truth].sum(1))


def test_prediction_features_name_and_measure_the_relevant_positions(random_run):
    from circuitpath.analysis.prediction import circuit_features

    run = random_run
    features = circuit_features(run, run.steps[-1], n=16)
    assert "attention on relevant" in features and "acc lost, relevant ablated" in features
    assert not any("first k" in name for name in features)
    _, cache = run.model_at(run.steps[-1]).run_with_cache(run.data(1).x_test[:16], names_filter="blocks.0.attn.hook_pattern")
    pattern = cache["blocks.0.attn.hook_pattern"].mean(0)
    truth = list(run.config.task.relevant_positions(run.config.train.phases[1]))
    assert features["attention on relevant"] == pytest.approx(float(pattern[truth].sum()))


def test_a_branch_into_another_k_starts_a_new_phase(tiny):
    from circuitpath.training.branch import branch_config

    parent = tiny("2:20:1e-2")
    same, continues = branch_config(parent, 10, parse_phases("2:10:1e-2"))
    assert continues and [ph.steps for ph in same.train.phases] == [20]
    other, continues = branch_config(parent, 10, parse_phases("2:10:1e-2:k=2"))
    assert not continues and [(ph.steps, ph.k) for ph in other.train.phases] == [(10, None), (10, 2)]


def test_sweep_takes_random_positions():
    from circuitpath.cli import build_parser
    from circuitpath.cli.flags import task_from_flags

    args = build_parser().parse_args(["sweep", "--positions", "random", "-T", "8"])
    assert task_from_flags(args) == TaskConfig(n_ctx=8, positions="random")
    assert task_from_flags(build_parser().parse_args(["sweep"])).positions == "first"


def test_report_headlines_name_the_truth():
    from circuitpath.paper.report.headlines import Headlines

    headlines = Headlines()
    headlines.run("paper").first_k_mass = 0.5
    headlines.run("random").first_k_mass = 0.25
    headlines.run("random").truth = "relevant positions"
    paper, random = headlines.lines()
    assert "on the first k 0.500" in paper and "on the relevant positions 0.250" in random
