"""A standard transformer as a HookedRootModule, named and shaped as TransformerLens names them.

Reads top to bottom as the forward pass (d = d_model, h = d_mlp, H = n_heads, e = d_head = d / H):

1. resid = W_E[x_t] + W_pos[t]                  Embed, PosEmbed (a CLS token appended when readout="cls")
2. per block, pre-norm:
   resid_mid  = resid + Attn(ln1(resid))        bidirectional self-attention of H heads, no mask
   resid_post = resid_mid + MLP(ln2(resid_mid)) GELU(x W_in + b_in) W_out + b_out
3. logits = ln_final(resid)[:, readout] @ W_U   read at one position; W_U = W_E[:n_tokens].T when tied

The norms are TransformerLens's RMSNorm or LayerNorm (eps inside the square root, a learned gain, and a
bias for LayerNorm). Weights are stored under their `state_dict()` keys (e.g. `blocks.0.attn.W_Q`),
which are also the names in checkpoints and in the engine's flat parameter rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache
from transformer_lens.hook_points import HookPoint

from circuitpath.config import ModelConfig
from circuitpath.errors import CheckpointError, InputError
from circuitpath.models.cache import NamedCache
from circuitpath.models.embedding import Embed, PosEmbed, Unembed
from circuitpath.models.hooked import HookedModel
from circuitpath.models.weights import n_positions, readout_position, transformer_init, transformer_shapes


class Norm(nn.Module):
    """TransformerLens's RMSNorm (x / scale * w) or LayerNorm ((x - mean) / scale * w + b), scale =
    sqrt(mean(x**2) + eps) of the centred x."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.eps, self.centred = cfg.eps, cfg.norm == "layer"
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        if self.centred:
            self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if self.centred:
            x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        if self.centred:  # TransformerLens hooks LayerNorm's output after the gain and bias
            return self.hook_normalized(x / scale * self.w + self.b)
        return self.hook_normalized(x / scale) * self.w  # and RMSNorm's before the gain


class Attention(nn.Module):
    """Bidirectional self-attention of n_heads heads: every position attends to every position."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        heads, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.empty(heads, d, e)) for _ in range(3))
        self.b_Q, self.b_K, self.b_V = (nn.Parameter(torch.zeros(heads, e)) for _ in range(3))
        self.W_O = nn.Parameter(torch.empty(heads, e, d))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.scale = math.sqrt(e)
        self.hook_q = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head_index, query_pos, key_pos]
        self.hook_pattern = HookPoint()  # [batch, head_index, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head_index, d_head]

    def forward(self, x: Float[Tensor, "batch pos d_model"], query: int | None = None) -> Float[Tensor, "batch query_pos d_model"]:
        """Every position's output, or with `query` that one position's alone (query_pos = 1)."""
        q = self.hook_q(_heads_in(x if query is None else x[:, query : query + 1], self.W_Q, self.b_Q))
        k = self.hook_k(_heads_in(x, self.W_K, self.b_K))
        v = self.hook_v(_heads_in(x, self.W_V, self.b_V))
        scores = self.hook_attn_scores(q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / self.scale)
        pattern = self.hook_pattern(_softmax(scores))
        z = self.hook_z((pattern @ v.transpose(1, 2)).transpose(1, 2))  # [batch, pos, head_index, d_head]
        heads, e, d = self.W_O.shape
        return z.reshape(*z.shape[:2], heads * e) @ self.W_O.reshape(heads * e, d) + self.b_O


def _softmax(scores: Float[Tensor, "... key_pos"]) -> Float[Tensor, "... key_pos"]:
    """softmax over the key positions, written out: on rows of a dozen scores `Tensor.softmax` and its
    backward run a row at a time, 2-4x slower. The shift by the row maximum is a constant to autograd."""
    e = (scores - scores.amax(-1, keepdim=True).detach()).exp()
    return e / e.sum(-1, keepdim=True)


def _heads_in(x: Float[Tensor, "batch pos d_model"], w: Float[Tensor, "head_index d_model d_head"],
              b: Float[Tensor, "head_index d_head"]) -> Float[Tensor, "batch pos head_index d_head"]:
    """einsum "batch pos d_model, head_index d_model d_head -> batch pos head_index d_head" + b, as one product."""
    heads, d, e = w.shape
    return (x @ w.transpose(0, 1).reshape(d, heads * e)).view(*x.shape[:2], heads, e) + b


class MLP(nn.Module):
    """GELU(x W_in + b_in) W_out + b_out at every position."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        post = self.hook_post(F.gelu(self.hook_pre(x @ self.W_in + self.b_in)))
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    """resid_mid = resid_pre + Attn(ln1(resid_pre)); resid_post = resid_mid + MLP(ln2(resid_mid))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.ln1 = Norm(cfg)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.ln2 = Norm(cfg)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, resid: Float[Tensor, "batch pos d_model"], query: int | None = None) -> Float[Tensor, "batch query_pos d_model"]:
        """resid_post at every position, or with `query` at that one position alone (query_pos = 1)."""
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid), query))
        if query is not None:
            resid = resid[:, query : query + 1]
        resid = self.hook_resid_mid(resid + attn_out)
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))


class StandardTransformer(HookedModel):
    """`model(tokens)` -> logits [batch, n_tokens] read at `cfg.readout`; every hook is cacheable."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, Tensor] | None = None):
        super().__init__()
        if cfg.arch != "transformer":
            raise CheckpointError(f"StandardTransformer needs arch 'transformer', got {cfg.arch!r}")
        self.cfg = cfg
        self.embed = Embed(cfg.n_tokens + (cfg.readout == "cls"), cfg.d_model)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = PosEmbed(n_positions(cfg), cfg.d_model)
        self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = Norm(cfg)
        if not cfg.tied:
            self.unembed = Unembed(cfg.d_model, cfg.n_tokens)
        self.readout_at = readout_position(cfg)
        self.setup()
        self.load_weights(transformer_init(cfg) if weights is None else weights)

    def forward(self, tokens: Int[Tensor, "batch pos"], return_type: str = "logits",
                targets: Int[Tensor, " batch"] | None = None, engine: bool = False) -> Tensor:
        """Logits [batch, n_tokens], or with return_type="loss" the mean cross-entropy on `targets`.

        `engine=True` is the function the engine trains: the tokens unchecked (`torch.func` transforms
        cannot read values) and the last block computed at the readout position alone, the only one
        the logits read (the same logits up to rounding, a third fewer operations at 2 layers; that
        block's hooks then see one query position)."""
        if not engine:
            self.check_tokens(tokens)
        resid = self.residual(tokens, at_readout=engine)
        logits = self.ln_final(resid)[:, 0 if engine else self.readout_at] @ self.W_U
        if return_type == "logits":
            return logits
        if return_type == "loss":
            if targets is None:
                raise InputError("return_type='loss' needs targets")
            return F.cross_entropy(logits, targets.to(logits.device))
        raise InputError(f"return_type must be 'logits' or 'loss', got {return_type!r}")

    def residual(self, tokens: Int[Tensor, "batch pos"], at_readout: bool = False) -> Float[Tensor, "batch pos d_model"]:
        """The final residual stream (the CLS token appended first when the readout is "cls"); with
        `at_readout`, the last block's output at the readout position alone ([batch, 1, d_model])."""
        if self.cfg.readout == "cls":
            tokens = F.pad(tokens, (0, 1), value=self.cfg.n_tokens)
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for layer, block in enumerate(self.blocks):
            last = at_readout and layer == len(self.blocks) - 1
            resid = block(resid, self.readout_at if last else None)
        return resid

    def lean_forward(self, hook: str | None = None) -> dict:
        """`engine=True` (the last block at the readout position alone, tokens unchecked) when `hook` is
        upstream of the last block's attention, where it sees the same activation either way; else {}.
        The logits agree with the full pass's up to rounding: compare a lean pass with a lean pass."""
        last = f"blocks.{self.cfg.n_layers - 1}."
        upstream = hook is None or not hook.startswith((last, "ln_final")) or hook == last + "hook_resid_pre"
        return {"engine": True} if upstream else {}

    def run_with_cache(self, *model_args, return_cache_object: bool = True, **kwargs) -> tuple[Tensor, ActivationCache | dict[str, Tensor]]:
        """Output and every hooked activation, as a TransformerLens `ActivationCache` (a plain dict with
        `return_cache_object=False`); `names_filter` and the other options of TransformerLens apply."""
        out, cache = super().run_with_cache(*model_args, **kwargs)
        return out, NamedCache(cache, self) if return_cache_object else cache

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> Float[Tensor, " d_model"]:
        """Sum of the attention (and MLP) output biases before layer `layer` (its b_O too with
        mlp_input), as TransformerLens's `get_full_resid_decomposition` reads it."""
        bias = torch.zeros(self.cfg.d_model, device=self.W_U.device)
        for block in self.blocks[:layer]:
            bias = bias + block.attn.b_O + (block.mlp.b_out if include_mlp_biases else 0)
        return bias + self.blocks[layer].attn.b_O if mlp_input else bias

    def tokens_to_residual_directions(self, tokens: int | Int[Tensor, "..."]) -> Float[Tensor, "... d_model"]:
        """The unembedding direction of each token, W_U[:, token] (what `ActivationCache.logit_attrs` reads)."""
        return self.W_U[:, torch.as_tensor(tokens, device=self.W_U.device)].movedim(0, -1)

    # ---- weights -----------------------------------------------------------------------------
    @property
    def W_E(self) -> Float[Tensor, "n_rows d_model"]:
        """Token embedding; its last row is the CLS token when the readout is "cls"."""
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_positions d_model"]:
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> Float[Tensor, "d_model n_tokens"]:
        return self.embed.W_E[: self.cfg.n_tokens].T if self.cfg.tied else self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, " n_tokens"]:
        """The unembedding has no bias: zeros, as TransformerLens's b_U of a model without one."""
        return torch.zeros(self.cfg.n_tokens, device=self.embed.W_E.device, dtype=self.embed.W_E.dtype)

    # Every block's weights stacked over layers, as TransformerLens's HookedTransformer gives them:
    # new tensors (torch.stack), for reading; the parameters themselves live in `blocks.{l}`.
    def _stacked(self, module: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(block, module), name) for block in self.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stacked("attn", "W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stacked("attn", "W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stacked("attn", "W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stacked("attn", "W_O")

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stacked("attn", "b_Q")

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stacked("attn", "b_K")

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stacked("attn", "b_V")

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stacked("attn", "b_O")

    @property
    def W_in(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return self._stacked("mlp", "W_in")

    @property
    def b_in(self) -> Float[Tensor, "n_layers d_mlp"]:
        return self._stacked("mlp", "b_in")

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return self._stacked("mlp", "W_out")

    @property
    def b_out(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stacked("mlp", "b_out")

    def weights(self) -> dict[str, Tensor]:
        """The trained weights by `state_dict()` key (detached)."""
        return {name: value.detach() for name, value in self.named_parameters()}

    def load_weights(self, weights: dict[str, Tensor]) -> None:
        """Copy weights given by `state_dict()` key; the names and shapes must match the config exactly."""
        self.copy_weights(weights, transformer_shapes(self.cfg), lambda name: name)

