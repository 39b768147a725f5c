"""Typed configuration: the task, the model, the training phases, and a run made of all three.

Every dataclass checks itself in `__post_init__` and raises `ConfigError` (a `ValueError`) naming the
bad value. `from_dict` refuses unknown keys instead of dropping them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, TypeVar

from circuitpath.errors import ConfigError

T = TypeVar("T")

#: Largest p**T for which the test set is every sequence not in the training set.
ENUMERATE_LIMIT = 1 << 16

#: What the residual connection around the MLP carries (equation 4: z_O = r + MLP(RMS(z_A))).
RESIDUALS = {
    "attn_out": "r = z_A, a standard pre-norm block (the paper's code, which drew its figures)",
    "normalized": "r = RMS(z_A), the paper's equation 4 as printed",
}
#: The residual of runs saved before the option existed.
LEGACY_RESIDUAL = "normalized"

#: How the initial weights are drawn from `ModelConfig.seed` (`weights.init_weights`).
INITS = {
    "ordered": "each weight in contract order from one generator: N(0, 1) embeddings, U(+-1/sqrt(fan_in)) elsewhere",
    "shared_stream": "as the paper's d = 2 pipeline (projects/visualization/train.py): the MLP from the first h "
                     "rows of one torch.rand(MLP_STREAM_ROWS, 2d + 2) draw, then PyTorch's module initialisations",
    "gpt2": "as GPT-2 and TransformerLens draw a transformer (arch transformer only): embeddings, positions and "
            "matrices N(0, 0.02), the residual-output projections (W_O, W_out) N(0, 0.02 / sqrt(2 n_layers)), "
            "biases 0, norm gains 1",
}
#: Rows of the one draw the "shared_stream" MLP is sliced from (train.py, `MAX_FFN_DIM = 2048`): h <= this.
MLP_STREAM_ROWS = 2048

#: The models a run can train (`ModelConfig.arch`).
ARCHS = {
    "cross_attention": "the paper's one-layer model: one learned query cross-attends over the tokens (model.py)",
    "transformer": "a standard pre-norm transformer: n_layers blocks of n_heads-head self-attention and an MLP, "
                   "read out at one position (transformer.py)",
}
#: Where the standard transformer reads its prediction (`ModelConfig.readout`), besides a position 0..n_ctx-1.
READOUTS = {
    "cls": "a learned CLS token appended after the sequence (one more embedding row and position)",
    "last": "the last position of the sequence",
}
#: The standard transformer's norm before attention, MLP and unembedding (`ModelConfig.norm`).
NORMS = {"rms": "RMSNorm with a learned gain", "layer": "LayerNorm with a learned gain and bias"}
#: ModelConfig fields that only the standard transformer reads (the paper's model keeps their defaults).
TRANSFORMER_FIELDS = ("n_layers", "n_heads", "readout", "norm")


#: Which weights AdamW's decoupled weight decay shrinks (`Phase.decay`).
DECAYS = {
    "matrices": "the matrices only (W_* of two or more axes per run: attention, MLP and unembedding), not norms, "
                "biases, embeddings or positions, as GPT-2 and nanoGPT train",
    "all": "every weight, embeddings, positions, norms and biases too",
}
#: The optimiser recipe of a phase and its defaults: plain Adam (torch.optim.Adam's betas, no decay,
#: no warm-up, no clipping). A phase at these values writes none of them to run.json.
RECIPE_DEFAULTS = {"weight_decay": 0.0, "betas": (0.9, 0.999), "warmup": 0, "clip": None, "decay": "matrices"}


#: Which positions a task sums (`TaskConfig.positions`), besides an explicit tuple of positions.
POSITIONS = {
    "first": "the first k positions 0..k-1 (the paper's task)",
    "random": "k positions drawn from the task's seed (`TaskConfig.position_order`)",
}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_whole(value: Any) -> bool:
    """An integer as the analyses take one: Python's or numpy's, not a bool, float or string (configs, which are
    written to JSON, take Python's only)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int) -> None:
    _check(_is_int(value), f"{name} must be an integer, got {value!r}")
    _check(value >= low, f"{name} must be >= {low}, got {value}")


@dataclass(frozen=True)
class TaskConfig:
    """Sparse modular addition: y = sum of the tokens at the k relevant positions, mod p, over sequences of
    length n_ctx. The paper's task sums the first k; sparse parity is the case p = 2.

    The modulus p belongs to each training phase (`Phase.p`), and so may k (`Phase.k`), so one task serves a
    curriculum over either. `relevant_positions(phase)` is the truth every analysis scores against.
    """

    n_ctx: int = 12
    """T, the sequence length."""
    k: int = 5
    """Number of relevant positions summed (a phase may set its own, `Phase.k`); the other T - k are spurious."""
    n_train: int = 2048
    """Training sequences per phase."""
    n_test: int = 2048
    """Test sequences per phase when p**T is too large to enumerate (otherwise: all the rest)."""
    seed: int = 0
    """Seed of the train/test draw and of random positions; a phase's split depends on (seed, p, k) only."""
    with_replacement: bool = False
    """False: distinct sequences, train and test disjoint. True: n_train then n_test sequences drawn
    uniformly with replacement from `numpy.random.default_rng(seed)`, so rows may repeat and the two
    sets overlap (the paper's d = 2 pipeline, src/factorization/data/modular.py)."""
    positions: str | tuple[int, ...] = "first"
    """Which positions are relevant: "first" (0..k-1), "random" (drawn from `seed`, n_ctx and k) or an explicit
    tuple of k distinct positions in 0..n_ctx-1. See `POSITIONS` and `relevant_positions`."""

    def __post_init__(self) -> None:
        _check_int("n_ctx", self.n_ctx, 1)
        _check_int("k", self.k, 1)
        self._check_positions()
        _check(self.k <= self.n_ctx, f"k must be <= n_ctx ({self.n_ctx}), got {self.k}")
        _check_int("n_train", self.n_train, 1)
        _check_int("n_test", self.n_test, 1)
        _check_int("seed", self.seed, 0)
        _check(isinstance(self.with_replacement, bool),
               f"with_replacement must be true or false, got {self.with_replacement!r}")

    def _check_positions(self) -> None:
        """A name of `POSITIONS`, or k distinct positions of the sequence (a list read from JSON becomes a tuple)."""
        if not isinstance(self.positions, (list, tuple)):
            _check(self.positions in POSITIONS,
                   f"positions must be one of {', '.join(POSITIONS)} or a list of positions, got {self.positions!r}")
            return
        object.__setattr__(self, "positions", tuple(self.positions))
        given = self.positions
        _check(len(given) <= self.n_ctx,
               f"positions names {len(given)} positions, more than the sequence's n_ctx = {self.n_ctx}: {list(given)}")
        for t in given:
            _check(_is_int(t) and 0 <= t < self.n_ctx, f"positions must lie in 0..{self.n_ctx - 1}, got {t!r}")
        _check(len(set(given)) == len(given), f"positions must be distinct, got {list(given)}")
        _check(len(given) == self.k, f"positions names {len(given)} positions but k = {self.k}: {list(given)}")

    def position_order(self) -> tuple[int, ...]:
        """The positions in the order phases take them: a phase summing k' uses the first k' of these.

        "random" sorts 0..n_ctx-1 by a SHA-256 of (seed, n_ctx, position): a fixed function of the seed,
        the same on every platform and version, so the truth of a saved run can always be recomputed.
        """
        if self.positions == "first":
            return tuple(range(self.n_ctx))
        if self.positions == "random":
            return tuple(sorted(range(self.n_ctx), key=lambda t: _digest(self.seed, self.n_ctx, t)))
        return self.positions  # type: ignore[return-value]

    def phase_k(self, phase: Phase | None = None) -> int:
        """The number of positions summed in `phase` (the task's k when the phase does not set one)."""
        _check(phase is None or isinstance(phase, Phase), "a task's phase is a Phase, e.g. run.config.train.phases[i] "
               f"(run.data and run.phase_at take the index i), got {phase!r}")
        return self.k if phase is None or phase.k is None else phase.k

    def relevant_positions(self, phase: Phase | None = None) -> tuple[int, ...]:
        """The truth: the positions summed in `phase` (default: the task's k), in increasing order."""
        return self.summed_positions(self.phase_k(phase))

    def summed_positions(self, k: int) -> tuple[int, ...]:
        """The positions a phase summing k uses: the first k of `position_order`, in increasing order."""
        order = self.position_order()
        _check(_is_int(k) and 1 <= k <= len(order), f"k must be in 1..{len(order)} (the positions this task can sum), got {k!r}")
        return tuple(sorted(order[:k]))

    def spurious_positions(self, phase: Phase | None = None) -> tuple[int, ...]:
        """The positions that do not enter the target in `phase`, in increasing order."""
        relevant = set(self.relevant_positions(phase))
        return tuple(t for t in range(self.n_ctx) if t not in relevant)

    def check_phase(self, phase: Phase) -> None:
        """Raise ConfigError unless the task can be drawn at the phase's modulus and its k."""
        self.check_modulus(phase.p)
        if phase.k is not None:
            order = self.position_order()
            _check(phase.k <= len(order), f"phase k must be <= {len(order)} (the positions this task can sum), got {phase.k}")

    def check_modulus(self, p: int) -> None:
        """Raise ConfigError unless p admits n_train training sequences and a non-empty test set."""
        _check_int("p", p, 2)
        if self.with_replacement:
            return  # any number of sequences can be drawn
        total = p**self.n_ctx
        _check(
            self.n_train < total,
            f"n_train must be < p**n_ctx = {p}**{self.n_ctx} = {total} (a test set must remain), "
            f"got {self.n_train}",
        )


def _digest(seed: int, n_ctx: int, position: int) -> bytes:
    return hashlib.sha256(f"relevant positions {seed} {n_ctx} {position}".encode()).digest()


@dataclass(frozen=True)
class ModelConfig:
    """The one-layer cross-attention transformer of the paper (d = 32, h = 4d), or a standard
    transformer (`arch="transformer"`) with the fields after `init`."""

    d_model: int = 32
    """Width d of the residual stream."""
    d_mlp: int | None = None
    """Hidden width h of the MLP; None means 4 * d_model."""
    n_tokens: int = 4
    """Rows of the embedding table; may exceed the task's p so a curriculum keeps one model."""
    n_ctx: int = 12
    """Number of learnable positions (the task's T)."""
    tied: bool = True
    """Unembedding tied to the embedding (W_U = W_E.T), as in the paper's code."""
    residual: str = "attn_out"
    """What the MLP's residual connection carries: "attn_out" (z_A, the paper's code) or
    "normalized" (RMS(z_A), the text's equation 4). See `RESIDUALS`."""
    eps: float = 1e-5
    """RMS(x) = x / (sqrt(mean(x**2)) + eps)."""
    seed: int = 0
    """Seed of the initial weights."""
    init: str = "ordered"
    """How the initial weights are drawn from `seed`: "ordered", "shared_stream" (the paper's d = 2
    pipeline, which needs d_model <= d_mlp <= MLP_STREAM_ROWS) or, for the transformer, "gpt2". See `INITS`."""
    arch: str = "cross_attention"
    """Which model: "cross_attention" (the paper's) or "transformer" (a standard one). See `ARCHS`.
    The fields below apply to the transformer; the paper's model keeps their defaults."""
    n_layers: int = 1
    """Transformer blocks (the paper's model has one)."""
    n_heads: int = 1
    """Attention heads per block, dividing d_model (the paper's model has one: its single query)."""
    readout: str | int = "cls"
    """Where the transformer's logits are read: "cls", "last" or a position 0..n_ctx-1. See `READOUTS`."""
    norm: str = "rms"
    """The transformer's pre-norm: "rms" or "layer". See `NORMS`."""

    def __post_init__(self) -> None:
        _check_int("d_model", self.d_model, 1)
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        _check_int("d_mlp", self.d_mlp, 1)
        _check_int("n_tokens", self.n_tokens, 2)
        _check_int("n_ctx", self.n_ctx, 1)
        _check(isinstance(self.tied, bool), f"tied must be true or false, got {self.tied!r}")
        _check(self.residual in RESIDUALS,
               f"residual must be one of {', '.join(RESIDUALS)}, got {self.residual!r}")
        _check(
            isinstance(self.eps, (int, float)) and not isinstance(self.eps, bool) and self.eps > 0,
            f"eps must be a positive number, got {self.eps!r}",
        )
        _check_int("seed", self.seed, 0)
        _check(isinstance(self.init, str) and self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.init == "shared_stream":
            self._check_stream()
        _check(self.init != "gpt2" or self.arch == "transformer", "init gpt2 applies to arch transformer, got arch "
               f"{self.arch!r}")
        _check(isinstance(self.arch, str) and self.arch in ARCHS, f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.arch == "transformer":
            self._check_transformer()
        else:
            self._check_paper_fields()

    def _check_transformer(self) -> None:
        _check_int("n_layers", self.n_layers, 1)
        _check_int("n_heads", self.n_heads, 1)
        _check(self.d_model % self.n_heads == 0,
               f"n_heads must divide d_model ({self.d_model}), got {self.n_heads}")
        if _is_int(self.readout):
            _check(0 <= self.readout < self.n_ctx,
                   f"readout position must be in 0..{self.n_ctx - 1} (the sequence has n_ctx = {self.n_ctx} positions), got {self.readout}")
        else:
            _check(self.readout in READOUTS,
                   f"readout must be one of {', '.join(READOUTS)} or a position, got {self.readout!r}")
        _check(self.norm in NORMS, f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        _check(self.residual == "attn_out", f"residual must be attn_out with arch transformer, got {self.residual!r}")
        _check(self.init in ("ordered", "gpt2"), f"init must be ordered or gpt2 with arch transformer, got {self.init!r}")

    def _check_paper_fields(self) -> None:
        """The transformer's fields keep their defaults: the paper's model has one layer, one head, one query."""
        for name in TRANSFORMER_FIELDS:
            default = type(self).__dataclass_fields__[name].default
            _check(getattr(self, name) == default and type(getattr(self, name)) is type(default),
                   f"{name} applies to arch transformer (the paper's model keeps {default!r}), got {getattr(self, name)!r}")

    def _check_stream(self) -> None:
        """The shared draw has MLP_STREAM_ROWS rows, and b_out takes its first d_model of the h kept."""
        _check(self.d_mlp <= MLP_STREAM_ROWS,
               f"d_mlp must be <= {MLP_STREAM_ROWS} with init shared_stream, got {self.d_mlp}")
        _check(self.d_mlp >= self.d_model,
               f"d_mlp must be >= d_model ({self.d_model}) with init shared_stream, got {self.d_mlp}")

    # ---- what TransformerLens's ActivationCache reads from a model's config ----------------------
    @property
    def d_head(self) -> int:
        """Width of one head (d_model for the paper's single query)."""
        return self.d_model // self.n_heads

    @property
    def d_vocab(self) -> int:
        return self.n_tokens

    @property
    def attn_only(self) -> bool:
        return False

    @property
    def act_fn(self) -> str:
        return "gelu"

    @property
    def normalization_type(self) -> str:
        """TransformerLens's name of the norm: the paper's RMS has no learned gain ("RMSPre")."""
        if self.arch == "transformer":
            return "RMS" if self.norm == "rms" else "LN"
        return "RMSPre"

    @property
    def layers_block_type(self) -> None:
        return None  # every layer is an attention block (TransformerLens reads this for SSM layers)

    def to_shape(self) -> tuple:
        """What two models must share for their weights to be mixed or compared (all but seed and init)."""
        return (self.d_model, self.d_mlp, self.n_tokens, self.n_ctx, self.tied, self.residual, self.eps,
                self.arch, self.n_layers, self.n_heads, self.readout, self.norm)


@dataclass(frozen=True)
class Phase:
    """One stretch of training on one modulus (and one k). A curriculum is several phases in a row."""

    p: int
    """Modulus of the task during this phase."""
    steps: int
    """Optimiser steps in this phase."""
    lr: float
    """Adam learning rate (the optimiser state restarts at each phase)."""
    batch_size: int | None = None
    """Sequences per step, drawn without replacement each step; None means full batch."""
    k: int | None = None
    """Relevant positions summed in this phase (a curriculum over k): the first k of the task's
    `position_order`; None means the task's k."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW, as torch.optim.AdamW): before each Adam update the decayed weights
    (`decay`) are multiplied by 1 - lr_t * weight_decay, lr_t the step's (warmed-up) rate. 0: plain Adam."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (beta1, beta2), each in [0, 1)."""
    warmup: int = 0
    """Linear warm-up over the phase's first steps: step t (0-based within the phase) takes
    lr * min(1, (t + 1) / warmup), so the first step takes lr / warmup; 0: none. At most `steps`."""
    clip: float | None = None
    """Clip each run's gradient to this global norm before the update, as torch.nn.utils.clip_grad_norm_
    does on that run's own gradient (scaled by clip / (norm + 1e-6) when larger); None: no clipping."""
    decay: str = "matrices"
    """Which weights `weight_decay` shrinks: "matrices" or "all". See `DECAYS`."""

    def __post_init__(self) -> None:
        _check_int("p", self.p, 2)
        _check_int("steps", self.steps, 1)
        _check(
            isinstance(self.lr, (int, float))
            and not isinstance(self.lr, bool)
            and math.isfinite(self.lr)
            and self.lr > 0,
            f"lr must be a positive number, got {self.lr!r}",
        )
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 1)
        if self.k is not None:
            _check_int("k", self.k, 1)
        self._check_recipe()

    def _check_recipe(self) -> None:
        _check(_is_number(self.weight_decay) and self.weight_decay >= 0,
               f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        _check(isinstance(self.betas, (list, tuple)) and len(self.betas) == 2,
               f"betas must be two numbers (beta1, beta2), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(self.betas))  # a list read from JSON becomes a tuple
        for beta in self.betas:
            _check(_is_number(beta) and 0 <= beta < 1, f"betas must each lie in [0, 1), got {beta!r}")
        _check_int("warmup", self.warmup, 0)
        _check(self.clip is None or (_is_number(self.clip) and self.clip > 0),
               f"clip must be a number > 0 (or none), got {self.clip!r}")
        _check(self.decay in DECAYS, f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")

    def check_warmup(self) -> Phase:
        """Raise ConfigError when the warm-up outlasts the phase (a phase cut short by a branch may)."""
        _check(self.warmup <= self.steps, f"warmup must be <= the phase's steps ({self.steps}), got {self.warmup}")
        return self

    @property
    def recipe(self) -> dict[str, Any]:
        """The optimiser recipe: weight_decay, betas, warmup, clip and decay."""
        return {key: getattr(self, key) for key in RECIPE_DEFAULTS}

    @property
    def changed_recipe(self) -> dict[str, Any]:
        """The recipe's fields that differ from plain Adam's."""
        return {key: value for key, value in self.recipe.items() if value != RECIPE_DEFAULTS[key]}

    @property
    def plain(self) -> bool:
        """Whether this phase trains with plain Adam (the default recipe)."""
        return self.recipe == RECIPE_DEFAULTS

    def to_dict(self) -> dict[str, Any]:
        """The phase as run.json holds it: recipe keys only where they differ from plain Adam."""
        data = {key: value for key, value in dataclasses.asdict(self).items() if key not in RECIPE_DEFAULTS}
        data |= self.changed_recipe
        if "betas" in data:
            data["betas"] = list(data["betas"])
        return data

    def to_text(self) -> str:
        """The phase string `parse` reads back to this phase, e.g. `2:400:0.001:128:wd=0.1:betas=0.9/0.98`."""
        parts = [str(self.p), str(self.steps), repr(float(self.lr))]
        parts += [] if self.batch_size is None else [str(self.batch_size)]
        parts += [] if self.k is None else [f"k={self.k}"]
        keys = {field: key for key, field in PHASE_KEYS.items()}
        for field, value in self.changed_recipe.items():
            text = "/".join(repr(float(b)) for b in value) if field == "betas" else repr(value).strip("'")
            parts.append(f"{keys[field]}={text}")
        return ":".join(parts)

    @classmethod
    def parse(cls, text: str, **defaults: Any) -> Phase:
        """Parse `p:steps:lr[:batch_size][:key=value...]`, e.g. `4:7000:1e-2` or `2:3000:1e-3:k=3`.

        Keys: `k=K`, and the recipe's `wd=`, `betas=B1/B2`, `warmup=`, `clip=` (a number or `none`) and
        `decay=` (matrices|all), e.g. `2:400:1e-3:128:wd=0.1:betas=0.9/0.98:warmup=40`. `defaults` give the
        recipe of a key left out (the command line's flags); otherwise plain Adam's."""
        parts = text.strip().split(":")
        keyed = [part.split("=", 1) for part in parts if "=" in part]
        parts = [part for part in parts if "=" not in part]
        form = "p:steps:lr[:batch_size][:key=value...]"
        _check(len(parts) in (3, 4), f"a phase is {form}, got {text!r}")
        names = [name for name, _ in keyed]
        for name in names:
            _check(name in PHASE_KEYS, f"a phase's keys are {', '.join(PHASE_KEYS)}, got {name!r} in {text!r}")
        _check(len(set(names)) == len(names), f"a phase's key is given twice in {text!r}")
        try:
            p, steps, lr = int(parts[0]), int(parts[1]), float(parts[2])
            batch = int(parts[3]) if len(parts) == 4 else None
            options = {PHASE_KEYS[name]: _PARSE[name](value) for name, value in keyed}
        except ValueError:
            raise ConfigError(f"a phase is {form} with numbers, got {text!r}") from None
        return cls(p=p, steps=steps, lr=lr, batch_size=batch, **{**defaults, **options}).check_warmup()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_betas(text: str) -> tuple[float, ...]:
    return tuple(float(b) for b in text.replace(",", "/").split("/"))


#: The keys of a phase string and the fields they set.
PHASE_KEYS = {"k": "k", "wd": "weight_decay", "betas": "betas", "warmup": "warmup", "clip": "clip", "decay": "decay"}
_PARSE = {"k": int, "wd": float, "betas": _parse_betas, "warmup": int,
          "clip": lambda text: None if text.lower() == "none" else float(text), "decay": str}


def parse_phases(text: str, **defaults: Any) -> tuple[Phase, ...]:
    """Parse a comma-separated list of phases, e.g. `2:3000:1e-3,4:7000:1e-2`; `defaults` as in `Phase.parse`."""
    items = text.split(",")
    _check(all(item.strip() for item in items), f"an empty phase in {text!r}: phases are separated by single commas")
    return tuple(Phase.parse(item, **defaults) for item in items)


@dataclass(frozen=True)
class TrainConfig:
    """The phases of one run and how often it is measured and saved."""

    phases: tuple[Phase, ...] = (Phase(p=4, steps=10_000, lr=1e-2),)
    """Training phases, in order; the model and step counter carry over between them."""
    log_every: int = 50
    """Steps between two metric lines (checkpoint steps are always logged too)."""
    checkpoint_every: int = 250
    """Steps between two regular checkpoints, after the dense early ones."""
    dense_checkpoints: int = 24
    """Log-spaced checkpoints within the first `checkpoint_every` steps, for early dynamics."""
    extra_checkpoints: tuple[int, ...] = ()
    """Further steps to checkpoint (and log), e.g. every update of the first epochs for a flow movie."""
    seed: int = 0
    """Seed of mini-batch sampling: the order of the training set in each epoch (unused with full batches)."""

    def __post_init__(self) -> None:
        phases = tuple(
            Phase(**p) if isinstance(p, dict) else p for p in self.phases  # type: ignore[arg-type]
        )
        object.__setattr__(self, "phases", phases)
        _check(len(phases) > 0, "phases must hold at least one phase")
        for phase in phases:
            _check(isinstance(phase, Phase), f"phases must be Phase objects, got {phase!r}")
        _check_int("log_every", self.log_every, 1)
        _check_int("checkpoint_every", self.checkpoint_every, 1)
        _check_int("dense_checkpoints", self.dense_checkpoints, 0)
        _check(isinstance(self.extra_checkpoints, (list, tuple)),
               f"extra_checkpoints must be a list of steps, got {self.extra_checkpoints!r}")
        for step in self.extra_checkpoints:
            _check_int("extra_checkpoints[]", step, 0)
            _check(step <= self.total_steps, f"extra checkpoint {step} is past the last step {self.total_steps}")
        object.__setattr__(self, "extra_checkpoints", tuple(sorted(set(self.extra_checkpoints))))
        _check_int("seed", self.seed, 0)

    @property
    def total_steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    def phase_starts(self) -> list[int]:
        """Global step at which each phase begins."""
        starts, step = [], 0
        for phase in self.phases:
            starts.append(step)
            step += phase.steps
        return starts


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: task, model and training."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(
            self.model.n_ctx == self.task.n_ctx,
            f"model.n_ctx ({self.model.n_ctx}) must equal task.n_ctx ({self.task.n_ctx})",
        )
        for phase in self.train.phases:
            _check(
                phase.p <= self.model.n_tokens,
                f"phase p = {phase.p} exceeds the model's n_tokens = {self.model.n_tokens}",
            )
            self.task.check_phase(phase)
            if phase.batch_size is not None:
                _check(
                    phase.batch_size <= self.task.n_train,
                    f"batch_size must be <= n_train ({self.task.n_train}), got {phase.batch_size}",
                )

    def to_dict(self) -> dict[str, Any]:
        """As run.json holds it: a phase's recipe keys only where they differ from plain Adam (`Phase.to_dict`)."""
        data = dataclasses.asdict(self)
        data["train"]["phases"] = [phase.to_dict() for phase in self.train.phases]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], saved: bool = False) -> RunConfig:
        """Build from a mapping; `saved=True` for a config read from a run directory, where a model
        section written before `ModelConfig.residual` existed means the residual of that time."""
        _check(isinstance(data, dict), f"a run config must be a mapping, got {type(data).__name__}")
        _check_keys(data, {"task", "model", "train"}, "run config")
        train = dict(data.get("train", {}))
        if "phases" in train:
            _check(isinstance(train["phases"], (list, tuple)), f"train.phases must be a list, got {train['phases']!r}")
            train["phases"] = tuple(from_dict(Phase, p, "train.phases[]") for p in train["phases"])
        return cls(
            task=from_dict(TaskConfig, data.get("task", {}), "task"),
            model=from_dict(ModelConfig, saved_model(data.get("model", {})) if saved else data.get("model", {}), "model"),
            train=from_dict(TrainConfig, train, "train"),
        )


def saved_model(data: Any) -> Any:
    """A model config read from disk, with the residual of its time when it predates the option."""
    if isinstance(data, dict) and "residual" not in data:
        return {**data, "residual": LEGACY_RESIDUAL}
    return data


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where} (valid: {', '.join(sorted(allowed))})")


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, refusing unknown keys."""
    _check(isinstance(data, dict), f"{where} must be a mapping, got {data!r}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    _check_keys(data, names, where)
    try:
        return cls(**data)
    except TypeError as error:  # e.g. a required field is missing
        raise ConfigError(f"{where}: {error}") from None
