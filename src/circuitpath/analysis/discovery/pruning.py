"""The pruning story: which position edges each update interval strengthened or weakened.

Between two saved checkpoints, the edge of key position t (its value and pattern into z_A) is
*strengthened* when its share of the total position score, sum_t |value t| + |pattern t|, grows by
more than `tol`, and *weakened* when it shrinks by more than `tol` (the paper's red and blue arrows,
read from a discovery method instead of the attention weights). Shares, not raw scores, so that the
logits growing overall does not count as every edge strengthening. An interval whose two ends were
probed on different phases' data (a curriculum's switch) is left out: its change mixes the update
with the change of task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuitpath.analysis.discovery.timeline import DiscoveryTimeline
from circuitpath.errors import InputError


@dataclass
class PruningStory:
    run: str
    method: str
    k: int
    tol: float
    starts: list[int]  # first checkpoint of each update interval
    ends: list[int]  # last checkpoint of each interval
    share: Tensor  # [n_steps, key_pos] each position's share of the total position score
    strengthened: Tensor  # [n_intervals, key_pos] bool
    weakened: Tensor  # [n_intervals, key_pos] bool
    same_phase: Tensor  # [n_intervals] bool: both ends probed on the same phase's data
    relevant: Tensor  # [n_intervals, key_pos] bool: the truth of each interval's end (`DiscoveryTimeline.truth`)

    @property
    def spurious_strengthened(self) -> Tensor:
        """[n_intervals, key_pos] True where an update strengthened the edge of a spurious position."""
        return self.strengthened & ~self.relevant

    @property
    def spurious_fraction(self) -> Tensor:
        """[n_intervals] fraction of strengthened edges that are spurious (not relevant); nan where none
        was strengthened or the interval crosses a phase switch."""
        strong = self.strengthened.sum(1).float()
        fraction = self.spurious_strengthened.sum(1).float() / strong
        return torch.where((strong > 0) & self.same_phase, fraction, torch.tensor(float("nan")))

    @property
    def last_spurious_strengthened(self) -> int | None:
        """End step of the last interval in which a spurious edge was strengthened (None: never)."""
        rows = zip(self.ends, self.spurious_strengthened, self.same_phase)
        hits = [end for end, row, ok in rows if ok and row.any()]
        return hits[-1] if hits else None


def pruning_story(timeline: DiscoveryTimeline, method: str | None = None, tol: float = 0.01) -> PruningStory:
    """Strengthened and weakened position edges over each interval between consecutive checkpoints."""
    method = method or timeline.methods[0]
    if method not in timeline.sites:
        raise InputError(f"the timeline has no {method!r} scores; it has {', '.join(timeline.methods)}")
    if not 0 <= tol < 1:
        raise InputError(f"tol must be in [0, 1) (a change of share), got {tol}")
    if len(timeline.steps) < 2:
        raise InputError(f"a pruning story needs at least 2 checkpoints, got {len(timeline.steps)}")
    positions = timeline.positions(method)
    total = positions.sum(1, keepdim=True)
    share = torch.where(total > 0, positions / total.clamp_min(1e-30), torch.full_like(positions, 1 / positions.shape[1]))
    change = share[1:] - share[:-1]
    phases = torch.tensor(timeline.phases)
    relevant = timeline.truth().expand_as(share)[1:]
    return PruningStory(
        run=timeline.run, method=method, k=timeline.k, tol=tol, starts=timeline.steps[:-1], ends=timeline.steps[1:],
        share=share, strengthened=change > tol, weakened=change < -tol, same_phase=phases[1:] == phases[:-1],
        relevant=relevant)
