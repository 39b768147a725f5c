import pytest
import torch

from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_config(phases="2:30:1e-2", seed=0, n_ctx=6, k=3, n_train=40, tied=True, **train) -> RunConfig:
    """A run small enough to train in well under a second."""
    train = {"log_every": 5, "checkpoint_every": 10, "dense_checkpoints": 4} | train
    return RunConfig(
        task=TaskConfig(n_ctx=n_ctx, k=k, n_train=n_train, n_test=50, seed=seed),
        model=ModelConfig(d_model=8, n_tokens=4, n_ctx=n_ctx, tied=tied, seed=seed),
        train=TrainConfig(phases=parse_phases(phases), **train),
    )


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="session")
def _trained_once(tmp_path_factory):
    from circuitpath import train

    return train(tiny_config("2:20:1e-2,4:20:1e-2"), tmp_path_factory.mktemp("trained") / "run", progress=False).path


@pytest.fixture
def trained_run(tmp_path, _trained_once):
    """A run of its own for each test: a copy of one trained once (training is deterministic, so the
    bytes are those of training it here), which a test may change freely."""
    import shutil

    from circuitpath import load_run

    return load_run(shutil.copytree(_trained_once, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))
