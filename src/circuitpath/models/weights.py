"""Every model's trained weights by name: their shapes and their initial values, from the config alone.

What training needs of a model without building it: the engine lays these weights out in flat rows
and initialises them here, so a training process never imports TransformerLens (whose import costs
seconds, `model.py` and `transformer.py` build the hooked models). The paper's model names its weights
by the contract (`W_E`, `W_Q`, ...; see DESIGN.md), the standard transformer by `state_dict()` key.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn

from circuitpath.config import MLP_STREAM_ROWS, ModelConfig


# ---- either model --------------------------------------------------------------------------------
def weight_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every trained weight, in contract order (W_U only when untied); the standard
    transformer's by `state_dict()` key."""
    if cfg.arch == "transformer":
        return transformer_shapes(cfg)
    d, h, v = cfg.d_model, cfg.d_mlp, cfg.n_tokens
    shapes = {
        "W_E": (v, d),
        "W_pos": (cfg.n_ctx, d),
        "W_Q": (d,),
        "W_V": (d, d),
        "W_in": (d, h),
        "b_in": (h,),
        "W_out": (h, d),
        "b_out": (d,),
    }
    if not cfg.tied:
        shapes["W_U"] = (d, v)
    return shapes  # type: ignore[return-value]


def init_weights(cfg: ModelConfig) -> dict[str, Tensor]:
    """Initial weights from `cfg.seed` alone, drawn as `cfg.init` says (see `config.INITS`)."""
    if cfg.arch == "transformer":
        return transformer_init(cfg)
    return shared_stream_weights(cfg) if cfg.init == "shared_stream" else ordered_weights(cfg)


def ordered_weights(cfg: ModelConfig) -> dict[str, Tensor]:
    """N(0, 1) embeddings, U(±1/sqrt(fan_in)) elsewhere, each weight in contract order from one generator."""
    generator = torch.Generator().manual_seed(cfg.seed)
    weights = {}
    for name, shape in weight_shapes(cfg).items():
        if name in ("W_E", "W_pos"):
            weights[name] = torch.randn(shape, generator=generator)
        else:
            fan_in = cfg.d_mlp if name in ("W_out", "b_out") else cfg.d_model
            bound = 1.0 / math.sqrt(fan_in)
            weights[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return weights


def shared_stream_weights(cfg: ModelConfig) -> dict[str, Tensor]:
    """The initial weights of projects/visualization/train.py for seed `cfg.seed`, bit for bit.

    There (lines 116-163): `torch.manual_seed(seed)`, then one `torch.rand(MAX_FFN_DIM, 2d + 2)` draw
    cut to its first h rows and mapped to [-1, 1) (so a smaller h keeps the rows of a larger one),
    then the model's modules built in order with PyTorch's own initialisations, then the MLP overwritten
    from the draw by `set_parameters` (src/factorization/models/softmax_model.py, lines 151-178).
    """
    d, h = cfg.d_model, cfg.d_mlp
    generator = torch.Generator().manual_seed(cfg.seed)
    stream = torch.rand(MLP_STREAM_ROWS, 2 * d + 2, generator=generator)[:h] * 2 - 1
    modules = _pytorch_modules(cfg, generator)
    weights = {"W_E": modules["token_emb"], "W_pos": modules["pos_emb"], "W_Q": modules["query"][0],
               "W_V": modules["value"].T, **_mlp_from_stream(stream, d, h)}
    if not cfg.tied:
        weights["W_U"] = modules["output"].T  # the output layer's own draw, which the paper's tie discards
    return weights


def _mlp_from_stream(stream: Float[Tensor, "d_mlp two_d_plus_2"], d: int, h: int) -> dict[str, Tensor]:
    """`set_parameters`: columns [0, d) are fc1's weight, [d, 2d) fc2's, 2d fc1's bias, and the first d
    rows of column 2d + 1 fc2's bias; fc1's scaled by 1/sqrt(d), fc2's by 1/sqrt(h). Our W = their W.T."""
    scale_in, scale_out = 1 / math.sqrt(d), 1 / math.sqrt(h)
    return {"W_in": (stream[:, :d] * scale_in).T.contiguous(), "b_in": stream[:, 2 * d] * scale_in,
            "W_out": stream[:, d : 2 * d] * scale_out, "b_out": stream[:d, 2 * d + 1] * scale_out}


def _pytorch_modules(cfg: ModelConfig, generator: torch.Generator) -> dict[str, Tensor]:
    """The draws of the paper's `Model.__init__`, in its order (nn.Embedding: N(0, 1); nn.Linear:
    weight [out, in] and bias U(±1/sqrt(in))); fc1 and fc2 are drawn only to keep the stream in step."""
    d, h, v = cfg.d_model, cfg.d_mlp, cfg.n_tokens
    drawn = {"token_emb": nn.init.normal_(torch.empty(v, d), generator=generator)}
    drawn["pos_emb"] = nn.init.normal_(torch.empty(cfg.n_ctx, d), generator=generator)
    drawn["query"] = _linear(1, d, generator)
    drawn["value"] = _linear(d, d, generator)
    _linear(h, d, generator, bias=True)  # fc1, then overwritten by set_parameters
    _linear(d, h, generator, bias=True)  # fc2, likewise
    drawn["output"] = _linear(v, d, generator)
    return drawn


def _linear(fan_out: int, fan_in: int, generator: torch.Generator, bias: bool = False) -> Tensor:
    """An nn.Linear's weight [fan_out, fan_in] as `reset_parameters` draws it (its bias drawn, then dropped)."""
    weight = nn.init.kaiming_uniform_(torch.empty(fan_out, fan_in), a=math.sqrt(5), generator=generator)
    if bias:
        nn.init.uniform_(torch.empty(fan_out), -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)
    return weight



# ---- the standard transformer --------------------------------------------------------------------
def n_positions(cfg: ModelConfig) -> int:
    """Positions the model sees: the task's n_ctx, and one more for the CLS token."""
    return cfg.n_ctx + (cfg.readout == "cls")


def readout_position(cfg: ModelConfig) -> int:
    """The position whose final residual gives the logits."""
    if cfg.readout == "cls":
        return cfg.n_ctx
    return cfg.n_ctx - 1 if cfg.readout == "last" else int(cfg.readout)


def transformer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every trained weight by its `state_dict()` key, in the model's order."""
    d, h, heads, e = cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.d_head
    rows = cfg.n_tokens + (cfg.readout == "cls")  # the CLS token is the last embedding row
    shapes: dict[str, tuple[int, ...]] = {"embed.W_E": (rows, d), "pos_embed.W_pos": (n_positions(cfg), d)}
    for layer in range(cfg.n_layers):
        at = f"blocks.{layer}."
        shapes.update(_norm_shapes(cfg, at + "ln1"))
        for m in "QKV":
            shapes[f"{at}attn.W_{m}"] = (heads, d, e)
        for m in "QKV":
            shapes[f"{at}attn.b_{m}"] = (heads, e)
        shapes.update({f"{at}attn.W_O": (heads, e, d), f"{at}attn.b_O": (d,)})
        shapes.update(_norm_shapes(cfg, at + "ln2"))
        shapes.update({f"{at}mlp.W_in": (d, h), f"{at}mlp.b_in": (h,), f"{at}mlp.W_out": (h, d), f"{at}mlp.b_out": (d,)})
    shapes.update(_norm_shapes(cfg, "ln_final"))
    if not cfg.tied:
        shapes["unembed.W_U"] = (d, cfg.n_tokens)
    return shapes


def _norm_shapes(cfg: ModelConfig, name: str) -> dict[str, tuple[int, ...]]:
    shapes = {f"{name}.w": (cfg.d_model,)}
    if cfg.norm == "layer":
        shapes[f"{name}.b"] = (cfg.d_model,)
    return shapes


def transformer_init(cfg: ModelConfig) -> dict[str, Tensor]:
    """Initial weights from `cfg.seed` alone, each in order from one generator: N(0, 1) embeddings,
    norm gains 1 and biases 0, U(+-1/sqrt(fan_in)) elsewhere (fan_in d_mlp for W_out, b_out; else d_model).
    `cfg.init == "gpt2"`: as GPT-2 and TransformerLens draw them (`gpt2_init`)."""
    if cfg.init == "gpt2":
        return gpt2_init(cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    weights = {}
    for name, shape in transformer_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[1]
        if leaf in ("W_E", "W_pos"):
            weights[name] = torch.randn(shape, generator=generator)
        elif leaf in ("w", "b"):
            weights[name] = torch.ones(shape) if leaf == "w" else torch.zeros(shape)
        else:
            bound = 1.0 / math.sqrt(cfg.d_mlp if leaf in ("W_out", "b_out") else cfg.d_model)
            weights[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return weights


#: The standard deviation of GPT-2's initial weights (TransformerLens `initializer_range`).
GPT2_STD = 0.02


def gpt2_init(cfg: ModelConfig) -> dict[str, Tensor]:
    """GPT-2's initialisation, each weight in order from one generator: embeddings, positions and
    matrices (W_Q, W_K, W_V, W_in, an untied W_U) N(0, 0.02); the projections that write into the
    residual stream (W_O, W_out) N(0, 0.02 / sqrt(2 n_layers)); biases 0, norm gains 1."""
    generator = torch.Generator().manual_seed(cfg.seed)
    weights = {}
    for name, shape in transformer_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[1]
        if leaf in ("w", "b") or leaf.startswith("b_"):
            weights[name] = torch.ones(shape) if leaf == "w" else torch.zeros(shape)
        else:
            std = GPT2_STD / math.sqrt(2 * cfg.n_layers) if leaf in ("W_O", "W_out") else GPT2_STD
            weights[name] = torch.randn(shape, generator=generator) * std
    return weights


def root_mean_square(x: Tensor) -> Tensor:
    """sqrt(mean(x**2)) over the last axis, as |x| / sqrt(d): one reduction instead of four passes
    (2-8x faster; equal to the literal form within 1e-6)."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True) * x.shape[-1] ** -0.5
