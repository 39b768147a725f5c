"""Activation patching over any hook and any of its named axes, every index in batched passes.

Run the model on corrupted inputs while one slice of one activation is taken from the clean run, and
measure a metric. `patch` does this for every index of the chosen axes at once: the corrupted batch
is repeated once per index and a mask selects, in each copy, the slice that comes from the clean run,
so a hook's 12 key positions cost batched passes over 12 x batch sequences instead of 12 forward
passes, and only the part of the model after the hook runs again (`replacing`).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from circuitpath.analysis.models import PAPER_HOOK_AXES, POSITION_AXES, hook_axes, is_paper, position_name
from circuitpath.analysis.replacing import DEFAULT_MAX_BATCH, VALUES, run_replaced
from circuitpath.config import ModelConfig
from circuitpath.data import check_summed
from circuitpath.errors import InputError
from circuitpath.models.model import CrossAttentionTransformer

#: Named axes of every hook of the paper's model after the batch axis (the model's hook contract); any
#: model's: `models.hook_axes`.
HOOK_AXES: dict[str, tuple[str, ...]] = PAPER_HOOK_AXES

Metric = Callable[[Tensor, Tensor, Tensor], Tensor]


def logit_diff(logits: Tensor, clean_labels: Tensor, corrupted_labels: Tensor) -> Tensor:
    """Mean of logit[clean answer] - logit[corrupted answer]."""
    picked = logits.gather(-1, torch.stack([clean_labels, corrupted_labels], -1))
    return (picked[..., 0] - picked[..., 1]).mean(-1)


def loss(logits: Tensor, clean_labels: Tensor, corrupted_labels: Tensor) -> Tensor:
    """Mean cross-entropy against the clean answers."""
    return F.cross_entropy(logits.flatten(0, -2), clean_labels.flatten(), reduction="none").view(clean_labels.shape).mean(-1)


def accuracy(logits: Tensor, clean_labels: Tensor, corrupted_labels: Tensor) -> Tensor:
    """Fraction of clean answers predicted."""
    return (logits.argmax(-1) == clean_labels).float().mean(-1)


METRICS: dict[str, Metric] = {"logit_diff": logit_diff, "loss": loss, "accuracy": accuracy}

#: The name of index i of an axis, by hook (README, "Names"): v3 is the value vector of key position 3,
#: a3 its attention weight, n12 MLP neuron 12; any other axis is its name and the index (`d_model 5`).
INDEX_PREFIXES: dict[tuple[str, str], str] = {
    ("blocks.0.attn.hook_v", "key_pos"): "v",
    ("blocks.0.attn.hook_pattern", "key_pos"): "a",
    ("blocks.0.mlp.hook_pre", "d_mlp"): "n",
    ("blocks.0.mlp.hook_post", "d_mlp"): "n",
}


def index_names(hook: str, over: tuple[str, ...], sizes: list[int], cfg: ModelConfig | None = None) -> list[str]:
    """One name per index of the `over` axes of `hook`, in the order `axis_masks` makes them; given the
    model's config, a standard transformer's CLS position is "cls" (`models.position_name`)."""
    if not over:
        return ["all"]

    def name(axis: str, i: int) -> str:
        prefix = INDEX_PREFIXES.get((hook, axis))
        plain = f"{prefix}{i}" if prefix else f"{axis} {i}"
        return position_name(cfg, i, plain) if axis in POSITION_AXES else plain
    return [" ".join(name(a, i) for a, i in zip(over, index))
            for index in itertools.product(*(range(s) for s in sizes))]


@dataclass
class PatchResult:
    """The metric after patching each index of `axes` of `hook` from the clean run into the corrupted run.

    `patched` is the metric itself; `effect` is the change it makes, from the corrupted baseline
    (patched - corrupted), and `normalized()` that change as a fraction of clean - corrupted.
    `clean` and `corrupted` are one number when every index shares the corrupted run (`patch`), or a
    tensor shaped like `patched` when each index has its own (`position_patching`).
    """

    hook: str
    axes: tuple[str, ...]
    patched: Tensor  # metric after patching; shape: the sizes of `axes` (a scalar tensor when axes is empty)
    clean: float | Tensor  # metric of the clean run
    corrupted: float | Tensor  # metric of the corrupted run, nothing patched
    metric: str
    measured: Tensor | None = None  # inputs each index is measured on, where that differs by index
    labels: list[str] | None = None  # a name for each index, flattened (`index_names`: v3, n12, ...)
    seed: int | None = None  # seed of the corruption's random draw

    @property
    def effect(self) -> Tensor:
        """Change of the metric from the corrupted baseline: patched - corrupted (0: patching does nothing)."""
        return self.patched - self.corrupted

    @property
    def effects(self) -> Tensor:
        """Deprecated: the metric after patching, now `patched` (the change it makes is `effect`)."""
        warnings.warn("PatchResult.effects is the metric after patching: read .patched (or .effect for the "
                      "change from the corrupted baseline)", DeprecationWarning, stacklevel=2)
        return self.patched

    def normalized(self) -> Tensor:
        """The effect as a fraction of clean - corrupted: 0 as corrupted, 1 the clean metric restored (NaN:
        nothing measured)."""
        return (self.patched - self.corrupted) / (self.clean - self.corrupted)


def _metric(metric: str | Metric) -> tuple[str, Metric]:
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return metric, METRICS[metric]


def axis_masks(shape: torch.Size, hook: str, over: tuple[str, ...], axes: tuple[str, ...] | None = None) -> Tensor:
    """One boolean mask [index, *shape] per index of the `over` axes of `hook`, True on that index's slice.
    `axes` names the activation's axes (default: the paper's model's, `HOOK_AXES`; `models.hook_axes`)."""
    axes = HOOK_AXES[hook] if axes is None else axes
    unknown = [a for a in over if a not in axes]
    if unknown:
        raise InputError(f"hook {hook!r} has axes {axes}, not {unknown[0]!r}")
    repeated = [a for i, a in enumerate(over) if a in over[:i]]
    if repeated:
        raise InputError(f"axis {repeated[0]!r} is named twice in {tuple(over)}")
    dims = [axes.index(a) for a in over]
    indices = itertools.product(*(range(shape[d]) for d in dims))
    return selection_masks(shape, [dict(zip(dims, index)) for index in indices])


def selection_masks(shape: torch.Size, selections: list[dict[int, int | list[int]]]) -> Tensor:
    """One boolean mask [len(selections), *shape]: mask i is True where every dim named in
    selections[i] takes the given index (or one of the given indices), whatever the other dims."""
    masks = torch.zeros(len(selections), *shape, dtype=torch.bool)
    for row, selection in enumerate(selections):
        where = [slice(None)] * len(shape)
        for dim, index in selection.items():
            where[dim] = index
        masks[(row, *where)] = True
    return masks


@torch.no_grad()
def patch(
    model: CrossAttentionTransformer,
    hook: str,
    clean: Int[Tensor, "batch pos"],
    corrupted: Int[Tensor, "batch pos"],
    clean_labels: Int[Tensor, " batch"],
    corrupted_labels: Int[Tensor, " batch"],
    *,
    over: tuple[str, ...] = (),
    metric: str | Metric = "logit_diff",
    max_batch: int = DEFAULT_MAX_BATCH,
    seed: int | None = None,
) -> PatchResult:
    """Patch the clean activation at `hook` into the corrupted run, once per index of the `over` axes.

    `seed` is recorded as the seed the corrupted inputs were drawn with (`corrupt_positions`), when known.

    `over=()` patches the whole activation at once. All indices go through batched passes of at
    most `max_batch` sequences (`replacing.run_replaced`).
    """
    model.check_hook(hook)
    if clean.shape != corrupted.shape:
        raise InputError(f"clean and corrupted inputs differ in shape: {list(clean.shape)} vs {list(corrupted.shape)}")
    name, fn = _metric(metric)
    device = model.W_E.device
    clean, corrupted = clean.to(device), corrupted.to(device)
    clean_labels, corrupted_labels = clean_labels.to(device), corrupted_labels.to(device)
    clean_logits, clean_cache = model.run_with_cache(clean, names_filter=hook)
    corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
    axes = hook_axes(model, hook)
    masks = axis_masks(clean_cache[hook].shape[1:], hook, tuple(over), axes).to(device)
    logits = run_replaced(model, hook, corrupted, corrupted_cache, clean_cache[hook], masks, max_batch)
    copies = logits.shape[0]
    patched = fn(logits, clean_labels.expand(copies, -1), corrupted_labels.expand(copies, -1))
    sizes = [clean_cache[hook].shape[1 + axes.index(a)] for a in over]
    return PatchResult(
        hook=hook,
        axes=tuple(over),
        patched=patched.view(sizes).cpu(),
        clean=float(fn(clean_logits, clean_labels, corrupted_labels)),
        corrupted=float(fn(corrupted_logits, clean_labels, corrupted_labels)),
        metric=name,
        labels=index_names(hook, tuple(over), sizes, model.cfg),
        seed=seed,
    )


def _preset(hook: str, over: tuple[str, ...], what: str):
    def preset(model, clean, corrupted, clean_labels, corrupted_labels, **options) -> PatchResult:
        return patch(model, hook, clean, corrupted, clean_labels, corrupted_labels, over=over, **options)

    preset.__doc__ = f"Patch {what} (`{hook}` over {over or 'the whole activation'})."
    return preset


# Ready-made patches of this model's hooks: one generic function, thin wrappers.
patch_values_by_position = _preset("blocks.0.attn.hook_v", ("key_pos",), "the value vector of each key position")
patch_pattern_by_position = _preset("blocks.0.attn.hook_pattern", ("key_pos",), "the attention weight of each key position")
patch_normalized_by_position = _preset("blocks.0.ln1.hook_normalized", ("pos",), "z_t at each position")
patch_attn_out = _preset("blocks.0.hook_attn_out", (), "the whole attention output z_A")
patch_mlp_post = _preset("blocks.0.mlp.hook_post", (), "the whole MLP hidden layer")
patch_mlp_neurons = _preset("blocks.0.mlp.hook_post", ("d_mlp",), "each MLP neuron")


#: Seed of every corruption drawn without a generator: the same inputs in every run.
DEFAULT_SEED = 0


def seeded(generator: torch.Generator | None, seed: int = DEFAULT_SEED) -> torch.Generator:
    """`generator`, or a fresh one seeded with `seed`: randomness here never depends on global state."""
    return generator if generator is not None else torch.Generator().manual_seed(seed)


def corrupt_positions(
    tokens: Int[Tensor, "batch pos"], positions: list[int], p: int, generator: torch.Generator | None = None,
    *, seed: int = DEFAULT_SEED,
) -> Int[Tensor, "batch pos"]:
    """A copy of `tokens` with the given positions redrawn uniformly from F_p, from `generator` or else
    from a generator seeded with `seed` (the same draw every time)."""
    check_summed(tokens.shape[1], p, positions)
    corrupted = tokens.clone()
    fresh = torch.randint(p, (tokens.shape[0], len(positions)), generator=seeded(generator, seed))
    corrupted[:, positions] = fresh.to(tokens.device)
    return corrupted


def redraw_position(
    tokens: Int[Tensor, "batch pos"], position: int, p: int, generator: torch.Generator | None = None,
    *, seed: int = DEFAULT_SEED,
) -> Int[Tensor, "batch pos"]:
    """A copy of `tokens` with the token at `position` replaced by a different one, uniform over the other
    p - 1 (drawn from `generator`, or from one seeded with `seed`)."""
    check_summed(tokens.shape[1], p, [position])
    corrupted = tokens.clone()
    shift = torch.randint(1, p, (tokens.shape[0],), generator=seeded(generator, seed)).to(tokens.device)
    corrupted[:, position] = (tokens[:, position] + shift) % p
    return corrupted


FLIP_METRIC = "logit diff, clean answer - corrupted answer, on the inputs whose answer flips"


def _rerun(model, hook: str, activation: Tensor, tokens: Tensor, cache) -> Tensor:
    """Logits with `activation` in place at `hook`: resumed there in the paper's model, a full forward
    pass with it swapped in otherwise."""
    if is_paper(model):
        return model.run_from(hook, activation, cache)
    return model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda act, hook: activation)])


@torch.no_grad()
def position_patching(
    model: CrossAttentionTransformer,
    clean: Int[Tensor, "batch pos"],
    p: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    seed: int = DEFAULT_SEED,
) -> PatchResult:
    """Which key position's value carries the answer: corrupt one position at a time, patch it back.

    For each position t: redraw x_t to a different token (`redraw_position`), run the model, and run
    it again with that position's value vector (`blocks.0.attn.hook_v` at t) taken from the clean run.
    The metric is the logit difference between the clean run's answer and the corrupted run's answer
    (the model's top logits), averaged over the inputs where the two differ: the corruption flips
    the answer there, so the difference is > 0 clean and < 0 corrupted, and
    `normalized()` reads 0 = as corrupted, 1 = as clean. Where no answer flips (a position the model
    ignores: every spurious one of a model that has pruned them) there is nothing to restore: the
    entry is NaN and `measured` is 0. `measured` counts the flipped inputs of each position; labels
    name the positions' values v0, v1, ... (`k`, how many positions the task sums, is only checked: which
    positions it sums is the task's, `TaskConfig.relevant_positions`). Without a `generator` the
    redraws come from one seeded with `seed`. In the standard transformer the value patched back is
    position t's in the first layer (`blocks.0.attn.hook_v` at t, every head): what every position
    reads from t there, while t's own stream and keys stay corrupted.
    """
    model.check_tokens(clean)
    n_ctx = clean.shape[1]
    if not 2 <= p <= model.cfg.n_tokens:
        raise InputError(f"p must be between 2 and the model's n_tokens = {model.cfg.n_tokens}, got {p}")
    if not 1 <= k <= n_ctx:
        raise InputError(f"k must be between 1 and the sequence length {n_ctx}, got {k}")
    if clean.numel() and int(clean.max()) >= p:
        raise InputError(f"clean inputs hold token {int(clean.max())}, not in F_p for p = {p}")
    device = model.W_E.device
    clean = clean.to(device)
    clean_logits, clean_cache = model.run_with_cache(clean, names_filter=VALUES)
    answer = clean_logits.argmax(-1, keepdim=True)
    drawn_with = seed if generator is None else None
    generator = seeded(generator, seed)
    rows = {"patched": [], "clean": [], "corrupted": [], "measured": []}
    for position in range(n_ctx):
        corrupted = redraw_position(clean, position, p, generator)
        logits, cache = model.run_with_cache(corrupted)
        values = cache[VALUES].clone()
        values[:, position] = clean_cache[VALUES][:, position]  # the paper's [batch, key_pos, d]; else [batch, pos, head, e]
        patched = _rerun(model, VALUES, values, corrupted, cache)
        rival = logits.argmax(-1, keepdim=True)
        flipped = (rival != answer).squeeze(-1)

        def difference(out: Tensor) -> Tensor:
            return (out.gather(-1, answer) - out.gather(-1, rival)).squeeze(-1)[flipped].mean()

        for key, out in (("patched", patched), ("clean", clean_logits), ("corrupted", logits)):
            rows[key].append(difference(out))
        rows["measured"].append(flipped.sum())
    stacked = {key: torch.stack(values).float().cpu() for key, values in rows.items()}
    return PatchResult(
        hook=VALUES, axes=("key_pos",), patched=stacked["patched"], clean=stacked["clean"],
        corrupted=stacked["corrupted"], metric=FLIP_METRIC, measured=stacked["measured"].long(),
        labels=index_names(VALUES, ("key_pos",), [n_ctx], model.cfg), seed=drawn_with,
    )
