"""Sparse modular addition: x in F_p^T, y = the sum of x at the task's relevant positions, mod p.

The relevant positions are the first k (the paper's task), k drawn from the task's seed, or given
(`TaskConfig.positions`); sparse parity is p = 2. Train and test sets are distinct and disjoint, or (`TaskConfig.with_replacement`) drawn with replacement
as the paper's d = 2 pipeline draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from circuitpath.config import ENUMERATE_LIMIT, Phase, TaskConfig, is_whole
from circuitpath.errors import InputError


@dataclass(frozen=True)
class Split:
    """Train and test sequences of one phase (int64 tensors on the CPU)."""

    x_train: Int[Tensor, "n_train pos"]
    y_train: Int[Tensor, " n_train"]
    x_test: Int[Tensor, "n_test pos"]
    y_test: Int[Tensor, " n_test"]

    def tensors(self) -> dict[str, Tensor]:
        return {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test}


def targets(x: Int[Tensor, "batch pos"], p: int, k: int | Sequence[int]) -> Int[Tensor, " batch"]:
    """y = the sum of x at the relevant positions, mod p: the first k when `k` is a number,
    y = (x_1 + ... + x_k) mod p, or the positions `k` lists (e.g. `task.relevant_positions(phase)`)."""
    check_summed(x.shape[1], p, k)
    if isinstance(k, int):
        return x[:, :k].sum(dim=1) % p
    return x[:, list(k)].sum(dim=1) % p


def check_summed(n_ctx: int, p: int, k: int | Sequence[int]) -> None:
    """InputError unless p >= 2 and the positions `k` names (the first k, or those listed) lie in 0..n_ctx-1."""
    if not is_whole(p) or p < 2:
        raise InputError(f"p must be an integer >= 2, got {p!r}")
    if is_whole(k):
        if not 1 <= k <= n_ctx:
            raise InputError(f"k must be in 1..{n_ctx} (the inputs' length), got {k}")
    elif not all(is_whole(t) and 0 <= t < n_ctx for t in k):
        raise InputError(f"positions must lie in 0..{n_ctx - 1} (the inputs' length is {n_ctx}), got {list(k)}")


def positions_of(k: int | Sequence[int]) -> tuple[int, ...]:
    """The relevant positions in increasing order: 0..k-1 for a number k, else the positions given."""
    return tuple(range(k)) if isinstance(k, int) else tuple(sorted(int(t) for t in k))


def relevant_mask(k: int | Sequence[int], n_ctx: int) -> Bool[Tensor, " pos"]:
    """True at the relevant positions (`positions_of(k)`), False at the spurious ones."""
    mask = torch.zeros(n_ctx, dtype=torch.bool)
    mask[list(positions_of(k))] = True
    return mask


def at_positions(values: Tensor, k: int | Sequence[int], spurious: bool = False) -> Tensor:
    """`values` [..., pos] at the relevant positions, or at the spurious ones: a slice for a number k (the
    first k), an index for listed positions."""
    if isinstance(k, int):
        return values[..., k:] if spurious else values[..., :k]
    relevant = set(positions_of(k))
    return values[..., [t for t in range(values.shape[-1]) if (t in relevant) != spurious]]


def truth_of(task: TaskConfig, phase: Phase | None = None) -> int | tuple[int, ...]:
    """The truth of `phase` as analyses take it: the number k for a first-k task, else the relevant positions
    (`TaskConfig.relevant_positions`). Either way `positions_of` gives the positions."""
    return task.phase_k(phase) if task.positions == "first" else task.relevant_positions(phase)


def truth_name(k: int | Sequence[int]) -> str:
    """How labels name the relevant positions: "first k" for a number k (the paper's task), else "relevant"."""
    return "first k" if isinstance(k, int) else "relevant"


def make_split(task: TaskConfig, p: int, k: int | None = None) -> Split:
    """The train/test split of modulus p summing k positions (default: the task's k).

    The sequences are a function of (task.seed, p) only, and the targets sum them at
    `task.summed_positions(k)`: a phase's data depends on (seed, p, k).

    When p**T <= ENUMERATE_LIMIT the test set is every sequence not drawn for training; otherwise
    n_test further distinct sequences are drawn. Both sets are in random order, so any prefix of
    them is a uniform sample (analyses probe with the first n test sequences). With
    `task.with_replacement`, see `draw_with_replacement`.
    """
    task.check_modulus(p)
    if task.with_replacement:
        return draw_with_replacement(task, p, k)
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
    return _labelled(task, p, k, x_train, x_test)


def draw_with_replacement(task: TaskConfig, p: int, k: int | None = None) -> Split:
    """n_train then n_test sequences, uniform with replacement, from one `default_rng(task.seed)`.

    As src/factorization/data/modular.py (`SMADataset`: `rng.integers(0, p, (nb_data, seq_length))`)
    called by projects/visualization/train.py for the training then the test set: rows may repeat,
    and the test set overlaps the training set.
    """
    rng = np.random.default_rng(task.seed)
    x_train = torch.from_numpy(rng.integers(0, p, (task.n_train, task.n_ctx))).long()
    x_test = torch.from_numpy(rng.integers(0, p, (task.n_test, task.n_ctx))).long()
    return _labelled(task, p, k, x_train, x_test)


def _labelled(task: TaskConfig, p: int, k: int | None, x_train: Tensor, x_test: Tensor) -> Split:
    """The split with targets summed at the positions of k (the task's k when None)."""
    positions = task.summed_positions(task.k if k is None else k)
    return Split(x_train, targets(x_train, p, positions), x_test, targets(x_test, p, positions))


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
