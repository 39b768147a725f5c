"""The inputs the paper's figures were drawn on, and the attention of saved checkpoints on them.

- Fig. 2 shows a sequence of one repeated token (the all-3s input); `constant_inputs` gives all p.
- Fig. 4 shows every choice of the first k tokens with the spurious positions set to 0
  (`first_k_inputs`).
- Fig. 3's claim reads how the attention splits between the 0s and the 1s among the first k
  (`token_focus`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitpath.analysis.models import require_paper
from circuitpath.data import at_positions, truth_of
from circuitpath.runs import Run

PATTERN = "blocks.0.attn.hook_pattern"


def constant_inputs(p: int, n_ctx: int) -> Int[Tensor, "p pos"]:
    """Row i is the sequence of n_ctx tokens i (the paper's Fig. 2 shows i = 3)."""
    return torch.arange(p).reshape(-1, 1).expand(p, n_ctx).clone()


def first_k_inputs(p: int, k: int, n_ctx: int) -> Int[Tensor, "batch pos"]:
    """Every sequence whose first k tokens run over F_p^k (in base-p order) and whose others are 0."""
    heads = torch.tensor(list(itertools.product(range(p), repeat=k)), dtype=torch.int64)
    return torch.cat([heads, torch.zeros(len(heads), n_ctx - k, dtype=torch.int64)], dim=1)


@torch.no_grad()
def attention_at(run: Run, steps: list[int], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "step batch key_pos"]:
    """The query's attention on each input at each of the given checkpoints (the paper's single query)."""
    require_paper(run.config.model, "the single query's attention", "flow.readout_flow reads the readout position's "
                  "per layer and head")
    patterns = []
    for step in steps:
        _, cache = run.model_at(step).run_with_cache(tokens, names_filter=PATTERN)
        patterns.append(cache[PATTERN])
    return torch.stack(patterns)


@dataclass
class UpdateChanges:
    """How each update between consecutive checkpoints changed the attention on one input."""

    steps: list[int]  # the checkpoints; update i goes from steps[i] to steps[i + 1]
    pattern: Tensor  # [len(steps), key_pos]
    k: int
    relevant: tuple[int, ...] | None = None  # the summed positions when they are not the first k

    @property
    def truth(self) -> int | tuple[int, ...]:
        """The summed positions as `data.at_positions` takes them."""
        return self.k if self.relevant is None else self.relevant

    @property
    def change(self) -> Tensor:
        """[updates, key_pos] attention after minus before each update."""
        return self.pattern[1:] - self.pattern[:-1]

    @property
    def spurious_increased(self) -> Tensor:
        """[updates] True where an update increased the attention on at least one spurious position."""
        return (at_positions(self.change, self.truth, spurious=True) > 0).any(1)

    @property
    def relevant_mass(self) -> Tensor:
        """Attention on the summed positions, per checkpoint."""
        return at_positions(self.pattern, self.truth).sum(1)

    @property
    def first_k_mass(self) -> Tensor:
        """`relevant_mass` under the paper's name (its summed positions are the first k)."""
        return self.relevant_mass

    @property
    def spurious_mass(self) -> Tensor:
        return at_positions(self.pattern, self.truth, spurious=True).sum(1)


def update_changes(run: Run, steps: list[int], tokens: Int[Tensor, " pos"]) -> UpdateChanges:
    """The attention on one input at consecutive checkpoints (e.g. every update of an epoch), against the
    truth of the first step's phase."""
    pattern = attention_at(run, steps, tokens.reshape(1, -1))[:, 0]
    task = run.config.task
    truth = truth_of(task, run.config.train.phases[run.phase_at(steps[0])])
    if isinstance(truth, int):
        return UpdateChanges(list(steps), pattern, truth)
    return UpdateChanges(list(steps), pattern, len(truth), truth)


@dataclass
class TokenFocus:
    """Mean attention on a first-k position holding 0 against one holding 1 (inputs with both)."""

    on_zero: float
    on_one: float
    inputs: int  # inputs that hold both a 0 and a 1 among their first k

    @property
    def ratio(self) -> float:
        return self.on_zero / self.on_one if self.on_one > 0 else float("inf")


def token_focus(pattern: Float[Tensor, "batch key_pos"], tokens: Int[Tensor, "batch pos"], k: int) -> TokenFocus:
    """Split the attention on the first k positions by the token (0 or 1) each position holds."""
    first, attention = tokens[:, :k], pattern[:, :k]
    zeros, ones = (first == 0).float(), (first == 1).float()
    both = (zeros.sum(1) > 0) & (ones.sum(1) > 0)
    zeros, ones, attention = zeros[both], ones[both], attention[both]
    if not len(attention):
        return TokenFocus(float("nan"), float("nan"), 0)
    on_zero = ((attention * zeros).sum(1) / zeros.sum(1)).mean().item()
    on_one = ((attention * ones).sum(1) / ones.sum(1)).mean().item()
    return TokenFocus(on_zero, on_one, int(both.sum()))
