"""Property tests: random configs train or fail with ConfigError; corrupted files never load wrong data."""

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from circuitpath import CheckpointError, ConfigError, RunConfig, train
from circuitpath.runs.storage import load_tensors, save_tensors

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

FIELDS = ["n_ctx", "n_tokens", "p", "steps", "lr", "batch_size", "n_phases", "k", "n_train", "seed",
          "d_model", "model_n_ctx", "log_every", "checkpoint_every"]


@st.composite
def config(draw):
    """A config with at most one bad field (none in about half of the examples)."""
    broken = draw(st.one_of(st.none(), st.sampled_from(FIELDS)))

    def value(name, good, bad):
        return draw(bad if broken == name else good)

    n_ctx = value("n_ctx", st.integers(3, 6), st.integers(-1, 2))
    n_tokens = value("n_tokens", st.integers(2, 5), st.integers(0, 1))
    phases = [
        {
            "p": value("p", st.integers(2, max(2, n_tokens)), st.integers(6, 9)),
            "steps": value("steps", st.integers(1, 4), st.integers(-1, 0)),
            "lr": value("lr", st.floats(1e-4, 1e-1), st.sampled_from([0.0, -1.0, float("inf"), float("nan")])),
            "batch_size": value("batch_size", st.one_of(st.none(), st.integers(1, 4)), st.integers(-1, 0)),
        }
        for _ in range(value("n_phases", st.integers(1, 2), st.just(0)))
    ]
    return {
        "task": {"n_ctx": n_ctx, "k": value("k", st.integers(1, 3), st.integers(7, 9)),
                 "n_train": value("n_train", st.integers(4, 7), st.integers(10_000, 20_000)),
                 "n_test": draw(st.integers(1, 20)), "seed": value("seed", st.integers(0, 3), st.just(-1))},
        "model": {"d_model": value("d_model", st.integers(2, 6), st.integers(-1, 0)), "n_tokens": n_tokens,
                  "n_ctx": value("model_n_ctx", st.just(n_ctx), st.integers(7, 9)), "tied": draw(st.booleans())},
        "train": {"phases": phases, "log_every": value("log_every", st.integers(1, 3), st.just(0)),
                  "checkpoint_every": value("checkpoint_every", st.integers(1, 3), st.just(0))},
    }


@SETTINGS
@given(data=config())
def test_random_configs_train_or_fail_with_the_documented_error(tmp_path_factory, data):
    try:
        cfg = RunConfig.from_dict(data)
    except ConfigError as error:
        assert str(error) and "\n" not in str(error)
        event("refused")
        return
    event("trained")
    run = train(cfg, tmp_path_factory.mktemp("run") / "r", progress=False)
    assert run.status == "completed" and run.steps[-1] == cfg.train.total_steps


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "step_0000010.safetensors"
    tensors = {"W_E": torch.randn(4, 8), "W_Q": torch.randn(8), "b_in": torch.randn(32)}
    save_tensors(path, tensors, {"step": 10, "phase": 0})
    return path, load_tensors(path)


@SETTINGS
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4))
def test_random_byte_corruption_is_detected_never_silently_loaded(tmp_path_factory, checkpoint, flips):
    original, (tensors, metadata) = checkpoint
    raw = bytearray(original.read_bytes())
    for where, mask in flips:
        raw[int(where * len(raw))] ^= mask
    path = tmp_path_factory.mktemp("bad") / original.name
    path.write_bytes(bytes(raw))
    try:
        loaded, loaded_meta = load_tensors(path)
    except CheckpointError as error:
        assert original.name in str(error)
        return
    # only a change that alters nothing that loads (e.g. JSON whitespace) may pass
    assert loaded_meta == metadata
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize("cut", [0, 5, 8, 60, -1])
def test_truncation_is_detected(tmp_path, checkpoint, cut):
    original, _ = checkpoint
    path = tmp_path / original.name
    path.write_bytes(original.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match=original.name):
        load_tensors(path)
