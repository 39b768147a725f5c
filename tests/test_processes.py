"""Groups trained across worker processes give the same bytes as in this process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig
from circuitpath.config import parse_phases
from circuitpath.data import make_split
from circuitpath.errors import RunError
from circuitpath.runs import STATE_DIR, RunWriter, load_run, saved_steps, step_file
from circuitpath.runs.storage import RunLock
from circuitpath.training import processes
from circuitpath.training.train import resume_groups, train_many
from conftest import tiny_config

CPU = torch.device("cpu")


def paper(seed: int, steps: int) -> RunConfig:
    return RunConfig(task=TaskConfig(seed=seed), model=ModelConfig(seed=seed),
                     train=TrainConfig(phases=parse_phases(f"4:{steps}:1e-2")))


def test_processes_are_chosen_from_the_configs_for_long_torch_engine_work():
    assert processes.process_count([[paper(s, 10000) for s in range(8)]], CPU, workers=2) == 2
    assert processes.process_count([[paper(0, 10000)], [paper(1, 10000)]], CPU, workers=2) == 2  # two groups of one
    assert processes.process_count([[paper(0, 10000)]], CPU, workers=2) == 0  # one run: nothing to share
    assert processes.process_count([[paper(s, 10000) for s in range(8)]], CPU, workers=1) == 0
    assert processes.process_count([[paper(s, 20) for s in range(8)]], CPU, workers=2) == 0  # short: not worth a start
    small = [RunConfig(task=TaskConfig(seed=s), model=ModelConfig(d_model=2, d_mlp=32, seed=s),
                       train=TrainConfig(phases=parse_phases("2:64000:3e-3:32"))) for s in range(32)]
    assert processes.process_count([small], CPU, workers=2) == 0  # the fused path needs no process


def _files(run, sub):
    return {f.name: f.read_bytes() for f in sorted((run.path / sub).iterdir())}


def test_runs_trained_in_processes_are_the_bytes_of_runs_trained_here(tmp_path, monkeypatch):
    configs = [tiny_config("2:20:1e-2,4:20:1e-2:8", seed=s) for s in range(3)]
    here = train_many(configs, [tmp_path / f"here{s}" for s in range(3)], progress=False, workers=2)
    monkeypatch.setattr(processes, "MIN_WORK", 0)
    ended = []  # each worker's exit status: 0, not an abort at interpreter shutdown
    wait = processes._outcome
    monkeypatch.setattr(processes, "_outcome", lambda child: (wait(child), ended.append(child.returncode))[0])
    away = train_many(configs, [tmp_path / f"away{s}" for s in range(3)], progress=False, workers=2)
    assert ended == [0, 0]
    for a, b in zip(here, away):
        assert b.status == "completed" and "resumed_from" not in b.info
        assert a.metrics == b.metrics
        assert _files(a, "checkpoints") == _files(b, "checkpoints")


def test_resume_in_processes_reaches_the_uninterrupted_bytes_and_reports_errors(tmp_path, monkeypatch):
    """One start of the processes: a group of two runs resumes, then a later group's broken run fails in a worker."""
    configs = [tiny_config("2:30:1e-2", seed=s, checkpoint_every=10, dense_checkpoints=0) for s in range(3)]
    runs = train_many(configs, [tmp_path / f"r{s}" for s in range(3)], progress=False)
    final = [_files(run, "checkpoints") for run in runs[:2]]
    for run in runs[:2]:  # back to the state at step 20, marked interrupted
        (run.path / STATE_DIR / step_file(saved_steps(run.path / STATE_DIR)[-1])).unlink()
        info = json.loads((run.path / "run.json").read_text())
        (run.path / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    broken = runs[2].path  # a branch whose starting state is gone: refused inside its worker
    info = json.loads((broken / "run.json").read_text())
    (broken / "run.json").write_text(json.dumps({**info, "status": "interrupted", "branch": {"parent": "p", "step": 5}}))
    for step in saved_steps(broken / STATE_DIR):
        (broken / STATE_DIR / step_file(step)).unlink()
    monkeypatch.setattr(processes, "MIN_WORK", 0)
    # each worker resumes its share of the first group, then its share of the second: the first
    # worker's second share is the broken run
    with pytest.raises(RunError, match="is a branch of p at step 5"):
        resume_groups([[run.path for run in runs[:2]], [broken]], progress=False, workers=2)
    done = [load_run(run.path) for run in runs[:2]]
    assert [_files(run, "checkpoints") for run in done] == final
    assert all(run.status == "completed" and run.info["resumed_from"] == 20 for run in done)
    assert load_run(broken).status == "interrupted"


PARENT = """
import sys
from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig
from circuitpath.config import parse_phases
from circuitpath.training import processes
from circuitpath.training.train import train_many
processes.MIN_WORK = 0
configs = [RunConfig(task=TaskConfig(n_ctx=6, k=3, n_train=40, n_test=50, seed=s),
                     model=ModelConfig(d_model=8, n_tokens=4, n_ctx=6, seed=s),
                     train=TrainConfig(phases=parse_phases("2:1000000:1e-2"), checkpoint_every=200,
                                       dense_checkpoints=0))
           for s in range(2)]
train_many(configs, sys.argv[1:], progress=False, workers=2)
"""


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_workers_stop_with_everything_saved_when_their_parent_is_killed(tmp_path, sigint):
    """SIGKILL on the parent (no handler runs there) ends its workers' stdin: they stop as at Ctrl-C, status
    interrupted and the lock released, instead of training on for hours unwatched. Also where the parent was
    started with SIGINT ignored, as a shell script starts a job in its background, and its workers inherit that."""
    paths = [tmp_path / f"r{s}" for s in range(2)]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint == "ignored" else None
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *map(str, paths)], preexec_fn=ignore)
    try:
        deadline = time.monotonic() + 120
        while not all((p / "run.json").is_file() and RunLock(p).is_held()
                      and max(saved_steps(p / STATE_DIR), default=0) > 0 for p in paths):  # the workers train
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started training"
            time.sleep(0.2)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60
    try:
        while any(RunLock(p).is_held() for p in paths):
            assert time.monotonic() < deadline, "a worker kept training after its parent was killed"
            time.sleep(0.2)
    finally:  # a worker that did not stop would train for hours: its pid is in the lock it holds
        for path in paths:
            if RunLock(path).is_held():
                os.kill(int((path / RunLock.FILE).read_text().split()[-1]), signal.SIGKILL)
    for path in paths:
        run = load_run(path)
        assert run.status == "interrupted" and 0 < max(saved_steps(path / STATE_DIR)) < 1000000


def test_sigterm_on_the_parent_stops_its_workers_with_everything_saved_before_it_exits(tmp_path):
    """`kill PID` (or a job scheduler's stop) on the parent is passed on to its workers as Ctrl-C: the parent waits
    for them to save and stop, then ends on `Interrupted`."""
    paths = [tmp_path / f"r{s}" for s in range(2)]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *map(str, paths)], stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not all((p / "run.json").is_file() and max(saved_steps(p / STATE_DIR), default=0) > 0 for p in paths):
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started training"
            time.sleep(0.2)
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=120)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert "Interrupted" in err and not any(RunLock(p).is_held() for p in paths)  # the workers had ended
    for path in paths:
        assert load_run(path).status == "interrupted" and max(saved_steps(path / STATE_DIR)) in load_run(path).steps


def test_a_worker_not_told_to_watch_its_stdin_trains_with_stdin_at_its_end(tmp_path):
    """A parent of an earlier version starts workers with its own stdin (at the end, /dev/null, for a job left
    running): such a worker must train, not take the end of stdin for its parent's."""
    config = tiny_config("2:20:1e-2", checkpoint_every=10, dense_checkpoints=0)
    path = tmp_path / "r"
    splits = [make_split(config.task, phase.p, phase.k) for phase in config.train.phases]
    RunWriter.create(path, config, splits).close()
    order = {"shares": [[str(path)]], "note_resume": False, "allow_other_platform": False}
    done = subprocess.run([sys.executable, "-m", "circuitpath.training.worker", json.dumps(order)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout.strip().splitlines()[-1]) == {"ended": "done"}, done.stderr
    assert load_run(path).status == "completed"


def test_into_a_log_the_watch_prints_progress_lines_where_a_terminal_gets_a_bar(tmp_path, monkeypatch, capsys):
    """pytest's captured stderr is no terminal, as a log file is not: tqdm draws nothing, so lines say how far."""
    monkeypatch.setattr(processes, "MIN_WORK", 0)
    monkeypatch.setattr(processes, "LOG_EVERY", 0.0)  # a line at every look at the checkpoints
    configs = [tiny_config("4:400:1e-2", seed=s) for s in range(2)]
    train_many(configs, [tmp_path / f"run{s}" for s in range(2)], progress=True, workers=2)
    lines = [line for line in capsys.readouterr().err.splitlines() if "run-steps done" in line]
    assert len(lines) >= 2 and all(line.split(" of ")[1].startswith("800 run-steps") for line in lines)
    saved = [int(line.split(" of ")[0].replace(" ", "")) for line in lines]
    assert saved == sorted(saved) and saved[-1] == 800  # the last line, once the workers end: everything


def test_a_progress_line_says_what_is_saved_and_how_long_the_rest_takes_at_this_command_s_rate():
    assert processes.progress_line(2250, 816000, 1500, 600) == (
        "2 250 of 816 000 run-steps done (0.3%); 1 500 in 10 min here, about 90.4 h left at that rate")
    assert processes.progress_line(400, 800, 0, 30).endswith("0 in 0 min here, no rate yet (none done by this command)")
    assert "about 20 min left" in processes.progress_line(500, 1000, 250, 600)  # 500 left at 25 a minute
