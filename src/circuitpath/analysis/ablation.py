"""Circuit ablation: knock out attention key positions, MLP neurons or the attention output, and measure.

An ablation replaces part of an activation with zeros, its mean over the inputs, or its value on
other inputs (resampling), and reports accuracy and loss before and after. Single indices and named
sets of indices (e.g. all spurious positions) go through the same batched passes as patching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from circuitpath.analysis.models import hook_axes, is_paper, position_hook
from circuitpath.analysis.patching import axis_masks, index_names, seeded, selection_masks
from circuitpath.analysis.replacing import DEFAULT_MAX_BATCH, run_replaced
from circuitpath.data import positions_of, truth_name
from circuitpath.errors import InputError
from circuitpath.models.model import CrossAttentionTransformer

METHODS = ("zero", "mean", "resample")


@dataclass
class AblationResult:
    """Accuracy and loss with each named part ablated, next to the intact model's.

    Parts are named as `patching.index_names` names them (v3: the value of key position 3, n12: MLP
    neuron 12), then the named sets. `effect` is the accuracy lost, a change from the intact baseline.
    """

    hook: str
    method: str
    names: list[str]
    accuracy: Tensor  # [len(names)]
    loss: Tensor  # [len(names)]
    base_accuracy: float
    base_loss: float

    @property
    def effect(self) -> Tensor:
        """Accuracy lost when each part is ablated: intact - ablated (0: the part does not matter)."""
        return self.base_accuracy - self.accuracy

    def rows(self) -> list[tuple[str, float, float]]:
        return list(zip(self.names, self.accuracy.tolist(), self.loss.tolist()))


def position_sets(k: int | Sequence[int], n_ctx: int) -> dict[str, list[int]]:
    """The truth's two sets of key positions: the summed ones and the spurious rest. `k` is a number (the
    paper's first k, named "first k (0-4)") or the relevant positions (`TaskConfig.relevant_positions`,
    named "relevant (1,5,9)")."""
    if isinstance(k, int) and not 1 <= k <= n_ctx:
        raise InputError(f"k must be between 1 and the sequence length n_ctx = {n_ctx}, got {k}")
    relevant = positions_of(k)
    if not relevant or relevant[0] < 0 or relevant[-1] >= n_ctx or len(set(relevant)) < len(relevant):
        raise InputError(f"the relevant positions must be distinct positions of 0..{n_ctx - 1}, got {list(relevant)}")
    spurious = [t for t in range(n_ctx) if t not in relevant]
    if truth_name(k) == "first k":
        named = {f"first k (0-{len(relevant) - 1})": relevant, f"spurious ({len(relevant)}-{n_ctx - 1})": spurious}
    else:
        named = {f"relevant ({','.join(map(str, relevant))})": relevant, f"spurious ({','.join(map(str, spurious))})": spurious}
    return {name: list(positions) for name, positions in named.items() if positions}


def replacement_for(activation: Tensor, method: str, generator: torch.Generator | None = None) -> Tensor:
    """What an ablation puts in place of `activation` (batch first): zeros, its batch mean, or a shuffle."""
    if method == "zero":
        return torch.zeros_like(activation)
    if method == "mean":
        return activation.mean(0, keepdim=True).expand_as(activation)
    if method == "resample":
        order = torch.randperm(activation.shape[0], generator=generator).to(activation.device)
        return activation[order]
    raise InputError(f"unknown ablation method {method!r}; known: {', '.join(METHODS)}")


def _set_masks(shape: torch.Size, axes: tuple[str, ...], axis: str, sets: dict[str, list[int]]) -> Tensor:
    dim = axes.index(axis)
    bad = [i for indices in sets.values() for i in indices if not 0 <= i < shape[dim]]
    if bad:
        raise InputError(f"index {bad[0]} is out of range for axis {axis!r} of size {shape[dim]}")
    return selection_masks(shape, [{dim: list(indices)} for indices in sets.values()])


@torch.no_grad()
def ablate(
    model: CrossAttentionTransformer,
    tokens: Int[Tensor, "batch pos"],
    labels: Int[Tensor, " batch"],
    *,
    hook: str | None = None,
    over: tuple[str, ...] | None = None,
    sets: dict[str, list[int]] | None = None,
    method: str = "mean",
    generator: torch.Generator | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> AblationResult:
    """Ablate each index of the `over` axes of `hook` alone, then each named set of indices.

    `over=()` ablates the whole activation once. `sets` name lists of indices along the single
    `over` axis (e.g. `position_sets(k, T)`). Resampling without a `generator` draws from one seeded
    with `patching.DEFAULT_SEED`. Left out, `hook` and `over` are the model's input positions
    (`models.position_hook`: each key position's value in the paper's model, the first residual stream
    at each position in the standard transformer).
    """
    default_hook, default_axis = position_hook(model)
    hook = default_hook if hook is None else hook
    over = (default_axis,) if over is None else over
    model.check_hook(hook)
    axes = hook_axes(model, hook)
    device = model.W_E.device
    tokens, labels = tokens.to(device), labels.to(device)
    logits, cache = model.run_with_cache(tokens)
    activation = cache[hook]
    shape = activation.shape[1:]
    masks = axis_masks(shape, hook, tuple(over), axes)
    names = index_names(hook, tuple(over), [shape[axes.index(a)] for a in over], model.cfg)
    if sets:
        if len(over) != 1:
            raise InputError(f"sets of indices need exactly one axis in over, got {over}")
        masks = torch.cat([masks, _set_masks(shape, axes, over[0], sets)])
        names += list(sets)
    replacement = replacement_for(activation, method, seeded(generator) if method == "resample" else generator)
    ablated = run_replaced(model, hook, tokens, cache, replacement, masks.to(device), max_batch)
    return AblationResult(
        hook=hook,
        method=method,
        names=names,
        accuracy=(ablated.argmax(-1) == labels).float().mean(-1).cpu(),
        loss=F.cross_entropy(ablated.transpose(1, 2), labels.expand(len(names), -1), reduction="none").mean(-1).cpu(),
        base_accuracy=float((logits.argmax(-1) == labels).float().mean()),
        base_loss=float(F.cross_entropy(logits, labels)),
    )


@torch.no_grad()
def ablate_heads(
    model,
    tokens: Int[Tensor, "batch pos"],
    labels: Int[Tensor, " batch"],
    sets: dict[str, list[tuple[int, int]]],
    method: str = "mean",
    generator: torch.Generator | None = None,
) -> AblationResult:
    """Ablate each named set of attention heads together, heads of any layers: (layer, head) pairs.

    A head is its output before the output matrix (`blocks.{layer}.attn.hook_z`, over head_index), replaced
    as `ablate` replaces it (zero, its mean over the inputs at each position, or other inputs' value); one
    forward pass per set. `ablate(hook=f"blocks.{layer}.attn.hook_z", over=("head_index",))` is the one-head,
    one-layer case."""
    if is_paper(model):
        raise InputError("ablate_heads needs a standard transformer's heads; the paper's model has one "
                         "(ablate blocks.0.hook_attn_out)")
    layers, heads = model.cfg.n_layers, model.cfg.n_heads
    bad = [pair for pairs in sets.values() for pair in pairs
           if len(pair) != 2 or not (0 <= pair[0] < layers and 0 <= pair[1] < heads)]
    if bad:
        raise InputError(f"head {tuple(bad[0])} is not a (layer, head) of {layers} layers x {heads} heads")
    device = model.W_E.device
    tokens, labels = tokens.to(device), labels.to(device)
    hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(layers)]
    logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
    replaced = {hook: replacement_for(cache[hook], method, seeded(generator) if method == "resample" else generator)
                for hook in hooks}
    runs = [_without_heads(model, tokens, replaced, pairs) for pairs in sets.values()]
    ablated = torch.stack(runs) if runs else logits.new_zeros((0, *logits.shape))
    return AblationResult(
        hook="blocks.*.attn.hook_z", method=method, names=list(sets),
        accuracy=(ablated.argmax(-1) == labels).float().mean(-1).cpu(),
        loss=F.cross_entropy(ablated.transpose(1, 2), labels.expand(len(sets), -1), reduction="none").mean(-1).cpu(),
        base_accuracy=float((logits.argmax(-1) == labels).float().mean()),
        base_loss=float(F.cross_entropy(logits, labels)),
    )


def _without_heads(model, tokens: Tensor, replaced: dict[str, Tensor], pairs: list[tuple[int, int]]) -> Tensor:
    """Logits with the listed heads' hook_z swapped for `replaced` (one forward pass)."""
    def swap(heads: list[int]):
        def hook(z: Tensor, hook) -> Tensor:
            z = z.clone()
            z[:, :, heads] = replaced[hook.name][:, :, heads]
            return z
        return hook

    by_layer: dict[int, list[int]] = {}
    for layer, head in pairs:
        by_layer.setdefault(layer, []).append(head)
    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", swap(heads))
                                                   for layer, heads in sorted(by_layer.items())])
