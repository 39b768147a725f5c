"""The flags several commands share, and the configs they make: task, model, recipe, checkpoint."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from circuitpath.config import ARCHS, INITS, NORMS, RESIDUALS, ModelConfig, TaskConfig
from circuitpath.errors import ConfigError


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--force", action="store_true", help="replace existing runs at the output paths")


def add_task_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-ctx", "-T", type=int, help="sequence length T (default 12)")
    parser.add_argument("--n-train", type=int, help="training sequences (default 2048)")
    parser.add_argument("--positions", choices=("first", "random"),
                        help="relevant positions: first (0..k-1, default) or random (drawn from each seed)")
    add_size_flags(parser)
    add_residual_flag(parser)


def add_size_flags(parser) -> None:
    parser.add_argument("--d-model", type=int, help="width d (default 32)")
    parser.add_argument("--d-mlp", type=int, help="MLP width h (default 4 x d-model, also when --d-model is given)")


def task_from_flags(args: argparse.Namespace) -> TaskConfig:
    given = (("n_ctx", args.n_ctx), ("n_train", args.n_train), ("positions", getattr(args, "positions", None)))
    return TaskConfig(**{k: v for k, v in given if v is not None})


def add_residual_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--residual", choices=sorted(RESIDUALS), default=None,
                        help="what the MLP's residual connection carries: attn_out = z_A, the paper's code "
                        "(default); normalized = RMS(z_A), the paper's equation 4")


def _readout(text: str) -> str | int:
    """`--readout`: a position when it is a whole number, else a name (checked by ModelConfig)."""
    return int(text) if text.strip().lstrip("-").isdigit() else text


def add_arch_flags(parser) -> None:
    """--model, and the standard transformer's --n-layers, --n-heads, --readout and --norm."""
    parser.add_argument("--model", choices=tuple(ARCHS),
                        help="cross_attention (the paper's, default) or transformer (a standard one)")
    parser.add_argument("--n-layers", type=int, help="transformer blocks (--model transformer; default 1)")
    parser.add_argument("--n-heads", type=int, help="attention heads, dividing d-model (--model transformer; default 1)")
    parser.add_argument("--readout", type=_readout, help="where the transformer reads its logits: cls (a CLS token "
                        "appended, default), last, or a position 0..T-1")
    parser.add_argument("--norm", choices=tuple(NORMS), help="the transformer's pre-norm: rms (default) or layer")


def _betas(text: str) -> tuple[float, float]:
    """`--betas B1,B2`: two numbers in [0, 1)."""
    try:
        betas = tuple(float(b) for b in text.replace("/", ",").split(","))
    except ValueError:
        betas = ()
    if len(betas) != 2:
        raise argparse.ArgumentTypeError(f"takes two numbers B1,B2, got {text!r}")
    if not all(0 <= b < 1 for b in betas):
        raise argparse.ArgumentTypeError(f"each beta must lie in [0, 1), got {text!r}")
    return betas


def number(kind: type, above: float, *, strictly: bool = False):
    """An argparse type: a `kind` number >= `above` (> with `strictly`), else one line naming the value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"takes a finite number, got {text!r}")
        if value < above or (strictly and value == above):
            raise argparse.ArgumentTypeError(f"must be {'>' if strictly else '>='} {above:g}, got {text}")
        return value
    return parse


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """The optimiser recipe of every phase (a phase string's keys override it) and the initialisation."""
    group = parser.add_argument_group("optimiser recipe (every phase; a phase's wd=, betas=B1/B2, warmup=, clip=, "
                                      "decay= override it) and initialisation")
    group.add_argument("--weight-decay", type=number(float, 0), metavar="WD",
                       help="decoupled weight decay (AdamW): decayed weights shrink by lr * WD each step (default 0: Adam)")
    group.add_argument("--decay", choices=("matrices", "all"),
                       help="weights --weight-decay shrinks: matrices (attention, MLP, unembedding; not embeddings, "
                       "positions, norms or biases; default) or all")
    group.add_argument("--betas", type=_betas, metavar="B1,B2", help="Adam's betas (default 0.9,0.999)")
    group.add_argument("--warmup", type=number(int, 0), metavar="STEPS",
                       help="linear warm-up: step t of a phase takes lr * min(1, (t + 1) / STEPS) (default 0: none)")
    group.add_argument("--clip", type=number(float, 0, strictly=True), metavar="NORM",
                       help="clip each run's gradient to this global norm, as clip_grad_norm_ (default: no clipping)")
    group.add_argument("--init", choices=tuple(INITS), help="initial weights: ordered (default; N(0, 1) embeddings, U(+-1/sqrt(fan_in)) "
                       "elsewhere), shared_stream (the paper's d = 2 pipeline) or, with --model transformer, gpt2 "
                       "(N(0, 0.02) embeddings and matrices, residual outputs N(0, 0.02 / sqrt(2 n_layers)), biases 0)")


#: Phase fields set by the flags of `add_recipe_flags`.
RECIPE_FLAGS = {"weight_decay": "weight_decay", "decay": "decay", "betas": "betas", "warmup": "warmup", "clip": "clip"}


def recipe_from_flags(args: argparse.Namespace) -> dict:
    """The recipe fields the command line gives (left out: the phase's own, or plain Adam's)."""
    return {field: getattr(args, flag) for flag, field in RECIPE_FLAGS.items() if getattr(args, flag, None) is not None}


def check_recorded(phases, model: ModelConfig, args: argparse.Namespace, what: str) -> None:
    """Refuse recipe flags (and --init) that differ from what a run recorded: resuming keeps its recipe."""
    for field, value in recipe_from_flags(args).items():
        for index, phase in enumerate(phases):
            recorded = getattr(phase, field)
            if recorded != value:
                raise ConfigError(f"--{field.replace('_', '-')} {_shown(value)} differs from the {field} "
                                  f"{_shown(recorded)} that {what} recorded (phase {index}); it keeps its recipe")
    if getattr(args, "init", None) is not None and args.init != model.init:
        raise ConfigError(f"--init {args.init} differs from the init {model.init} that {what} recorded; "
                          "it keeps its initial weights")


def _shown(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


#: ModelConfig fields set by the flags of `add_size_flags`, `add_residual_flag` and `add_arch_flags`
#: (`--model` sets `arch`); a parser without a flag leaves its field at the default.
MODEL_FLAGS = {"residual": "residual", "d_model": "d_model", "d_mlp": "d_mlp", "model": "arch",
               "n_layers": "n_layers", "n_heads": "n_heads", "readout": "readout", "norm": "norm"}


def model_from_flags(args: argparse.Namespace, task: TaskConfig) -> ModelConfig:
    given = {field: getattr(args, flag) for flag, field in MODEL_FLAGS.items() if getattr(args, flag, None) is not None}
    if getattr(args, "init", None) is not None:
        given["init"] = args.init
    return ModelConfig(n_ctx=task.n_ctx, **given)


def add_checkpoint_flags(parser: argparse.ArgumentParser, verb: str, default_n: int) -> None:
    """RUN, --step, --hook, --over, --n and --device, shared by the commands that probe a checkpoint."""
    parser.add_argument("run", type=Path, metavar="RUN", help="a run directory, e.g. runs/curriculum/seed_0")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    parser.add_argument("--hook", default="blocks.0.attn.hook_v", help=f"hook to {verb} (default blocks.0.attn.hook_v)")
    parser.add_argument("--over", default="key_pos",
                        help=f"comma-separated axes to {verb} index by index; '' for the whole activation (default key_pos)")
    parser.add_argument("--n", type=int, default=default_n, help=f"number of inputs (default {default_n})")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
