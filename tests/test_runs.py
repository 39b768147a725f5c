import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from circuitpath import CheckpointError, InputError, RunError, load_run, train
from circuitpath.runs import RunWriter
from circuitpath.runs.storage import RunLock
from conftest import tiny_config


def test_checkpoint_alone_rebuilds_the_model(trained_run):
    path = trained_run.path / "checkpoints" / "step_0000040.safetensors"
    tensors = load_file(path)
    assert set(tensors) == {"W_E", "W_pos", "W_Q", "W_V", "W_in", "b_in", "W_out", "b_out"}
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["step"] == "40" and meta["phase"] == "1"
    from circuitpath import CrossAttentionTransformer, ModelConfig

    model = CrossAttentionTransformer(ModelConfig(**json.loads(meta["model"])), tensors)
    x = trained_run.data(1).x_test
    torch.testing.assert_close(model(x), trained_run.model_at(40)(x))


def test_no_pickle_anywhere(trained_run):
    for file in trained_run.path.rglob("*"):
        if file.is_file():
            assert file.suffix in {".json", ".jsonl", ".safetensors", ""}, file
            assert b"\x80\x04\x95" not in file.read_bytes()[:3]


def test_missing_step_lists_the_nearest_saved(trained_run):
    with pytest.raises(CheckpointError, match="step 13 was not saved .*nearest saved, nearest first: 10, 20, 5$"):
        trained_run.model_at(13)


def _listed(message: str) -> list[int]:
    return [int(s) for s in message.rsplit("nearest first: ", 1)[1].split(", ")]


@pytest.mark.parametrize("step", [-5, 0, 3, 7, 13, 14, 15, 26, 37, 1000])
def test_every_nearest_list_is_the_nearest_saved_steps_nearest_first(trained_run, tmp_path, step):
    from circuitpath import parse_phases
    from circuitpath.training.branch import BranchError, plan_branch

    steps = trained_run.steps
    if step in steps:
        return
    messages = []
    for refuse, error in ((lambda: trained_run.checkpoint_path(step), CheckpointError),
                          (lambda: plan_branch(trained_run, step, parse_phases("4:5:1e-2"), tmp_path / "b"), BranchError)):
        with pytest.raises(error) as caught:
            refuse()
        messages.append(str(caught.value))
    for message in messages:
        listed = _listed(message)
        distances = [abs(s - step) for s in listed]
        assert distances == sorted(distances), message
        assert len(listed) == 3 and set(listed) <= set(steps)
        assert max(distances) <= min(abs(s - step) for s in steps if s not in listed), message


@pytest.mark.parametrize("call, says", [
    (lambda run: run.model_at("30"), "a step is a whole number of steps, got '30'"),
    (lambda run: run.model_at(30.0), "a step is a whole number of steps, got 30.0"),
    (lambda run: run.weights_at(True), "got True"),
    (lambda run: run.data("1"), "phase is an index, 0..1 or negative from the end, got '1'"),  # two phases
    (lambda run: load_run(5), "a run is opened from its directory's path, got 5"),
])
def test_a_step_phase_or_path_of_the_wrong_type_is_named(trained_run, call, says):
    with pytest.raises(InputError, match=re.escape(says)):
        call(trained_run)
    assert trained_run.checkpoint_path(np.int64(trained_run.steps[-1])).is_file()  # numpy's integers are steps


def test_not_a_run(tmp_path):
    with pytest.raises(RunError, match="is not a run directory"):
        load_run(tmp_path)
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_a_run_is_never_silently_overwritten(tmp_path, trained_run):
    before = (trained_run.path / "run.json").read_text()
    with pytest.raises(RunError, match="already holds a run; pass --force"):
        train(tiny_config(seed=9), trained_run.path, progress=False)
    assert (trained_run.path / "run.json").read_text() == before
    replaced = train(tiny_config(seed=9), trained_run.path, force=True, progress=False)
    assert replaced.config.model.seed == 9


def test_force_never_deletes_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(RunError, match="is not a run; refusing"):
        train(tiny_config(), tmp_path, force=True, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_one_writer_per_run(trained_run):
    lock = RunLock(trained_run.path).acquire()
    try:
        with pytest.raises(RunError, match="is being written by process"):
            RunWriter.reopen(load_run(trained_run.path))
        with pytest.raises(RunError, match="is being written by"):
            train(tiny_config(), trained_run.path, force=True, progress=False)
    finally:
        lock.release()
    assert load_run(trained_run.path).steps


def test_checkpoint_that_does_not_match_its_run(trained_run, tmp_path):
    other = train(tiny_config(n_ctx=7), tmp_path / "other", progress=False)
    target = trained_run.path / "checkpoints" / "step_0000040.safetensors"
    target.write_bytes((other.path / "checkpoints" / "step_0000030.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="step_0000040.safetensors does not match run.json: weight W_pos"):
        trained_run.model_at(40)


def test_truncated_checkpoint_is_refused_with_its_name(trained_run):
    target = trained_run.path / "checkpoints" / "step_0000020.safetensors"
    target.write_bytes(target.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="step_0000020.safetensors is (truncated|corrupted)"):
        trained_run.model_at(20)


def test_a_run_saved_before_the_residual_option_loads_as_the_equation(trained_run):
    info = json.loads((trained_run.path / "run.json").read_text())
    assert info["config"]["model"]["residual"] == "attn_out"  # what new runs record
    del info["config"]["model"]["residual"]
    (trained_run.path / "run.json").write_text(json.dumps(info))
    old = load_run(trained_run.path)
    assert old.config.model.residual == "normalized"
    assert old.model_at().cfg.residual == "normalized"


def test_a_file_is_checked_from_its_raw_bytes_as_loading_checks_it(tmp_path):
    from circuitpath.errors import CheckpointError
    from circuitpath.runs.storage import load_tensors, save_tensors, verify_tensors

    path = tmp_path / "t.safetensors"
    save_tensors(path, {"w": torch.randn(3, 4), "i": torch.arange(5), "e": torch.zeros(0)}, {"step": 3})
    verify_tensors(path)
    load_tensors(path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1  # one bit of the last tensor's data
    path.write_bytes(bytes(raw))
    for check in (verify_tensors, load_tensors):
        with pytest.raises(CheckpointError, match="checksum"):
            check(path)
    path.write_bytes(bytes(raw[:-10]))
    for check in (verify_tensors, load_tensors):
        with pytest.raises(CheckpointError, match="truncated or corrupted"):
            check(path)


def test_the_analyses_take_a_run_or_its_directory(trained_run):
    from circuitpath.analysis.barrier import run_barrier
    from circuitpath.analysis.circuit import circuit_at

    assert circuit_at(str(trained_run.path), n=32).effects == circuit_at(trained_run, n=32).effects
    assert run_barrier(trained_run.path, str(trained_run.path)).height == run_barrier(trained_run, trained_run).height
