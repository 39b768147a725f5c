"""Scores against the task's exact ground truth: its relevant key positions are in the circuit, the rest
are not (`TaskConfig.relevant_positions`; 0..k-1 for the paper's task).

AUROC and precision@k read only the ranking of the positions' scores; ties count half (AUROC) or
share the places they straddle (precision@k), so a method that scores every position alike gets
0.5 and k/T, never a lucky 1. The faithfulness curve asks the converse: how much accuracy is left
with only a method's top-n nodes kept and every other node mean-ablated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitpath.analysis.discovery.forward import run_kept
from circuitpath.analysis.discovery.graph import ModelGraph
from circuitpath.data import positions_of, relevant_mask
from circuitpath.errors import InputError

Truth = int | Sequence[int] | Bool[Tensor, "*rows key_pos"]


def truth_mask(truth: Truth, n: int) -> Bool[Tensor, "*rows key_pos"]:
    """The relevant positions as a mask: the first k for a number, the positions listed, or a mask (one row
    per score row, e.g. per checkpoint of a curriculum over k). Refused unless both sides are non-empty."""
    if isinstance(truth, int) and not 0 < truth < n:
        raise InputError(f"k must be between 1 and {n - 1} to score positions against the truth, got {truth}")
    if not isinstance(truth, Tensor):
        positions = positions_of(truth)
        if positions and not 0 <= positions[0] <= positions[-1] < n:
            raise InputError(f"the truth's positions must lie in 0..{n - 1}, got {list(positions)}")
        truth = relevant_mask(positions, n)
    mask, counts = truth, truth.sum(-1)
    if mask.shape[-1] != n or bool(((counts < 1) | (counts > n - 1)).any()):
        raise InputError(f"the truth must hold between 1 and {n - 1} of the {n} positions to score against, "
                         f"got {counts.tolist()} of {mask.shape[-1]}")
    return mask


def auroc(scores: Float[Tensor, "... key_pos"], truth: Truth) -> Float[Tensor, "..."]:
    """P(a relevant position outscores a spurious one), ties counted half (the Mann-Whitney statistic)."""
    mask = truth_mask(truth, scores.shape[-1]).to(scores.device)
    if mask.dim() == 1:
        inside, outside = scores[..., mask, None], scores[..., None, ~mask]
        return ((inside > outside).float() + 0.5 * (inside == outside).float()).mean((-2, -1))
    pairs = mask[..., :, None] & ~mask[..., None, :]  # (relevant, spurious) pairs of each row
    inside, outside = scores[..., :, None], scores[..., None, :]
    wins = ((inside > outside).float() + 0.5 * (inside == outside).float()) * pairs
    return wins.sum((-2, -1)) / pairs.sum((-2, -1))


def precision_at_k(scores: Float[Tensor, "... key_pos"], truth: Truth) -> Float[Tensor, "..."]:
    """Expected fraction of relevant positions among the k top-scored (k of each row's truth), ties broken
    at random."""
    mask = truth_mask(truth, scores.shape[-1]).to(scores.device).expand_as(scores)
    k = mask.sum(-1, keepdim=True)
    cutoff = scores.sort(-1, descending=True).values.gather(-1, k - 1)
    above, tied = scores > cutoff, scores == cutoff
    places = k - above.sum(-1, keepdim=True)  # places left for the positions tied at the cutoff
    share = places / tied.sum(-1, keepdim=True)  # each tied position's chance of a place
    credit = above.float() + tied.float() * share
    return (credit * mask).sum(-1) / k.squeeze(-1)


def first_reaching(steps: list[int], values: Tensor, level: float = 0.99) -> int | None:
    """The first step at which `values` reach `level`, or None."""
    for step, value in zip(steps, values.tolist()):
        if value >= level:
            return step
    return None


def stays_from(steps: list[int], values: Tensor, level: float = 0.99) -> int | None:
    """The step from which `values` stay at or above `level` through the last step, or None (the last is
    below). A curve that reaches `level`, falls back and reaches it again stays from its second arrival."""
    since = None
    for step, value in zip(steps, values.tolist()):
        since = (since if since is not None else step) if value >= level else None
    return since


def reaching_text(first: int | None, stays: int | None, level: float = 0.99) -> str:
    """When a curve holds >= `level`, in words: the step from which it stays there, and its first arrival
    when that is earlier (it fell back in between)."""
    if first is None:
        return f">= {level}: not reached"
    if stays is None:
        return f">= {level} first at step {first}, below it at the last step"
    if stays == first:
        return f">= {level} from step {stays} on"
    return f">= {level} from step {stays} on (first at step {first}, then fell back)"


def ranks(values: Tensor) -> Tensor:
    """Ranks 1..n along the last axis, ties given their average rank."""
    order = values.argsort(-1)
    ranked = torch.empty_like(values, dtype=torch.float64)
    ranked.scatter_(-1, order, torch.arange(1, values.shape[-1] + 1, dtype=torch.float64).expand_as(values).contiguous())
    # average over ties: every member of a group of equal values gets the group's mean rank
    equal = values[..., :, None] == values[..., None, :]
    return (equal.double() @ ranked[..., None]).squeeze(-1) / equal.sum(-1)


def spearman(a: Float[Tensor, " n"], b: Float[Tensor, " n"]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); nan when either is constant."""
    ra, rb = ranks(a) - (a.shape[-1] + 1) / 2, ranks(b) - (b.shape[-1] + 1) / 2
    denominator = float((ra.square().sum() * rb.square().sum()).sqrt())
    return float((ra * rb).sum()) / denominator if denominator > 0 else math.nan


def node_order(graph: ModelGraph, sites: Float[Tensor, " site"]) -> list[int]:
    """Sites of the graph's nodes (not the logits), largest |score| first; ties in graph order."""
    node_sites = torch.tensor([node.site for node in graph.nodes if node.site is not None])
    order = torch.sort(-sites[node_sites].abs(), stable=True).indices
    return node_sites[order].tolist()


def keep_top(graph: ModelGraph, sites: Tensor, counts: list[int]) -> Tensor:
    """One keep mask [len(counts), n_sites] per count n: the n top-scored nodes' sites, and every
    site that only an edge reads (the neurons' inputs: a knocked-out neuron or z_A decides them)."""
    order = node_order(graph, sites)
    keep = torch.zeros(len(counts), graph.n_sites, dtype=torch.bool)
    keep[:, graph.slices["neuron_in"]] = True
    for row, n in enumerate(counts):
        keep[row, order[:n]] = True
    return keep


def faithfulness_counts(n_nodes: int) -> list[int]:
    """0, 1, 2, 3, 4, 6, 8, 12, 16, ... up to every node: the n at which a faithfulness curve is read."""
    counts, base = {0, n_nodes}, 1
    while base <= n_nodes:
        counts |= {base, min(base * 3 // 2, n_nodes)}
        base *= 2
    return sorted(counts)


@torch.no_grad()
def faithfulness(
    model,
    graph: ModelGraph,
    acts: dict[str, Tensor],
    labels: Int[Tensor, " batch"],
    sites: Float[Tensor, "*methods site"],
    counts: list[int],
) -> Float[Tensor, "*methods count"]:
    """Accuracy with only the top-n nodes (by |score|) kept and the rest mean-ablated, for each n.

    Several rows of scores (e.g. one per method) share one pass, and the masks they have in common
    before the MLP run once (`run_kept`)."""
    rows = sites.reshape(-1, sites.shape[-1])
    keep = torch.cat([keep_top(graph, row, counts) for row in rows]).to(labels.device)
    logits = run_kept(model, graph, acts, keep)
    return (logits.argmax(-1) == labels).float().mean(-1).cpu().view(*sites.shape[:-1], len(counts))
