"""The switch-step experiment: shared p = 2 prefixes, equal totals, rates with intervals, resumable."""

import json
import shutil

import pytest

from circuitpath import ModelConfig, TaskConfig, TrainConfig, load_run, train
from circuitpath.analysis.stats import Rate
from circuitpath.analysis.stats import wilson_interval
from circuitpath.errors import ConfigError, RunError
from circuitpath.sweep.switching import (
    SwitchSettings,
    branch_path,
    p2_path,
    resume_switch,
    switch_experiment,
    tabulate,
)
from test_branch import same_run


def tiny_settings(**changes) -> SwitchSettings:
    values = dict(seeds=(0, 1, 2), switch_steps=(0, 10, 30), total=40, p2_lr=1e-2, p4_lr=1e-2,
                  task=TaskConfig(n_ctx=6, k=3, n_train=40, n_test=50), model=ModelConfig(d_model=8, n_ctx=6),
                  train=TrainConfig(log_every=5, checkpoint_every=10, dense_checkpoints=4)) | changes
    return SwitchSettings(**values)


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 10), (21, 32), (32, 32), (5, 7)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        low, high = wilson_interval(k, n)
        assert (low, high) == (pytest.approx(expected.low, abs=1e-7), pytest.approx(expected.high, abs=1e-7))


def test_every_branch_has_the_total_and_equals_its_curriculum_from_scratch(tmp_path):
    settings = tiny_settings()
    result = switch_experiment(tmp_path / "sw", settings, progress=False)
    for switch in settings.switch_steps:
        for seed in settings.seeds:
            run = load_run(branch_path(tmp_path / "sw", switch, seed))
            assert run.config.train.total_steps == 40
            assert [ph.p for ph in run.config.train.phases] == ([2, 4] if switch else [4])
    # a branch at 10 is the curriculum 2:10 then 4:30 trained from scratch
    child = load_run(branch_path(tmp_path / "sw", 10, 1))
    same_run(child, train(child.config, tmp_path / "scratch", progress=False))
    from circuitpath.analysis.prediction import group_runs

    groups = group_runs(tmp_path / "sw")  # what `circuitpath predict` reads: the branches, not their parents
    assert sorted(groups) == ["switch_0", "switch_10", "switch_30"] and all(len(g) == 3 for g in groups.values())
    rows = {row.switch: row for row in result.rows}
    assert rows[0].p2_test_acc == [None] * 3
    p2 = load_run(p2_path(tmp_path / "sw", 2))
    assert rows[30].p2_test_acc[2] == [m for m in p2.metrics if m["step"] == 30][0]["test_acc"]
    for row in result.rows:
        assert row.rate().n == 3 and row.rate().k == sum(acc >= 0.99 for acc in row.final_test_acc)
        solved, unsolved = row.split()
        if row.switch == 0:  # p = 4 from scratch: no p = 2 phase to split by
            assert solved.n == unsolved.n == 0
        else:
            assert solved.n + unsolved.n == 3 and solved.k + unsolved.k == row.rate().k
    pooled = [line for line in result.lines() if line.startswith("all switch steps > 0 together")]
    solved, unsolved = (sum((row.split()[i] for row in result.rows), Rate(0, 0)) for i in (0, 1))
    assert solved.n + unsolved.n == 6  # 3 seeds at each of the switches 10 and 30
    assert pooled == [f"all switch steps > 0 together: {solved.k} of {solved.n} branches generalise when p = 2 was "
                      f"solved at the switch, {unsolved.k} of {unsolved.n} when it was not (a seed counts once per "
                      "switch step)"]


def test_a_crash_halfway_keeps_what_finished_and_resume_trains_the_rest(tmp_path):
    settings = tiny_settings()
    out = tmp_path / "sw"
    whole = switch_experiment(out, settings, progress=False)
    keep = out / "switch_0" / "seed_0" / "run.json"
    stamp = keep.stat().st_mtime_ns
    shutil.rmtree(out / "switch_30")  # as if the branches at 30 had never been made
    shutil.rmtree(out / "switch_10" / "seed_2" / "checkpoints")  # and a half-written one (no run.json left)
    (out / "switch_10" / "seed_2" / "run.json").unlink()
    resumed = resume_switch(out, progress=False)
    assert keep.stat().st_mtime_ns == stamp
    assert json.dumps(resumed.to_dict()) == json.dumps(whole.to_dict())


def test_bad_settings_and_outputs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="switch steps must lie in 0 .. total - 1 = 39, got 40"):
        tiny_settings(switch_steps=(0, 40))
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        tiny_settings(p2_lr=0.0)
    switch_experiment(tmp_path / "sw", tiny_settings(seeds=(0,), switch_steps=(0,)), progress=False)
    with pytest.raises(RunError, match="already holds a switch experiment"):
        switch_experiment(tmp_path / "sw", tiny_settings(), progress=False)
    with pytest.raises(RunError, match="is not a switch experiment"):
        tabulate(tmp_path)


def test_cli_prints_the_table_and_writes_json_and_figure(tmp_path, capsys):
    from circuitpath.cli import main

    flags = ["--seeds", "0-1", "--at", "0,20", "--total", "30", "--n-ctx", "6", "--k", "3", "--n-train", "40",
             "--n-test", "50", "--d-model", "8", "--checkpoint-every", "10", "--out", str(tmp_path / "sw")]
    assert main(["switch", *flags]) == 0
    assert "generalise | p2 solved" in capsys.readouterr().out
    table = json.loads((tmp_path / "sw" / "switch_table.json").read_text())
    assert [row["switch"] for row in table["rows"]] == [0, 20]
    assert all(row["generalise"]["n"] == 2 for row in table["rows"])
    assert "plotly" in (tmp_path / "sw" / "switch.html").read_text()
    assert main(["switch", "--resume", str(tmp_path / "sw")]) == 0
    assert json.loads((tmp_path / "sw" / "switch_table.json").read_text()) == table  # nothing left to train
