"""The paper's one-layer transformer with a single-query cross-attention, as a HookedRootModule.

Reads top to bottom as the paper's five equations (section I), d = d_model, h = d_mlp:

1. z_t  = RMS(W_E[x_t] + p_t)                                  Embed, PosEmbed, ln1
2. z_A  = sum_t softmax_t(z_t . W_Q / sqrt(d)) (z_t W_V)       CrossAttention
3. z̄_A  = RMS(z_A)                                            ln2
4. z_O  = r + GELU(z̄_A W_in + b_in) W_out + b_out              MLP with residual r
5. logits = z_O W_U                                           W_U = W_E.T when tied

The residual r is z_A in the paper's code (a standard pre-norm block, `residual="attn_out"`) and
z̄_A in the text's equation 4 (`residual="normalized"`).

This module and `transformer.py` (the standard transformer) are the ones that import TransformerLens
hook classes; `build_model` serves either model by `cfg.arch`, and `weights.py` (no TransformerLens)
gives either model's weight shapes and initial weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from circuitpath.config import ModelConfig
from circuitpath.errors import CheckpointError, HookError, InputError
from circuitpath.models import transformer
from circuitpath.models.cache import CrossAttentionCache
from circuitpath.models.embedding import Embed, PosEmbed, Unembed
from circuitpath.models.hooked import HookedModel
from circuitpath.models.weights import init_weights, root_mean_square, weight_shapes

#: Contract weight name -> key in `state_dict()`. Checkpoints store the contract names.
WEIGHT_KEYS: dict[str, str] = {
    "W_E": "embed.W_E",
    "W_pos": "pos_embed.W_pos",
    "W_Q": "blocks.0.attn.W_Q",
    "W_V": "blocks.0.attn.W_V",
    "W_in": "blocks.0.mlp.W_in",
    "b_in": "blocks.0.mlp.b_in",
    "W_out": "blocks.0.mlp.W_out",
    "b_out": "blocks.0.mlp.b_out",
    "W_U": "unembed.W_U",
}


class RMSNorm(nn.Module):
    """RMS(x) = x / (sqrt(mean(x**2)) + eps), no learned gain."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps
        self.hook_normalized = HookPoint()  # [batch, pos, d_model] (ln1) or [batch, d_model] (ln2)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.hook_normalized(x / (root_mean_square(x) + self.eps))


class CrossAttention(nn.Module):
    """One learned query attends over the T key positions; there is no key matrix."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_Q = nn.Parameter(torch.empty(cfg.d_model))
        self.W_V = nn.Parameter(torch.empty(cfg.d_model, cfg.d_model))
        self.scale = math.sqrt(cfg.d_model)
        self.hook_attn_scores = HookPoint()  # [batch, key_pos]
        self.hook_pattern = HookPoint()  # [batch, key_pos]
        self.hook_v = HookPoint()  # [batch, key_pos, d_model]

    def forward(self, z: Float[Tensor, "batch key_pos d_model"]) -> Float[Tensor, "batch d_model"]:
        scores = self.hook_attn_scores((z @ self.W_Q) / self.scale)  # z_t . W_Q / sqrt(d): [batch, key_pos]
        pattern = self.pattern(scores)
        return self.mix(pattern, self.hook_v(z @ self.W_V))

    def pattern(self, scores: Float[Tensor, "batch key_pos"]) -> Float[Tensor, "batch key_pos"]:
        """softmax over the key positions, written out: 4x faster than `Tensor.softmax` on rows of
        12 scores, equal within 2e-7. The shift by the row maximum is a constant to autograd."""
        e = (scores - scores.amax(-1, keepdim=True).detach()).exp()
        return self.hook_pattern(e / e.sum(-1, keepdim=True))

    def mix(self, pattern: Float[Tensor, "batch key_pos"], v: Float[Tensor, "batch key_pos d_model"]) -> Float[Tensor, "batch d_model"]:
        """sum_t pattern_t v_t, i.e. einsum "batch key_pos, batch key_pos d_model -> batch d_model"."""
        return (pattern.unsqueeze(-1) * v).sum(1)  # faster than bmm or einsum here at every batch size


class MLP(nn.Module):
    """GELU(x W_in + b_in) W_out + b_out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.empty(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.empty(cfg.d_model))
        self.hook_pre = HookPoint()  # [batch, d_mlp]
        self.hook_post = HookPoint()  # [batch, d_mlp]

    def forward(self, x: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch d_model"]:
        return self.from_pre(self.hook_pre(torch.addmm(self.b_in, x, self.W_in)))

    def from_pre(self, pre: Float[Tensor, "batch d_mlp"]) -> Float[Tensor, "batch d_model"]:
        return self.from_post(self.hook_post(F.gelu(pre)))

    def from_post(self, post: Float[Tensor, "batch d_mlp"]) -> Float[Tensor, "batch d_model"]:
        return torch.addmm(self.b_out, post, self.W_out)


class TransformerBlock(nn.Module):
    """Equations 1 (the norm) to 4: z_t -> z_A -> z̄_A -> z_O."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.residual_carries = cfg.residual
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.ln1 = RMSNorm(cfg.eps)
        self.attn = CrossAttention(cfg)
        self.hook_attn_out = HookPoint()  # [batch, d_model]
        self.ln2 = RMSNorm(cfg.eps)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()  # [batch, d_model]
        self.hook_resid_post = HookPoint()  # [batch, d_model]

    def forward(self, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch d_model"]:
        z = self.ln1(self.hook_resid_pre(resid))
        return self.from_attn_out(self.attn(z))

    def from_attn_out(self, z_attn: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch d_model"]:
        z_attn = self.hook_attn_out(z_attn)
        return self.from_normalized(self.ln2(z_attn), z_attn)

    def from_normalized(self, z_bar: Float[Tensor, "batch d_model"], z_attn: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch d_model"]:
        return self.from_mlp_out(self.residual(z_attn, z_bar), self.mlp(z_bar))

    def residual(self, z_attn: Float[Tensor, "batch d_model"], z_bar: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch d_model"]:
        """r of equation 4: z_A (the paper's code) or z̄_A (the text)."""
        return z_attn if self.residual_carries == "attn_out" else z_bar

    def from_mlp_out(self, resid: Float[Tensor, "batch d_model"], mlp_out: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch d_model"]:
        return self.hook_resid_post(resid + self.hook_mlp_out(mlp_out))


def build_model(cfg: ModelConfig, weights: dict[str, Tensor] | None = None) -> CrossAttentionTransformer | transformer.StandardTransformer:
    """The model `cfg.arch` names, with these weights (None: the initial ones)."""
    if cfg.arch == "transformer":
        return transformer.StandardTransformer(cfg, weights)
    return CrossAttentionTransformer(cfg, weights)


class CrossAttentionTransformer(HookedModel):
    """The paper's model. `model(tokens)` -> logits [batch, n_tokens]; every hook is cacheable."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, Tensor] | None = None):
        super().__init__()
        if cfg.arch != "cross_attention":
            raise CheckpointError(f"CrossAttentionTransformer needs arch 'cross_attention', got {cfg.arch!r}")
        self.cfg = cfg
        self.embed = Embed(cfg.n_tokens, cfg.d_model)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = PosEmbed(cfg.n_ctx, cfg.d_model)
        self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([TransformerBlock(cfg)])
        if not cfg.tied:
            self.unembed = Unembed(cfg.d_model, cfg.n_tokens)
        self.setup()
        self.load_weights(init_weights(cfg) if weights is None else weights)

    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        return_type: str = "logits",
        targets: Int[Tensor, " batch"] | None = None,
    ) -> Tensor:
        """Logits [batch, n_tokens], or with return_type="loss" the mean cross-entropy on `targets`."""
        self.check_tokens(tokens)
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        logits = self.blocks[0](resid) @ self.W_U
        if return_type == "logits":
            return logits
        if return_type == "loss":
            if targets is None:
                raise InputError("return_type='loss' needs targets")
            return F.cross_entropy(logits, targets.to(logits.device))
        raise InputError(f"return_type must be 'logits' or 'loss', got {return_type!r}")

    def run_with_cache(self, *model_args, return_cache_object: bool = True, **kwargs) -> tuple[Tensor, CrossAttentionCache | dict[str, Tensor]]:
        """Output and every hooked activation, as an `ActivationCache` (a plain dict with
        `return_cache_object=False`); `names_filter` and the other options of TransformerLens apply."""
        out, cache = super().run_with_cache(*model_args, **kwargs)
        return out, CrossAttentionCache(cache, self) if return_cache_object else cache

    def run_from(self, hook: str, value: Tensor, cache: dict[str, Tensor]) -> Float[Tensor, "batch n_tokens"]:
        """Logits when the forward pass resumes at `hook` with `value`, earlier activations from `cache`.

        `cache` is a `run_with_cache` result of the inputs; `value` may hold several copies of that
        batch (its batch size a multiple of the cache's). Hooks after `hook` fire as usual. Only hooks
        from the attention scores on can be resumed from; earlier ones need a full forward pass.
        """
        block = self.blocks[0]
        copies = value.shape[0] // next(iter(cache.values())).shape[0]

        def cached(name: str) -> Tensor:
            return cache[name].repeat(copies, *([1] * (cache[name].ndim - 1)))

        def resid() -> Tensor:  # r of equation 4, as cached
            return block.residual(cached("blocks.0.hook_attn_out"), cached("blocks.0.ln2.hook_normalized"))

        resume = {
            "blocks.0.attn.hook_attn_scores": lambda s: block.from_attn_out(block.attn.mix(block.attn.pattern(s), cached("blocks.0.attn.hook_v"))),
            "blocks.0.attn.hook_pattern": lambda a: block.from_attn_out(block.attn.mix(a, cached("blocks.0.attn.hook_v"))),
            "blocks.0.attn.hook_v": lambda v: block.from_attn_out(block.attn.mix(cached("blocks.0.attn.hook_pattern"), v)),
            "blocks.0.hook_attn_out": block.from_attn_out,
            "blocks.0.ln2.hook_normalized": lambda z_bar: block.from_normalized(z_bar, cached("blocks.0.hook_attn_out")),
            "blocks.0.mlp.hook_pre": lambda pre: block.from_mlp_out(resid(), block.mlp.from_pre(pre)),
            "blocks.0.mlp.hook_post": lambda post: block.from_mlp_out(resid(), block.mlp.from_post(post)),
            "blocks.0.hook_mlp_out": lambda out: block.from_mlp_out(resid(), out),
            "blocks.0.hook_resid_post": lambda resid: resid,
        }
        self.check_hook(hook)
        if hook not in resume:
            raise HookError(f"cannot resume the forward pass at {hook!r}; resumable: {', '.join(resume)}")
        return resume[hook](value) @ self.W_U

    # ---- weights by their contract names -------------------------------------------------------
    @property
    def W_E(self) -> Float[Tensor, "n_tokens d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos

    @property
    def W_Q(self) -> Float[Tensor, " d_model"]:
        return self.blocks[0].attn.W_Q

    @property
    def W_V(self) -> Float[Tensor, "d_model d_model"]:
        return self.blocks[0].attn.W_V

    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.blocks[0].mlp.W_in

    @property
    def b_in(self) -> Float[Tensor, " d_mlp"]:
        return self.blocks[0].mlp.b_in

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return self.blocks[0].mlp.W_out

    @property
    def b_out(self) -> Float[Tensor, " d_model"]:
        return self.blocks[0].mlp.b_out

    @property
    def W_U(self) -> Float[Tensor, "d_model n_tokens"]:
        return self.embed.W_E.T if self.cfg.tied else self.unembed.W_U

    def weights(self) -> dict[str, Tensor]:
        """The trained weights by contract name (detached; W_U only when untied)."""
        return {name: getattr(self, name).detach() for name in weight_shapes(self.cfg)}

    def load_weights(self, weights: dict[str, Tensor]) -> None:
        """Copy weights given by contract name; the names and shapes must match the config exactly."""
        self.copy_weights(weights, weight_shapes(self.cfg), WEIGHT_KEYS.__getitem__)

