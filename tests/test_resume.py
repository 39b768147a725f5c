"""Crashes lose nothing: kill -9 at random moments and resume to the same bits; Ctrl-C saves and exits 130."""

import io
import json
import random
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace

import pytest
import torch

from circuitpath import load_run, resume, train
from circuitpath.runs import saved_steps
from circuitpath.training import fused
from conftest import tiny_config

CLI = [sys.executable, "-m", "circuitpath.cli"]
# long enough to be killed mid-way: ~1-2 s of training, checkpoints every 100 steps
FLAGS = ["--phases", "2:1500:1e-2,4:1500:1e-2:16", "--n-ctx", "6", "--k", "3", "--n-train", "40",
         "--n-test", "50", "--d-model", "8", "--log-every", "50", "--checkpoint-every", "100",
         "--dense-checkpoints", "4", "--seed", "4"]


def assert_same_run(a, b):
    assert a.steps == b.steps
    assert a.metrics == b.metrics
    for step in a.steps:
        wa, wb = a.weights_at(step), b.weights_at(step)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), step


#: Seconds a subprocess may take: generous, so that a loaded machine slows the tests without failing them.
TIMEOUT = 600


def wait_for(predicate, timeout=TIMEOUT):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same command trained here, without a fresh interpreter: a run's bytes do not depend on its process."""
    from circuitpath.cli import main

    out = tmp_path_factory.mktemp("full") / "run"
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["train", "--out", str(out), *FLAGS]) == 0
    return load_run(out)


def test_kill_9_at_random_moments_then_resume_gives_identical_bits(tmp_path, uninterrupted):
    out = tmp_path / "run"
    rng = random.Random(7)
    process = subprocess.Popen([*CLI, "train", "--out", str(out), *FLAGS], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    kills = 0
    for attempt in range(3):
        wait_for(lambda: (out / "run.json").exists() or process.poll() is not None)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        assert load_run(out).status == "running"  # the last complete state is readable
        # the last resume, which nothing kills, runs here: it needs no interpreter of its own
        process = subprocess.Popen([*CLI, "train", "--resume", str(out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) if attempt < 2 else None
    if process is not None:
        assert process.wait(timeout=TIMEOUT) == 0
    else:
        from circuitpath.cli import main

        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            assert main(["train", "--resume", str(out)]) == 0
    assert kills >= 1
    run = load_run(out)
    assert run.status == "completed"
    assert_same_run(run, uninterrupted)


def _signals_at_their_defaults() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_marks_the_run_and_exits_130(tmp_path, uninterrupted, signum):
    """Ctrl-C, and SIGTERM as `kill PID` or a job scheduler sends it, stop training at a step with everything saved."""
    out = tmp_path / "run"
    # a terminal's Ctrl-C reaches a process whose SIGINT is at its default; a parent that ignores
    # SIGINT (as some test runners and libraries leave it) would pass that on, so reset it
    process = subprocess.Popen([*CLI, "train", "--out", str(out), *FLAGS], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_signals_at_their_defaults)
    # as early as the run has a checkpoint: the whole run is the window, so a loaded machine that
    # starves this process for a while cannot let the run finish first; stopped while signalled
    wait_for(lambda: len(saved_steps(out / "checkpoints")) > 0 or process.poll() is not None)
    process.send_signal(signal.SIGSTOP)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signum)
    process.send_signal(signal.SIGCONT)
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, err
    assert "resume with: circuitpath train --resume" in err
    run = load_run(out)
    assert run.status == "interrupted"
    last = saved_steps(out / "state")[-1]
    assert last in run.steps
    (resumed,) = resume([out], progress=False)
    assert resumed.status == "completed" and json.loads((out / "run.json").read_text())["resumed_from"] == last
    assert resumed.metrics == uninterrupted.metrics
    final = uninterrupted.steps[-1]
    assert all(torch.equal(resumed.weights_at(final)[k], v) for k, v in uninterrupted.weights_at(final).items())


def as_killed(path):
    """Mark a run as a crash leaves it: run.json still says running."""
    info = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**info, "status": "running"}))


@pytest.mark.parametrize("d_model", [8, 2])  # the torch engine, and the fused path of small models
def test_resume_mid_phase_in_process_equals_uninterrupted(tmp_path, d_model):
    config = tiny_config("2:40:1e-2,4:40:1e-2:8")
    config = replace(config, model=replace(config.model, d_model=d_model, d_mlp=4 * d_model))
    assert fused.takes_fused_path(config.model, torch.device("cpu")) == (d_model <= fused.FUSED_MAX_D)
    full = train(config, tmp_path / "full", progress=False)
    cut = train(config, tmp_path / "cut", progress=False)
    # a crash while writing the last state leaves the one before it (mid-phase, mid-Adam)
    assert saved_steps(cut.path / "state") == [70, 80]
    (cut.path / "state" / "step_0000080.safetensors").unlink()
    as_killed(cut.path)
    (resumed,) = resume(str(cut.path) if d_model == 2 else [cut.path], progress=False)  # one path, or a group's list
    assert_same_run(resumed, full)


def test_resume_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    config = tiny_config()
    full = train(config, tmp_path / "full", progress=False)
    cut = train(config, tmp_path / "cut", progress=False)
    for sub in ("checkpoints", "state"):
        for f in (cut.path / sub).iterdir():
            f.unlink()
    as_killed(cut.path)
    (resumed,) = resume([cut.path], progress=False)
    assert_same_run(resumed, full)


def snapshot(path):
    return {f.relative_to(path): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file() and f.name != ".lock"}


@pytest.mark.parametrize("victim", ["checkpoints/step_0000030.safetensors", "state/step_0000030.safetensors"])
def test_resume_refuses_a_corrupted_file_by_name_and_changes_nothing(tmp_path, victim, capsys):
    from circuitpath.cli import main

    run = train(tiny_config(), tmp_path / "run", progress=False)
    as_killed(run.path)
    target = run.path / victim
    raw = bytearray(target.read_bytes())
    raw[-3] ^= 0xFF
    target.write_bytes(bytes(raw))
    before = snapshot(run.path)
    assert main(["train", "--resume", str(run.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "step_0000030.safetensors is corrupted" in err and "\n" not in err
    assert snapshot(run.path) == before


def test_a_second_writer_fails_at_once(tmp_path, capsys):
    import os

    from circuitpath.cli import main
    from circuitpath.runs.storage import RunLock

    run = train(tiny_config(), tmp_path / "run", progress=False)
    as_killed(run.path)
    # held for as long as the test runs: waiting for it would hang. The lock is taken on an open file
    # (flock), so the second writer's own open of it is refused in this process as in any other
    lock = RunLock(run.path).acquire()
    try:
        status = main(["train", "--resume", str(run.path)])
    finally:
        lock.release()
    assert status == 2
    assert f"is being written by process {os.getpid()}" in capsys.readouterr().err
