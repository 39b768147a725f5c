"""Branches equal runs trained from scratch with the concatenated phases, bit for bit."""

import json
import sys

import pytest

from circuitpath import parse_phases, train, train_many
from circuitpath.runs import STATE_DIR, saved_steps
from circuitpath.training.branch import BranchError, branch, branch_many, plan_branch
from conftest import tiny_config


def same_run(a, b) -> None:
    """Same checkpoints (bytes) and metric lines."""
    assert a.steps == b.steps
    assert a.metrics == b.metrics
    for step in a.steps:
        assert a.checkpoint_path(step).read_bytes() == b.checkpoint_path(step).read_bytes(), step


@pytest.mark.parametrize("parent_phases, at, new, expected", [
    # a new phase mid-phase (full batch to mini-batch)
    ("2:30:1e-2", 10, "4:20:3e-3:8", "2:10:1e-2,4:20:3e-3:8"),
    # a new phase at a phase boundary (mini-batch to full batch)
    ("2:20:1e-2:8,4:20:1e-2", 20, "4:15:3e-3", "2:20:1e-2:8,4:15:3e-3"),
    # continuing a finished run's last mini-batch phase: the kept Adam state and the epoch order carry on
    ("2:20:1e-2,4:30:1e-2:8", 50, "4:20:1e-2:8", "2:20:1e-2,4:50:1e-2:8"),
    # continuing mid-phase, where the state was not kept: replayed from the phase's start
    ("2:20:1e-2,4:30:1e-2:8", 30, "4:25:1e-2:8", "2:20:1e-2,4:35:1e-2:8"),
    # continuing the first phase mid-way: replayed from step 0
    ("2:30:1e-2:8", 20, "2:5:1e-2:8,4:10:1e-2", "2:25:1e-2:8,4:10:1e-2"),
    # step 0: a fresh run of the new phases from the same initial weights
    ("2:30:1e-2", 0, "4:20:1e-2", "4:20:1e-2"),
])
def test_a_branch_equals_the_concatenated_run_trained_from_scratch(tmp_path, parent_phases, at, new, expected):
    parent = train(tiny_config(parent_phases, seed=3), tmp_path / "parent", progress=False)
    child = branch(parent, at, parse_phases(new), tmp_path / "branch", progress=False)
    assert [(ph.p, ph.steps, ph.lr, ph.batch_size) for ph in child.config.train.phases] == \
        [(ph.p, ph.steps, ph.lr, ph.batch_size) for ph in parse_phases(expected)]
    scratch = train(child.config, tmp_path / "scratch", progress=False)
    same_run(child, scratch)
    assert child.status == "completed"
    info = child.info["branch"]
    assert info["step"] == at and info["parent"] == str(parent.path.resolve())
    assert "resumed_from" not in child.info
    assert info["parent_phases"] == [ph.to_dict() for ph in parent.config.train.phases]
    for step in (s for s in parent.steps if s <= at):  # the parent's records up to the branch step, unchanged
        assert child.checkpoint_path(step).read_bytes() == parent.checkpoint_path(step).read_bytes()
    if at > 0:  # up to and including the record of `at` in the parent's phase there (a new phase logs its own start)
        upto = (at, parent.phase_at(at))
        kept = [m for m in parent.metrics if (m["step"], m["phase"]) <= upto]
        assert kept[-1]["step"] == at and [m for m in child.metrics if (m["step"], m["phase"]) <= upto] == kept


def test_a_continuing_branch_knows_it_replays_or_reuses_the_state(tmp_path):
    parent = train(tiny_config("2:20:1e-2,4:30:1e-2:8"), tmp_path / "parent", progress=False)
    assert saved_steps(parent.path / STATE_DIR) == [40, 50]
    at_end = plan_branch(parent, 50, parse_phases("4:5:1e-2:8"), tmp_path / "a")
    mid = plan_branch(parent, 30, parse_phases("4:5:1e-2:8"), tmp_path / "b")
    fresh = plan_branch(parent, 30, parse_phases("4:5:1e-2:8"), tmp_path / "c", new_phase=True)
    assert (at_end.continues, at_end.restart) == (True, 50)
    assert (mid.continues, mid.restart) == (True, 20)
    assert (fresh.continues, fresh.restart) == (False, 30)
    assert len(fresh.config.train.phases) == 3


def test_many_branches_train_batched_and_equal_their_branches_alone(tmp_path):
    configs = [tiny_config("2:20:1e-2", seed=s) for s in range(5)]
    parents = train_many(configs, [tmp_path / f"p{s}" for s in range(5)], progress=False)
    plans = [plan_branch(p, 10, parse_phases("4:15:1e-2:8"), tmp_path / "b" / p.path.name) for p in parents]
    group = branch_many(plans, progress=False)
    alone = branch(parents[3], 10, parse_phases("4:15:1e-2:8"), tmp_path / "alone", progress=False)
    same_run(group[3], alone)
    assert len({json.dumps(r.metrics[-1]) for r in group}) == 5  # each run its own


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    parent = train(tiny_config("2:30:1e-2"), tmp_path / "parent", progress=False)
    with pytest.raises(BranchError, match="no checkpoint at step 11; nearest saved, nearest first: 10, 5, 2"):
        plan_branch(parent, 11, parse_phases("4:5:1e-2"), tmp_path / "x")
    with pytest.raises(BranchError, match="phase p = 5 exceeds the model's n_tokens"):
        plan_branch(parent, 10, parse_phases("5:5:1e-2"), tmp_path / "x")
    with pytest.raises(BranchError, match="overlaps its parent"):
        branch(parent, 10, parse_phases("4:5:1e-2"), tmp_path / "parent" / "inside", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "parent" / "inside").exists()
    branch(parent, 10, parse_phases("4:5:1e-2"), tmp_path / "b", progress=False)
    before = (tmp_path / "b" / "run.json").read_bytes()
    with pytest.raises(Exception, match="already holds a run; pass --force"):
        branch(parent, 20, parse_phases("4:5:1e-2"), tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "run.json").read_bytes() == before


def test_a_killed_branch_resumes_to_the_same_bits(tmp_path):
    from circuitpath import resume
    from circuitpath.training.branch import _create

    parent = train(tiny_config("2:20:1e-2"), tmp_path / "parent", progress=False)
    plan = plan_branch(parent, 10, parse_phases("4:20:1e-2:8"), tmp_path / "branch")
    _create(plan, force=False)  # created and never trained: as if killed before its first new checkpoint
    resumed = resume([tmp_path / "branch"], progress=False)[0]
    same_run(resumed, branch(parent, 10, parse_phases("4:20:1e-2:8"), tmp_path / "whole", progress=False))


def test_branch_help_explains_with_examples(capsys):
    from circuitpath.cli import main

    with pytest.raises(SystemExit):
        main(["branch", "--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "--new-phase" in help_text and "--force" in help_text


def test_the_branch_benchmark_runs_at_a_small_size(monkeypatch, capsys):
    """Run as `python benchmarks/bench_branch.py --small --rounds 1` runs it, in this process: its folder
    first on the path, the arguments in sys.argv, the module as __main__."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_branch.py"
    monkeypatch.syspath_prepend(str(script.parent))
    monkeypatch.setattr(sys, "argv", [str(script), "--small", "--rounds", "1"])
    monkeypatch.delitem(sys.modules, "common", raising=False)  # the benchmarks' helpers, loaded from there
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.modules.pop("common", None)
    out = capsys.readouterr().out
    assert "ms per run-step" in out and "branches / fresh" in out
