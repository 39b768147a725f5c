"""The examples run on a saved run and answer the question they ask."""

import importlib
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    loaded = []

    def load(name):
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


def test_patch_positions_tells_summed_positions_from_ignored_ones(example, trained_run, capsys):
    example("patch_positions").main(str(trained_run.path))
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("v")]
    assert len(rows) == 6 and rows[0].startswith("v0 (summed)")
    assert all("of the way back to clean" in row or "no answer flips" in row for row in rows)


@pytest.mark.parametrize("name, expected", [
    ("ablate_positions", "first k (0-2)"),
    ("draw_circuit", "kept:"),
    ("probe_checkpoint", "attention mass on the 3 summed positions [0, 1, 2]:\n        x0"),
])
def test_examples_run_on_a_given_run(example, trained_run, capsys, name, expected):
    example(name).main(str(trained_run.path))
    assert expected in capsys.readouterr().out


def test_probe_checkpoint_reads_each_layer_and_head_of_a_standard_transformer(example, tmp_path, capsys):
    from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases, train

    config = RunConfig(task=TaskConfig(n_ctx=6, k=3, n_train=40, n_test=40),
                       model=ModelConfig(arch="transformer", d_model=8, n_ctx=6, n_layers=2, n_heads=2),
                       train=TrainConfig(phases=parse_phases("4:10:1e-2"), log_every=5, checkpoint_every=5))
    run = train(config, tmp_path / "transformer", progress=False)
    example("probe_checkpoint").main(str(run.path))
    lines = capsys.readouterr().out.splitlines()
    assert "of the readout position (cls)" in lines[1]
    assert lines[2].split() == ["x0", "x1", "x2", "x3", "x4", "x5", "cls", "mass"]
    rows = [line.split() for line in lines[3:]]
    assert [row[0] for row in rows] == ["L0H0", "L0H1", "L1H0", "L1H1"]
    for row in rows:  # each row is one head's attention: it sums to 1, and the mass is its first three
        weights = [float(a) for a in row[1:-1]]
        assert abs(sum(weights) - 1) < 0.04 and abs(sum(weights[:3]) - float(row[-1])) < 0.02


def test_the_demo_run_is_short():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from _demo import DEMO
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop("_demo", None)
    assert DEMO.train.total_steps <= 500 and DEMO.task.n_ctx == 8


# ---- bad paths: one line, exit status 2, never a traceback ---------------------------------------
NAMES = ["ablate_positions", "discover_circuit", "draw_circuit", "patch_positions", "probe_checkpoint"]


@pytest.fixture(scope="module")
def bad_paths(tmp_path_factory):
    """An experiment directory of seed_N runs, a missing one, a run with its last checkpoint cut, and one with none."""
    import shutil

    from circuitpath import train
    from conftest import tiny_config

    root = tmp_path_factory.mktemp("bad")
    run = train(tiny_config("4:20:1e-2"), root / "curriculum" / "seed_0", progress=False)
    shutil.copytree(run.path, root / "curriculum" / "seed_1")
    shutil.copytree(run.path, root / "cut")
    last = root / "cut" / "checkpoints" / "step_0000020.safetensors"
    last.write_bytes(last.read_bytes()[:100])
    shutil.copytree(run.path, root / "empty")
    shutil.rmtree(root / "empty" / "checkpoints")
    return {
        "experiment": (root / "curriculum", "holds runs seed_0, seed_1, not a run: pass one of them, e.g. "),
        "missing": (root / "nowhere", "nowhere is not a run directory"),
        "cut checkpoint": (root / "cut", "step_0000020.safetensors is truncated or corrupted"),
        "no checkpoint": (root / "empty", "has no checkpoint"),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["experiment", "missing", "cut checkpoint", "no checkpoint"])
def test_an_example_given_a_bad_run_ends_in_one_line(example, bad_paths, monkeypatch, capsys, name, case):
    path, message = bad_paths[case]
    module = example(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", str(path)])
    with pytest.raises(SystemExit) as done:
        module.command_line(module.main)
    lines = [line for line in capsys.readouterr().err.splitlines() if line and not line.startswith("discover ")]
    assert done.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"{name}.py: error: ") and message in lines[0], lines


def test_probe_checkpoint_on_an_experiment_directory_names_its_runs(bad_paths):
    import subprocess

    path, _ = bad_paths["experiment"]
    done = subprocess.run([sys.executable, str(EXAMPLES / "probe_checkpoint.py"), str(path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"probe_checkpoint.py: error: {path} holds runs seed_0, seed_1, not a run: pass one of "
                           f"them, e.g. {path / 'seed_0'}\n")
