"""The Ray backend on a real local Ray instance (2 CPUs, no dashboard), started once for this module."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import redirect_stdout

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'): the Ray backend is not tested")

from circuitpath import ModelConfig, RunError, TaskConfig, load_run  # noqa: E402
from circuitpath.cli import main  # noqa: E402
from circuitpath.runs import saved_steps  # noqa: E402
from circuitpath.runs.storage import RunLock, write_json  # noqa: E402
from circuitpath.sweep import RayOptions, sweep  # noqa: E402
from process_group import ended_within, own_group  # noqa: E402

EXPERIMENTS = "a=4:30:1e-2;b=2:15:1e-3,4:15:1e-2"
FLAGS = ["--seeds", "0-4", "--experiments", EXPERIMENTS, "-T", "6", "--n-train", "60"]
RUNS = [(name, seed) for name in ("a", "b") for seed in range(5)]


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    # Ray's socket paths must stay under ~107 characters, which pytest's tmp_path can exceed
    temp = tempfile.mkdtemp(prefix="cp-ray-")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, object_store_memory=100 * 2**20,
             log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def cli(*args):
    """Exit status and printed table of `circuitpath ...` (the last line names where files went)."""
    with redirect_stdout(io.StringIO()) as printed:
        status = main(list(args))
    return status, printed.getvalue().splitlines()[:-1]


@pytest.fixture(scope="module")
def local_and_ray(tmp_path_factory):
    """The same 10 runs through both backends; Ray in chunks of 2 seeds, the local backend in chunks of 4."""
    base = tmp_path_factory.mktemp("sweeps")

    @ray.remote(num_cpus=1)
    def warm():
        import circuitpath.training.train  # noqa: F401

    # the two workers load the package (seconds) while the local sweep trains here; Ray reuses them
    warming = [warm.remote() for _ in range(2)]
    local = cli("sweep", "--out", str(base / "local"), *FLAGS)
    ray.get(warming)
    on_ray = cli("sweep", "--out", str(base / "ray"), *FLAGS, "--backend", "ray", "--chunk", "2")
    assert local[0] == 0 and on_ray[0] == 0
    return base, local[1], on_ray[1]


def assert_same_runs(path, other, runs=RUNS):
    for name, seed in runs:
        run, twin = load_run(path / name / f"seed_{seed}"), load_run(other / name / f"seed_{seed}")
        assert run.status == twin.status == "completed"
        assert run.metrics == twin.metrics, (name, seed)
        assert run.steps == twin.steps
        for step in run.steps:
            weights, twin_weights = run.weights_at(step), twin.weights_at(step)
            assert all(torch.equal(weights[k], twin_weights[k]) for k in weights), (name, seed, step)


def test_ray_prints_the_local_table_and_trains_the_same_bits(local_and_ray):
    base, local_table, ray_table = local_and_ray
    assert ray_table == local_table and len(ray_table) == 5  # header, rule, two experiments, first-phase line
    assert (base / "ray" / "summary.json").read_bytes() == (base / "local" / "summary.json").read_bytes()
    assert_same_runs(base / "ray", base / "local")


def test_ray_resume_trains_only_what_is_missing(local_and_ray, tmp_path, capsys, monkeypatch):
    base, local_table, _ = local_and_ray
    out = shutil.copytree(base / "ray", tmp_path / "sweep")
    shutil.rmtree(out / "a" / "seed_3")
    shutil.rmtree(out / "b" / "seed_0")
    (out / "summary.json").unlink()
    untouched = {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/run.json")}
    monkeypatch.chdir(tmp_path)  # a relative path reaches the workers, whose working directory is another
    status, table = cli("sweep", "--resume", "sweep", "--backend", "ray")
    assert status == 0 and table == local_table
    assert "2 unfinished runs to train" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    assert_same_runs(out, base / "local", [("a", 3), ("b", 0)])


def test_an_error_inside_a_task_ends_the_sweep_in_one_line(local_and_ray, tmp_path, capsys):
    base, _, _ = local_and_ray
    out = shutil.copytree(base / "ray", tmp_path / "sweep")
    busy = out / "a" / "seed_1"
    write_json(busy / "run.json", json.loads((busy / "run.json").read_text()) | {"status": "running"})
    lock = RunLock(busy).acquire()  # as if another process were still training it
    try:
        assert main(["sweep", "--resume", str(out), "--backend", "ray"]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"circuitpath: error: {busy} is being written by process {os.getpid()}; wait for it or stop it"


def test_a_task_whose_worker_is_killed_is_retried_and_resumes_its_runs(tmp_path):
    """Kill -9 the Ray worker mid-training: the retried task resumes both runs; with --keep-checkpoints ends."""
    task, model = TaskConfig(n_ctx=6, n_train=60), ModelConfig(n_ctx=6, d_model=8)
    experiments = {"long": "2:1500:1e-2,4:1500:1e-2"}
    out = tmp_path / "ray"
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=sweep(
        out, [0, 1], experiments, task=task, model=model, keep_checkpoints="ends", backend="ray",
        ray=RayOptions(retries=1), progress=False)))
    thread.start()
    lock_file = out / "long" / "seed_0" / RunLock.FILE
    deadline = time.monotonic() + 120
    while not (lock_file.exists() and saved_steps(lock_file.parent / "checkpoints")[-1:] >= [750]):
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    worker = int(lock_file.read_text().split()[-1])
    os.kill(worker, signal.SIGKILL)
    # the reference trains here while Ray starts a new worker and the retried task resumes
    reference = tmp_path / "local"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fast as a Ray worker on a busy machine; results do not depend on it
    try:
        local = sweep(reference, [0, 1], experiments, task=task, model=model, progress=False)
    finally:
        torch.set_num_threads(threads)
    thread.join(timeout=180)
    assert not thread.is_alive() and "result" in done
    assert local == done["result"]
    for seed in (0, 1):
        run, full = load_run(out / "long" / f"seed_{seed}"), load_run(reference / "long" / f"seed_{seed}")
        assert run.info["resumed_from"] >= 500 and run.steps == [0, 1500, 3000]  # from a saved state, not step 0
        assert run.metrics == full.metrics
        weights, full_weights = run.weights_at(3000), full.weights_at(3000)
        assert all(torch.equal(weights[k], full_weights[k]) for k in weights)


def test_sigterm_on_the_driver_ends_the_sweep_as_ctrl_c_does(tmp_path):
    """`kill PID` on a Ray sweep started from the command line: exit 130 with the line that says how to go on,
    and the local Ray instance it started is shut down, none of its processes left (its own process group)."""
    out = tmp_path / "ray"
    with own_group([sys.executable, "-c", "import sys; from circuitpath.cli import main; sys.exit(main())", "sweep",
                    "--out", str(out), "--backend", "ray", "--seeds", "0-1", "--experiments", "long=2:20000:1e-2",
                    "-T", "6", "--n-train", "60", "--log-every", "50", "--checkpoint-every", "50"],
                   stderr=subprocess.PIPE, text=True,
                   env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}) as command:  # its own instance
        lock_file = out / "long" / "seed_0" / RunLock.FILE
        deadline = time.monotonic() + 180
        while not (lock_file.exists() and saved_steps(lock_file.parent / "checkpoints")[-1:] >= [50]):
            assert time.monotonic() < deadline and command.poll() is None, "the sweep did not start training"
            time.sleep(0.1)
        command.terminate()
        stderr = command.communicate(timeout=120)[1]
        assert command.returncode == 130, stderr
        assert stderr.splitlines()[-1] == (f"circuitpath: interrupted; finish the sweep with: "
                                           f"circuitpath sweep --resume {out} --backend ray")
        assert ended_within(command.pid, 60), "a process of the sweep's local Ray instance outlived it by 60 s"


def test_a_task_refuses_an_output_path_its_node_does_not_see(tmp_path):
    from circuitpath.sweep.ray_backend import train_chunk_task

    with pytest.raises(RunError, match="is not visible on Ray node .*: --out must be on a file system that every"):
        train_chunk_task({}, "a", [0], str(tmp_path / "elsewhere"), "cpu")
    assert not (tmp_path / "elsewhere").exists()


def test_a_task_lost_after_its_retries_ends_in_one_line_that_says_how_to_go_on(tmp_path):
    from circuitpath.sweep.ray_backend import _failure

    error = _failure(ray.exceptions.WorkerCrashedError(), "a", [4, 5], tmp_path, retries=3)
    assert isinstance(error, RunError) and str(error) == (
        f"the task training a seeds 4..5 did not finish after 3 retries (WorkerCrashedError); "
        f"finish the sweep with: circuitpath sweep --resume {tmp_path} --backend ray")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--address", f"127.0.0.1:{free_port()}"], "cannot reach a Ray cluster at 127.0.0.1:"),
    (["--chunk", "12"], "--chunk 12 needs 3 CPUs in one task, but the largest Ray node has 2; use --chunk 8 or less"),
    pytest.param(["--device", "cuda"], "device 'cuda' was asked for but no node of the Ray cluster has a GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the local Ray instance has a GPU")),
])
def test_bad_ray_input_exits_2_with_one_line_before_anything_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "sw"
    assert main(["sweep", "--out", str(out), *FLAGS, "--backend", "ray", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not out.exists()
