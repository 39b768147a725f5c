"""Sparse modular addition: x in F_p^T, y = (x_1 + ... + x_k) mod p.

Train and test sets are distinct and disjoint, or (`TaskConfig.with_replacement`) drawn with replacement
as the paper's d = 2 pipeline draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from circuitpath.config import ENUMERATE_LIMIT, TaskConfig


@dataclass(frozen=True)
class Split:
    """Train and test sequences of one phase (int64 tensors on the CPU)."""

    x_train: Int[Tensor, "n_train pos"]
    y_train: Int[Tensor, " n_train"]
    x_test: Int[Tensor, "n_test pos"]
    y_test: Int[Tensor, " n_test"]

    def tensors(self) -> dict[str, Tensor]:
        return {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test}


def targets(x: Int[Tensor, "batch pos"], p: int, k: int) -> Int[Tensor, " batch"]:
    """y = (x_1 + ... + x_k) mod p."""
    return x[:, :k].sum(dim=1) % p


def make_split(task: TaskConfig, p: int) -> Split:
    """The train/test split of modulus p, a function of (task.seed, p) only.

    When p**T <= ENUMERATE_LIMIT the test set is every sequence not drawn for training; otherwise
    n_test further distinct sequences are drawn. Both sets are in random order, so any prefix of
    them is a uniform sample (analyses probe with the first n test sequences). With
    `task.with_replacement`, see `draw_with_replacement`.
    """
    task.check_modulus(p)
    if task.with_replacement:
        return draw_with_replacement(task, p)
    generator = torch.Generator().manual_seed(task.seed * 1_000_003 + p)
    total = p**task.n_ctx
    if total <= ENUMERATE_LIMIT:
        codes = torch.randperm(total, generator=generator)
        train_codes, test_codes = codes[: task.n_train], codes[task.n_train :]
        x_train, x_test = _decode(train_codes, p, task.n_ctx), _decode(test_codes, p, task.n_ctx)
    else:
        n_test = min(task.n_test, total - task.n_train)
        rows = _distinct_rows(generator, p, task.n_ctx, task.n_train + n_test)
        x_train, x_test = rows[: task.n_train], rows[task.n_train :]
    return Split(x_train, targets(x_train, p, task.k), x_test, targets(x_test, p, task.k))


def draw_with_replacement(task: TaskConfig, p: int) -> Split:
    """n_train then n_test sequences, uniform with replacement, from one `default_rng(task.seed)`.

    As src/factorization/data/modular.py (`SMADataset`: `rng.integers(0, p, (nb_data, seq_length))`)
    called by projects/visualization/train.py for the training then the test set: rows may repeat,
    and the test set overlaps the training set.
    """
    rng = np.random.default_rng(task.seed)
    x_train = torch.from_numpy(rng.integers(0, p, (task.n_train, task.n_ctx))).long()
    x_test = torch.from_numpy(rng.integers(0, p, (task.n_test, task.n_ctx))).long()
    return Split(x_train, targets(x_train, p, task.k), x_test, targets(x_test, p, task.k))


def _decode(codes: Int[Tensor, " n"], p: int, n_ctx: int) -> Int[Tensor, "n pos"]:
    """Write each code in base p, most significant digit first."""
    powers = p ** torch.arange(n_ctx - 1, -1, -1, dtype=torch.int64)
    return (codes[:, None] // powers) % p


def _distinct_rows(generator: torch.Generator, p: int, n_ctx: int, n: int) -> Int[Tensor, "n pos"]:
    """n distinct uniformly random sequences, in the order they were drawn."""
    seen: set[tuple[int, ...]] = set()
    kept: list[list[int]] = []
    while len(kept) < n:
        batch = torch.randint(p, (2 * (n - len(kept)) + 16, n_ctx), generator=generator)
        for row in batch.tolist():
            key = tuple(row)
            if key not in seen:
                seen.add(key)
                kept.append(row)
                if len(kept) == n:
                    break
    return torch.tensor(kept, dtype=torch.int64)
