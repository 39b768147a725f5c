"""branch, switch, predict and llc on the command line: sweeps branched at once, and every bad input
refused in one line with exit status 2 before anything is written."""

from pathlib import Path

import pytest

from circuitpath import load_run, train, train_many
from circuitpath.cli import main
from conftest import tiny_config

TINY_SWITCH = ["--n-ctx", "6", "--k", "3", "--n-train", "40", "--n-test", "50", "--d-model", "8",
               "--checkpoint-every", "10"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two experiments as `circuitpath sweep` lays them out; seed 5 is saved at step 15, not at 10."""
    root = tmp_path_factory.mktemp("cli") / "sweep"
    train_many([tiny_config("2:20:1e-2", seed=s) for s in range(2)],
               [root / "curriculum" / f"seed_{s}" for s in range(2)], progress=False)
    train(tiny_config("2:15:1e-2", seed=5, checkpoint_every=15), root / "short" / "seed_5", progress=False)
    return root


def tree(path):
    """Every file under `path` with its bytes: what a refused command must leave as it was."""
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def refused(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as done:  # usage mistakes, from argparse
        code = done.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("circuitpath: error:") and "\n" not in err and message in err, err


def test_branching_every_run_of_a_sweep_keeps_its_layout_and_its_parents_records(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["branch", str(sweep / "curriculum"), "--at", "10", "--phases", "4:10:1e-2", "--out", str(out)]) == 0
    assert "branches saved under" in capsys.readouterr().out
    for seed in range(2):
        parent, child = load_run(sweep / "curriculum" / f"seed_{seed}"), load_run(out / f"seed_{seed}")
        assert child.status == "completed" and child.config.train.total_steps == 20
        assert child.info["branch"]["step"] == 10 and child.info["branch"]["parent"] == str(parent.path.resolve())
        upto = parent.phase_at(10)  # the record of step 10 in the phase it ends; the new phase logs its own start
        assert [m for m in child.metrics if (m["step"], m["phase"]) <= (10, upto)] == \
            [m for m in parent.metrics if (m["step"], m["phase"]) <= (10, upto)]
        assert any(m["step"] == 10 and m["phase"] == upto for m in child.metrics)
        for step in (s for s in parent.steps if s <= 10):
            assert child.checkpoint_path(step).read_bytes() == parent.checkpoint_path(step).read_bytes()


@pytest.mark.parametrize("at, spec, message", [
    ("11", "4:10:1e-2", "has no checkpoint at step 11; nearest saved, nearest first: 10, 5, 2"),
    ("-1", "4:10:1e-2", "has no checkpoint at step -1"),
    ("10", "4:ten:1e-2", "a phase is p:steps:lr[:batch_size][:key=value...] with numbers, got '4:ten:1e-2'"),
    ("10", "4:10", "a phase is p:steps:lr[:batch_size][:key=value...], got '4:10'"),
    ("10", "", "--phases is given an empty value; leave it out for its default"),
    ("10", "4:10:1e-2,", "an empty phase in '4:10:1e-2,': phases are separated by single commas"),
    ("10", "9:10:1e-2", "phase p = 9 exceeds the model's n_tokens = 4"),
    ("10", "4:10:0", "lr must be a positive number, got 0.0"),
    ("ten", "4:10:1e-2", "argument --at: invalid int value: 'ten'"),
])
def test_branch_refuses_a_missing_step_or_a_bad_phase_spec_and_writes_nothing(sweep, tmp_path, capsys, at, spec,
                                                                                message):
    before = tree(sweep)
    refused(capsys, ["branch", str(sweep / "curriculum" / "seed_0"), "--at", at, "--phases", spec,
                     "--out", str(tmp_path / "b")], message)
    assert not (tmp_path / "b").exists() and tree(sweep) == before


def test_one_run_of_a_sweep_without_the_step_stops_every_branch(sweep, tmp_path, capsys):
    refused(capsys, ["branch", str(sweep), "--at", "10", "--phases", "4:5:1e-2", "--out", str(tmp_path / "b")],
            "short/seed_5 has no checkpoint at step 10; nearest saved, nearest first: 6, 15, 2")
    assert not (tmp_path / "b").exists()


def test_branch_refuses_an_existing_output_without_force_and_leaves_it_as_it_was(sweep, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["branch", str(sweep / "curriculum" / "seed_0"), "--at", "10", "--phases", "4:5:1e-2",
                 "--out", str(out / "seed_0")]) == 0
    capsys.readouterr()
    before = tree(out)
    # the whole experiment into `out`: seed_0 exists, so seed_1 must not be made either
    refused(capsys, ["branch", str(sweep / "curriculum"), "--at", "10", "--phases", "4:5:1e-2", "--out", str(out)],
            "seed_0 already holds a run; pass --force to replace it")
    assert tree(out) == before and not (out / "seed_1").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    refused(capsys, ["branch", str(sweep / "curriculum" / "seed_0"), "--at", "10", "--phases", "4:5:1e-2",
                     "--out", str(tmp_path / "notes"), "--force"], "is not empty and is not a run; refusing to replace it")
    assert tree(tmp_path / "notes") == {Path("a.txt"): b"mine"}
    refused(capsys, ["branch", str(tmp_path / "nowhere"), "--at", "10", "--phases", "4:5:1e-2",
                     "--out", str(tmp_path / "c")], "nowhere is neither a run nor a directory of runs")


def test_predict_refuses_a_sweep_too_small_to_cross_validate_and_writes_nothing(sweep, capsys):
    before = tree(sweep)
    refused(capsys, ["predict", str(sweep / "curriculum"), "--repeats", "2", "--n", "16"],
            "no group of runs in")
    refused(capsys, ["predict", str(sweep / "curriculum")], "0 of 2 runs generalise; each class needs at least 2")
    refused(capsys, ["predict", str(sweep), "--at", "0.1,x"], "fractions are comma-separated numbers in (0, 1]")
    refused(capsys, ["predict", str(sweep), "--at", "0,0.5"], "fractions must lie in (0, 1], got '0,0.5'")
    refused(capsys, ["predict", str(sweep), "--folds", "1"], "folds >= 2, got 20 and 1")
    assert tree(sweep) == before  # no prediction.json, no prediction.html


def test_switch_refuses_bad_steps_and_an_existing_experiment_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sw"
    for argv, message in [
        (["--at", "0,x"], "switch steps are comma-separated integers, got '0,x'"),
        (["--at", "0,30", "--total", "30"], "switch steps must lie in 0 .. total - 1 = 29, got 30"),
        (["--at", "0", "--total", "0"], "the total number of steps must be at least 1, got 0"),
        (["--seeds", "x"], "seeds are N, N-M or a comma-separated list of them, got 'x'"),
        (["--p2-lr", "0"], "lr must be a positive number, got 0.0"),
    ]:
        refused(capsys, ["switch", "--out", str(out), *TINY_SWITCH, *argv], message)
        assert not out.exists()
    refused(capsys, ["switch", "--resume", str(tmp_path)], "is not a switch experiment (no switch.json)")
    assert main(["switch", "--seeds", "0", "--at", "0", "--total", "10", "--out", str(out), *TINY_SWITCH]) == 0
    capsys.readouterr()
    before = tree(out)
    refused(capsys, ["switch", "--seeds", "0-1", "--at", "0,5", "--total", "10", "--out", str(out), *TINY_SWITCH],
            "already holds a switch experiment; pass --force to replace it, or --resume to finish it")
    assert tree(out) == before


def test_llc_refuses_a_missing_step_and_bad_settings_and_writes_nothing(sweep, capsys):
    run = sweep / "curriculum" / "seed_0"
    for argv, message in [
        (["--steps", "11"], "step 11 was not saved in"),
        (["--steps", "a"], "a step is a number or a range like 100-500, got 'a'"),
        (["--steps", "11-12"], "no checkpoint of"),
        (["--chains", "0"], "argument --chains: must be >= 1, got 0"),
        (["--sgld-lr", "-1"], "argument --sgld-lr: must be > 0, got -1"),
        (["--localization", "inf"], "argument --localization: takes a finite number, got 'inf'"),
        (["--batch-size", "41"], "batch_size must be <= the training set's 40 sequences, got 41"),
    ]:
        refused(capsys, ["llc", str(run), *argv], message)
        assert not (run / "analysis").exists()
