"""Three ways to score every site of the graph at one checkpoint, each in a few batched passes.

All three measure how much the model's output depends on what flows through each site, on the
clean inputs (`Probe.clean`):

- attribution patching: (clean - corrupted activation) x gradient of the metric, for every site from
  one forward and one backward pass (plus a forward pass of the corrupted inputs); with `ig_steps`
  = m the gradient is averaged over m inputs on the straight line from the corrupted to the clean
  embeddings (integrated gradients, as EAP-IG does);
- activation patching: metric(clean) - metric(clean with this site's activation from the corrupted
  run), every site in batched passes (what `replacing.run_replaced`, the engine of `patch`, gives);
- ablation: loss with the site knocked out (zero, mean or resample, as `ablation.ablate` does)
  minus the intact loss.

Patching and ablation share one cached clean run (and patching a corrupted one) per checkpoint
(`ProbeRuns`).

The corrupted inputs are other inputs of the same probe set (a fixed permutation), so no method is
told which positions the task sums. Attribution patching is the first-order estimate of activation
patching: where the logits are linear in a site (neurons, MLP output, residual) the two are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuitpath.analysis.ablation import METHODS as ABLATIONS
from circuitpath.analysis.ablation import replacement_for
from circuitpath.analysis.discovery.forward import (
    TokenAttention,
    attention_inputs,
    embed,
    forward_from_attention,
    late_gradients,
    metric_gradient,
    token_tables,
)
from circuitpath.analysis.discovery.graph import GROUPS, ModelGraph, site_activations, site_sums
from circuitpath.analysis.patching import METRICS
from circuitpath.errors import InputError

METHODS = ("attribution", "patching", "ablation")
DIFFERENTIABLE = ("logit_diff", "loss")


@dataclass(frozen=True)
class Probe:
    """Clean inputs and their labels, and the corrupted inputs patched in (another order of the same inputs)."""

    clean: Int[Tensor, "batch pos"]
    labels: Int[Tensor, " batch"]
    corrupted: Int[Tensor, "batch pos"]
    corrupted_labels: Int[Tensor, " batch"]

    @classmethod
    def shuffled(cls, tokens: Tensor, labels: Tensor, seed: int = 0) -> Probe:
        if tokens.shape[0] < 2:
            raise InputError(f"a probe needs at least 2 inputs to corrupt one with another, got {tokens.shape[0]}")
        order = torch.randperm(tokens.shape[0], generator=torch.Generator().manual_seed(seed))
        return cls(tokens, labels, tokens[order], labels[order])

    def to(self, device) -> Probe:
        return Probe(*(t.to(device) for t in (self.clean, self.labels, self.corrupted, self.corrupted_labels)))


@dataclass
class SiteScores:
    """One method's score of every site at one checkpoint (see the module docstring for each)."""

    method: str
    metric: str  # what the score is a change of
    sites: Tensor  # [n_sites] the mean over inputs of each input's change
    magnitude: Tensor  # [n_sites] the mean over inputs of |each input's change|: what `position_scores` reads
    clean: float  # metric of the intact clean run
    total: float  # metric(clean) - metric(corrupted run); for ablation, loss with every site ablated - intact


def _check_metric(metric: str) -> None:
    if metric not in DIFFERENTIABLE:
        raise InputError(f"unknown metric {metric!r} for discovery; known: {', '.join(DIFFERENTIABLE)}")


LATE = [group for group in GROUPS if group not in ("value", "pattern")]  # the sites from z_A on


def attribution_scores(model, probe: Probe, metric: str = "logit_diff", ig_steps: int = 0) -> SiteScores:
    """Gradient x activation difference at every site: one forward and one backward pass for all."""
    _check_metric(metric)
    if ig_steps < 0:
        raise InputError(f"ig_steps must be >= 0, got {ig_steps}")
    fn, probe = METRICS[metric], probe.to(model.W_E.device)
    labels, batch, steps = (probe.labels, probe.corrupted_labels), probe.clean.shape[0], max(ig_steps, 1)
    with torch.no_grad():
        tables = token_tables(model)
        clean, corrupted = TokenAttention.of(model, probe.clean, tables), TokenAttention.of(model, probe.corrupted, tables)
        corrupted_logits, corrupted_acts = forward_from_attention(model, corrupted.z_attn())
        path = _path(model, probe, ig_steps) if ig_steps else None
        z_attn = clean.z_attn() if path is None else model.blocks[0].attn.mix(*path)
        # the metric is the mean over the m copies of the mean over the batch: one mean over every row
        logits, acts, grads = late_gradients(model, z_attn, metric_gradient(metric, *(y.repeat(steps) for y in labels)))
        # the metric is the mean over the m copies, so summing their gradients averages them
        per_copy = lambda t: t.view(steps, batch, *t.shape[1:])
        averaged = (lambda t: t) if steps == 1 else (lambda t: per_copy(t).sum(0))
        products = {g: (acts[g][-batch:] - corrupted_acts[g]) * averaged(grads[g]) for g in LATE}
        products.update(_position_products(clean, corrupted, per_copy(grads["attention"]), path))
        metric_clean = float(fn(logits[-batch:], *labels))
        total = metric_clean - float(fn(corrupted_logits, *labels))
        # the metric is a mean over the batch, so each product is 1/batch of that input's estimated change
        signed, absolute = site_sums(products, ModelGraph.of(model))
    return SiteScores("attribution", metric, signed.cpu(), absolute.cpu(), metric_clean, total)


def _path(model, probe: Probe, steps: int) -> tuple[Tensor, Tensor]:
    """Pattern and values of m inputs on the straight line from the corrupted to the clean embeddings,
    side by side ([m * batch, ...]); the last copy is the clean input."""
    start, end = embed(model, probe.corrupted), embed(model, probe.clean)
    alphas = torch.arange(1, steps + 1, dtype=start.dtype, device=start.device) / steps
    return attention_inputs(model, (start + alphas[:, None, None, None] * (end - start)).flatten(0, 1))


def _position_products(clean: TokenAttention, corrupted: TokenAttention, g_attn: Tensor,
                       path: tuple[Tensor, Tensor] | None) -> dict[str, Tensor]:
    """Activation difference x gradient at the values and the pattern, [batch, key_pos] each, from the
    gradient at z_A [m, batch, d_model]: z_A = sum_t a_t v_t, so dm/dv_t = a_t dm/dz_A and dm/da_t =
    v_t . dm/dz_A, and no backward pass below z_A is needed."""
    change = clean.pattern - corrupted.pattern
    if path is None:  # one copy, the clean one: v . g for every (token, position) pair, read twice
        along = g_attn[0] @ clean.table.T
        return {"value": clean.pattern * (clean.read(along) - corrupted.read(along)), "pattern": change * clean.read(along)}
    pattern, values = (t.view(g_attn.shape[0], -1, *t.shape[1:]) for t in path)
    along = torch.einsum("btd,cbd->cbt", clean.values() - corrupted.values(), g_attn)
    return {"value": (pattern * along).sum(0), "pattern": change * torch.einsum("cbtd,cbd->bt", values, g_attn)}


class ProbeRuns:
    """The probe's clean and corrupted runs with every activation cached: made once per checkpoint
    and shared by the methods that need them."""

    def __init__(self, model, probe: Probe):
        self.model, self.probe = model, probe.to(model.W_E.device)

    @cached_property
    def clean(self) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            return self.model.run_with_cache(self.probe.clean)

    @cached_property
    def corrupted(self) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            return self.model.run_with_cache(self.probe.corrupted)


def _replace_each_site(runs: ProbeRuns, replacements: dict[str, Tensor]) -> list[Tensor]:
    """For each group, logits [sites, batch, n_tokens] of the clean inputs with one of its sites taken
    from the group's replacement (what `replacing.run_replaced` gives for one-site masks, held to it
    by a test). From z_A on the logits are linear in a site: the cached logits plus its change times
    a fixed matrix. A value or a weight of the pattern moves z_A, and the layers after it run again
    on every position's copy of the batch."""
    model, (logits, cache) = runs.model, runs.clean
    acts = site_activations(cache)
    pattern, values, z_attn = acts["pattern"], acts["value"], acts["attention"]
    moved = {"value": pattern.unsqueeze(-1) * (replacements["value"] - values),  # [batch, key_pos, d_model]
             "pattern": (replacements["pattern"] - pattern).unsqueeze(-1) * values}
    out = [_logits_from_attention(model, z_attn + moved[group].transpose(0, 1)) for group in ("value", "pattern")]
    out.append(_logits_from_attention(model, replacements["attention"][None]))
    to_logits = model.W_out @ model.W_U  # [d_mlp, n_tokens]: what a neuron's change adds to each logit
    for change in (F.gelu(replacements["neuron_in"]) - acts["neuron"], replacements["neuron"] - acts["neuron"]):
        out.append(logits + change.T.unsqueeze(-1) * to_logits.unsqueeze(1))
    out.extend((logits + (replacements[group] - acts[group]) @ model.W_U)[None] for group in ("mlp", "residual"))
    return out


def _logits_from_attention(model, z_attn: Float[Tensor, "copies batch d_model"]) -> Float[Tensor, "copies batch n_tokens"]:
    return forward_from_attention(model, z_attn.flatten(0, 1))[0].view(*z_attn.shape[:2], -1)


def per_input(fn, logits: Float[Tensor, "... batch n_tokens"], *labels: Tensor) -> Float[Tensor, "... batch"]:
    """A metric of `METRICS` (a mean over the batch) for each input alone."""
    return fn(logits.unsqueeze(-2), *(y.expand(logits.shape[:-1]).unsqueeze(-1) for y in labels))


@torch.no_grad()
def patching_scores(model, probe: Probe, metric: str = "logit_diff", runs: ProbeRuns | None = None) -> SiteScores:
    """metric(clean) - metric(clean with one site from the corrupted run), every site in batched passes."""
    _check_metric(metric)
    runs = runs or ProbeRuns(model, probe)
    fn, labels = METRICS[metric], (runs.probe.labels, runs.probe.corrupted_labels)
    (clean_logits, _), (corrupted_logits, corrupted_cache) = runs.clean, runs.corrupted
    base = per_input(fn, clean_logits, *labels)
    patched = _replace_each_site(runs, site_activations(corrupted_cache))
    changes = torch.cat([base - per_input(fn, logits, *labels) for logits in patched])  # [sites, batch]
    return SiteScores("patching", metric, changes.mean(1).cpu(), changes.abs().mean(1).cpu(), float(base.mean()),
                      float(base.mean() - fn(corrupted_logits, *labels)))


@torch.no_grad()
def ablation_scores(model, probe: Probe, method: str = "mean", seed: int = 0, runs: ProbeRuns | None = None) -> SiteScores:
    """Rise of the loss when each site is knocked out: zero, mean or resample as `ablation.ablate` does."""
    if method not in ABLATIONS:
        raise InputError(f"unknown ablation method {method!r}; known: {', '.join(ABLATIONS)}")
    runs = runs or ProbeRuns(model, probe)
    (logits, cache), y = runs.clean, runs.probe.labels
    acts = site_activations(cache)
    # one resampling order for every site
    knock = lambda activation: replacement_for(activation, method, torch.Generator().manual_seed(seed))
    base = F.cross_entropy(logits, y, reduction="none")
    knocked = _replace_each_site(runs, {group: knock(act) for group, act in acts.items()})
    changes = torch.cat([F.cross_entropy(k.transpose(1, 2), y.expand(len(k), -1), reduction="none") - base for k in knocked])
    # everything knocked out at once: the MLP output and the residual path together
    total = F.cross_entropy((knock(acts["mlp"]) + knock(acts["residual"])) @ model.W_U, y) - base.mean()
    return SiteScores("ablation", "loss", changes.mean(1).cpu(), changes.abs().mean(1).cpu(), float(base.mean()), float(total))


def score_sites(model, method: str, probe: Probe, *, metric: str = "logit_diff", ig_steps: int = 0,
                ablation: str = "mean", seed: int = 0, runs: ProbeRuns | None = None) -> SiteScores:
    """Score every site of the model's graph with one method (`runs`: cached runs of the probe to share)."""
    if method == "attribution":
        return attribution_scores(model, probe, metric, ig_steps)
    if method == "patching":
        return patching_scores(model, probe, metric, runs)
    if method == "ablation":
        return ablation_scores(model, probe, ablation, seed, runs)
    raise InputError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
