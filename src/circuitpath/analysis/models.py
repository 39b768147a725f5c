"""What an analysis may ask of either hooked model: the named axes of a hook, the attention the readout
position pays to each key position per layer and head, and the hook that carries each input position.

The paper's model (`CrossAttentionTransformer`) has one layer, one head and a single learned query,
so its "readout attention" is `blocks.0.attn.hook_pattern` [batch, key_pos]. The standard transformer
(`StandardTransformer`) reads its logits at one position (`cfg.readout`: a CLS token, the last
position or a given one); the attention that position pays is row `readout` of each layer's
`blocks.{l}.attn.hook_pattern` [batch, head_index, query_pos, key_pos]. Analyses written against these
few functions run on both models; the paper-only ones call `require_paper` and refuse in one line.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitpath.config import ModelConfig
from circuitpath.errors import InputError, NotApplicableError

#: Named axes of every hook of the paper's model after the batch axis (the model's hook contract).
PAPER_HOOK_AXES: dict[str, tuple[str, ...]] = {
    "hook_embed": ("pos", "d_model"),
    "hook_pos_embed": ("pos", "d_model"),
    "blocks.0.hook_resid_pre": ("pos", "d_model"),
    "blocks.0.ln1.hook_normalized": ("pos", "d_model"),
    "blocks.0.attn.hook_attn_scores": ("key_pos",),
    "blocks.0.attn.hook_pattern": ("key_pos",),
    "blocks.0.attn.hook_v": ("key_pos", "d_model"),
    "blocks.0.hook_attn_out": ("d_model",),
    "blocks.0.ln2.hook_normalized": ("d_model",),
    "blocks.0.mlp.hook_pre": ("d_mlp",),
    "blocks.0.mlp.hook_post": ("d_mlp",),
    "blocks.0.hook_mlp_out": ("d_model",),
    "blocks.0.hook_resid_post": ("d_model",),
}

#: Named axes of the standard transformer's hooks after the batch axis, by the hook name's last part.
TRANSFORMER_AXES: dict[str, tuple[str, ...]] = {
    "hook_embed": ("pos", "d_model"), "hook_pos_embed": ("pos", "d_model"),
    "hook_resid_pre": ("pos", "d_model"), "hook_resid_mid": ("pos", "d_model"), "hook_resid_post": ("pos", "d_model"),
    "hook_attn_out": ("pos", "d_model"), "hook_mlp_out": ("pos", "d_model"), "hook_normalized": ("pos", "d_model"),
    "hook_scale": ("pos", "one"),
    "hook_q": ("pos", "head_index", "d_head"), "hook_k": ("pos", "head_index", "d_head"),
    "hook_v": ("pos", "head_index", "d_head"), "hook_z": ("pos", "head_index", "d_head"),
    "hook_attn_scores": ("head_index", "query_pos", "key_pos"), "hook_pattern": ("head_index", "query_pos", "key_pos"),
    "hook_pre": ("pos", "d_mlp"), "hook_post": ("pos", "d_mlp"),
}


def is_paper(model_or_cfg) -> bool:
    """Whether a model (or a ModelConfig) is the paper's single-query cross-attention model."""
    cfg = model_or_cfg if isinstance(model_or_cfg, ModelConfig) else model_or_cfg.cfg
    return cfg.arch == "cross_attention"


def describe(cfg: ModelConfig) -> str:
    """The model in a few words, for messages and captions."""
    if cfg.arch == "cross_attention":
        return "the paper's cross-attention model"
    return f"a {cfg.n_layers}-layer, {cfg.n_heads}-head transformer read out at {cfg.readout!r}"


def require_paper(model_or_cfg, what: str, instead: str = "") -> None:
    """Refuse (NotApplicableError, one line) an analysis that only the paper's model has."""
    cfg = model_or_cfg if isinstance(model_or_cfg, ModelConfig) else model_or_cfg.cfg
    if cfg.arch != "cross_attention":
        raise NotApplicableError(f"{what} needs the paper's cross-attention model (one layer, a single query); "
                                 f"this run's is {describe(cfg)}" + (f"; {instead}" if instead else ""))


def hook_axes(model, hook: str) -> tuple[str, ...]:
    """The named axes of `hook`'s activation after the batch axis, for either model."""
    model.check_hook(hook)
    if is_paper(model):
        return PAPER_HOOK_AXES[hook]
    return TRANSFORMER_AXES[hook.rsplit(".", 1)[-1]]


def readout_position(cfg: ModelConfig) -> int:
    """The position whose residual gives the logits (0 for the paper's model: its single query)."""
    if cfg.arch == "cross_attention":
        return 0
    from circuitpath.models.weights import readout_position as at

    return at(cfg)


#: The name of a standard transformer's appended CLS token wherever a position is named.
CLS = "cls"
#: The axes whose index is a sequence position (and may be the CLS token's).
POSITION_AXES = ("pos", "key_pos", "query_pos")


def position_name(cfg: ModelConfig | None, t: int, name: str) -> str:
    """Position t's name: `name` (x3, pos 3, ...), or "cls" for the CLS token a standard transformer read out
    at "cls" appends after the n_ctx input positions (position n_ctx). The one place positions get that name."""
    if cfg is not None and cfg.arch == "transformer" and cfg.readout == "cls" and t == cfg.n_ctx:
        return CLS
    return name


def key_labels(cfg: ModelConfig) -> list[str]:
    """A name for each key position of the readout attention: x0, x1, ..., and cls for the CLS token."""
    extra = cfg.arch == "transformer" and cfg.readout == "cls"
    return [position_name(cfg, t, f"x{t}") for t in range(cfg.n_ctx + extra)]


def pattern_hooks(cfg: ModelConfig) -> list[str]:
    """The attention pattern hook of every layer."""
    return [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]


@torch.no_grad()
def readout_attention(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch layer head_index key_pos"]:
    """The attention the readout position pays to each key position, per layer and head; each row sums to 1.

    The paper's model: its single query ([batch, 1, 1, key_pos]). The standard transformer: row
    `readout` of each layer's pattern; key_pos includes the CLS token when the readout is "cls"."""
    tokens = tokens.to(model.W_E.device)
    hooks = pattern_hooks(model.cfg)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
    if is_paper(model):
        return cache[hooks[0]][:, None, None, :].float().cpu()
    at = readout_position(model.cfg)
    return torch.stack([cache[hook][:, :, at, :] for hook in hooks], 1).float().cpu()


def position_hook(model_or_cfg) -> tuple[str, str]:
    """The hook and axis whose index t carries input position t into the model, for ablating positions:
    the values `blocks.0.attn.hook_v` over key_pos in the paper's model; the first residual stream
    `blocks.0.hook_resid_pre` (token + position embedding) over pos in the standard transformer."""
    if is_paper(model_or_cfg):
        return "blocks.0.attn.hook_v", "key_pos"
    return "blocks.0.hook_resid_pre", "pos"


def check_hook_axes(model, hook: str, over: tuple[str, ...]) -> None:
    """Refuse an axis the hook does not have, naming the ones it has (as `patching.axis_masks` does)."""
    axes = hook_axes(model, hook)
    unknown = [a for a in over if a not in axes]
    if unknown:
        raise InputError(f"hook {hook!r} has axes {axes}, not {unknown[0]!r}")
