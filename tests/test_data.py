import re

import numpy as np
import pytest
import torch

from circuitpath import ConfigError, InputError, TaskConfig, make_split
from circuitpath.analysis.patching import corrupt_positions, redraw_position
from circuitpath.data import targets


def rows(x):
    return {tuple(r) for r in x.tolist()}


def test_targets_are_the_sum_of_the_first_k_mod_p():
    x = torch.tensor([[1, 2, 3, 0, 3], [3, 3, 3, 3, 3]])
    assert targets(x, p=4, k=3).tolist() == [(1 + 2 + 3) % 4, 9 % 4]


def test_small_task_enumerates_the_rest_as_test_set():
    task = TaskConfig(n_ctx=8, k=3, n_train=100)
    split = make_split(task, p=2)
    train, test = rows(split.x_train), rows(split.x_test)
    assert len(train) == 100 and not train & test
    assert len(train | test) == 2**8
    assert torch.equal(split.y_test, targets(split.x_test, 2, 3))


def test_large_task_draws_distinct_disjoint_sets():
    split = make_split(TaskConfig(n_ctx=12, k=5, n_train=2048, n_test=1000), p=4)
    train, test = rows(split.x_train), rows(split.x_test)
    assert (len(train), len(test)) == (2048, 1000) and not train & test
    assert split.x_train.max() == 3 and split.x_train.min() == 0
    assert torch.equal(split.y_train, split.x_train[:, :5].sum(1) % 4)


def test_deterministic_from_seed_and_p():
    task = TaskConfig(n_ctx=10, n_train=64, n_test=64)
    a, b = make_split(task, 4), make_split(task, 4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    c = make_split(TaskConfig(n_ctx=10, n_train=64, n_test=64, seed=1), 4)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize(
    "kwargs, p, message",
    [
        ({}, 1, "p must be >= 2, got 1"),
        ({"k": 13}, 2, "k must be <= n_ctx (12), got 13"),
        ({"k": 0}, 2, "k must be >= 1, got 0"),
        ({"n_ctx": 4, "k": 2, "n_train": 17}, 2, "n_train must be < p**n_ctx = 2**4 = 16"),
        ({"n_ctx": 4, "k": 2, "n_train": 16}, 2, "a test set must remain"),
        ({"n_train": 0}, 2, "n_train must be >= 1, got 0"),
    ],
)
def test_bad_values_name_themselves(kwargs, p, message):
    with pytest.raises(ConfigError) as error:
        make_split(TaskConfig(**kwargs), p)
    assert message in str(error.value)


def test_any_prefix_of_the_test_set_is_a_uniform_sample():
    split = make_split(TaskConfig(n_ctx=12, k=5, n_train=2048), p=2)
    first = split.x_test[:256]
    # in sorted order the first 256 of 2048 would all start with three zeros
    assert first[:, :3].sum() > 0
    assert 0.4 < first.float().mean().item() < 0.6


def test_with_replacement_is_the_paper_pipelines_draw():
    split = make_split(TaskConfig(n_ctx=12, k=5, n_train=2048, n_test=2048, seed=4, with_replacement=True), p=2)
    rng = np.random.default_rng(4)  # src/factorization/data/modular.py: the training set, then the test set
    x_train, x_test = rng.integers(0, 2, (2048, 12)), rng.integers(0, 2, (2048, 12))
    assert np.array_equal(split.x_train.numpy(), x_train) and np.array_equal(split.x_test.numpy(), x_test)
    assert np.array_equal(split.y_train.numpy(), x_train[:, :5].sum(1) % 2)
    assert np.array_equal(split.y_test.numpy(), x_test[:, :5].sum(1) % 2)
    assert split.x_train.dtype == torch.int64
    train, test = rows(split.x_train), rows(split.x_test)
    assert len(train) < 2048 and train & test  # 2 048 draws among 4 096 sequences repeat and overlap


def test_with_replacement_draws_more_sequences_than_exist():
    task = TaskConfig(n_ctx=4, k=2, n_train=100, n_test=30, with_replacement=True)
    split = make_split(task, p=2)
    assert (len(split.x_train), len(split.x_test)) == (100, 30) and len(rows(split.x_train)) <= 16
    with pytest.raises(ConfigError, match="with_replacement must be true or false, got 'yes'"):
        TaskConfig(with_replacement="yes")


@pytest.mark.parametrize("call, says", [
    (lambda x: targets(x, 4, 20), "k must be in 1..12 (the inputs' length), got 20"),
    (lambda x: targets(x, 0, 5), "p must be an integer >= 2, got 0"),
    (lambda x: targets(x, 4, [0, 12]), "positions must lie in 0..11 (the inputs' length is 12), got [0, 12]"),
    (lambda x: corrupt_positions(x, [20], p=4), "positions must lie in 0..11"),
    (lambda x: corrupt_positions(x, [0], p=0), "p must be an integer >= 2, got 0"),
    (lambda x: redraw_position(x, 12, 4), "positions must lie in 0..11"),
])
def test_targets_and_corruptions_name_a_bad_position_or_modulus(call, says):
    x = torch.zeros(3, 12, dtype=torch.long)
    with pytest.raises(InputError, match=re.escape(says)):
        call(x)
    assert targets(x + 1, 4, np.array([0, 3])[1:].tolist() + [np.int64(1)]).tolist() == [2, 2, 2]  # numpy's ints count
