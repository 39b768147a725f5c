"""A run records the platform its bytes depend on; continuing it on another is refused unless asked for."""

import json
import os
import subprocess
import sys

import pytest
import torch

from circuitpath import load_run, platform, train
from circuitpath.cli import main
from circuitpath.errors import ConfigError, RunError
from circuitpath.runs import STATE_DIR, saved_steps, step_file
from circuitpath import resume
from conftest import tiny_config

CLI = [sys.executable, "-m", "circuitpath.cli"]


def interrupted_copy(tmp_path, **edit):
    """A completed tiny run, cut back to its second-to-last state and marked interrupted; run.json edited."""
    run = train(tiny_config("2:30:1e-2", checkpoint_every=10, dense_checkpoints=0), tmp_path / "run", progress=False)
    last = saved_steps(run.path / STATE_DIR)[-1]
    (run.path / STATE_DIR / step_file(last)).unlink()
    info = json.loads((run.path / "run.json").read_text())
    info.update(status="interrupted", **edit)
    info = {k: v for k, v in info.items() if v is not None}
    (run.path / "run.json").write_text(json.dumps(info))
    return run


def test_run_json_records_the_platform(trained_run):
    recorded = trained_run.info["platform"]
    assert recorded == {"torch": torch.__version__, "device": "cpu",
                        "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    assert platform.describe(recorded) == f"torch {torch.__version__}, cpu {recorded['cpu_capability']}"


def test_resume_on_the_same_platform_gives_the_uninterrupted_bytes(tmp_path):
    run = interrupted_copy(tmp_path)
    original = {step: run.weights_at(step) for step in run.steps}
    (done,) = resume([run.path], progress=False)
    assert done.status == "completed" and done.steps == sorted(original)
    assert all(torch.equal(done.weights_at(30)[k], original[30][k]) for k in original[30])


@pytest.mark.parametrize("record", [{"torch": "1.0.0", "device": "cpu", "cpu_capability": "AVX512"},
                                    {"cpu_capability": "NOT_THIS_ONE"}, None], ids=["torch", "capability", "none"])
def test_resume_on_another_platform_is_refused_in_one_line_and_changes_nothing(tmp_path, record, capsys):
    here = platform.current()
    written = None if record is None else {**here, **record}
    run = interrupted_copy(tmp_path, platform=written)
    before = {f: f.read_bytes() for f in sorted(run.path.rglob("*")) if f.is_file() and f.name != ".lock"}
    assert main(["train", "--resume", str(run.path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--allow-other-platform" in lines[0]
    assert platform.describe(written) in lines[0] and platform.describe(here) in lines[0]
    after = {f: f.read_bytes() for f in sorted(run.path.rglob("*")) if f.is_file() and f.name != ".lock"}
    assert after == before
    with pytest.raises(ConfigError):
        resume([run.path], progress=False)
    (done,) = resume([run.path], progress=False, allow_other_platform=True)
    assert done.status == "completed" and 30 in done.steps


def test_allow_other_platform_without_resume_is_refused(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "--allow-other-platform"]) == 2
    assert "--resume" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_branch_without_its_starting_state_is_refused_not_trained_from_scratch(tmp_path):
    run = interrupted_copy(tmp_path, branch={"parent": "elsewhere", "step": 20})
    for step in saved_steps(run.path / STATE_DIR):
        (run.path / STATE_DIR / step_file(step)).unlink()
    with pytest.raises(RunError, match="is a branch of elsewhere at step 20"):
        resume([run.path], progress=False)
    assert load_run(run.path).status == "interrupted"


def test_an_unknown_cpu_capability_is_reported_in_one_line(tmp_path):
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx9000")
    done = subprocess.run([*CLI, "train", "--out", str(tmp_path / "x"), "--p", "2", "--steps", "2", "--n-ctx", "6",
                           "--k", "3", "--n-train", "40", "--d-model", "8"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("circuitpath: ATEN_CPU_CAPABILITY")]
    assert len(ours) == 1 and "avx9000" in ours[0] and torch.backends.cpu.get_cpu_capability() in ours[0]
    assert load_run(tmp_path / "x").info["platform"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
