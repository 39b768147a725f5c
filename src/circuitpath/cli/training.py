"""The command that trains one run: `train` (`sweep` lives in `cli.sweeping`, `reproduce` in `cli.paper`)."""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from circuitpath.cli.flags import (add_arch_flags, add_recipe_flags, add_residual_flag, add_run_flags, add_size_flags,
                                   check_recorded, recipe_from_flags)
from circuitpath.config import Phase, RunConfig, parse_phases
from circuitpath.errors import ConfigError

EPILOG_TRAIN = """examples:
  circuitpath train --out runs/x --p 4 --steps 1000 --lr 1e-2 --seed 0
  circuitpath train --out runs/cur --phases 2:3000:1e-3,4:7000:1e-2
  circuitpath train --config my_run.toml --out runs/y --seed 3
  circuitpath train --resume runs/x
  circuitpath train --out runs/t --model transformer --n-layers 2 --n-heads 4 --readout cls --norm rms
  circuitpath train --out runs/r --model transformer --init gpt2 --untied --weight-decay 0.1 --phases 2:400:1e-3:128:warmup=40
A config file (JSON or TOML) holds the sections task, model and train, as in a run's run.json;
flags given on the command line override it."""


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    task = parser.add_argument_group("task (sparse modular addition)")
    task.add_argument("--n-ctx", "-T", type=int, help="sequence length T (default 12)")
    task.add_argument("--k", type=int, help="number of relevant positions summed (default 5)")
    task.add_argument("--positions", metavar="first|random|I,J,...",
                      help="relevant positions: first (0..k-1, default), random (k drawn from the data seed), "
                      "or a list such as 0,3,7 (k is then its length)")
    task.add_argument("--n-train", type=int, help="training sequences per phase (default 2048)")
    task.add_argument("--n-test", type=int, help="test sequences when p**T is too large to enumerate (default 2048)")
    task.add_argument("--data-seed", type=int, help="seed of the train/test draw (default: --seed)")
    model = parser.add_argument_group("model")
    add_size_flags(model)
    model.add_argument("--n-tokens", type=int, help="embedding rows, >= every phase's p (default 4)")
    model.add_argument("--untied", action="store_true", default=None, help="learn W_U apart from W_E")
    add_residual_flag(model)
    model.add_argument("--eps", type=float, help="RMS norm epsilon (default 1e-5)")
    model.add_argument("--model-seed", type=int, help="seed of the initial weights (default: --seed)")
    add_arch_flags(model)
    train = parser.add_argument_group("training")
    train.add_argument("--log-every", type=int, help="steps between metric lines (default 50)")
    train.add_argument("--checkpoint-every", type=int, help="steps between regular checkpoints (default 250)")
    train.add_argument("--dense-checkpoints", type=int, help="log-spaced checkpoints before the regular ones (default 24)")
    train.add_argument("--sample-seed", type=int, help="seed of mini-batch sampling (default: --seed)")
    parser.add_argument("--seed", type=int, help="seed of data, weights and sampling alike (default 0)")


def add_parsers(sub) -> None:
    train = sub.add_parser("train", help="train one run (scratch, curriculum or fine-tuning)",
                           description="Train one run into a run directory.", epilog=EPILOG_TRAIN,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--out", type=Path, help="run directory to create")
    train.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--allow-other-platform", action="store_true",
                       help="with --resume: continue a run written under another torch version, device or CPU kernel "
                       "set (ATEN_CPU_CAPABILITY); its bytes then differ from an uninterrupted run's")
    train.add_argument("--config", type=Path, help="JSON or TOML file with task, model and train sections")
    train.add_argument("--preset", metavar="NAME[:KEY=INT...]",
                       help="start from a figure preset's run for --seed (e.g. vis_finetune, small_curriculum; "
                       "draw options as in sweep --experiments, e.g. vis_finetune:vis_n_tokens=3:vis_finetune_p=3); "
                       "flags given override it")
    phases = train.add_argument_group("phases (either --phases, or --p/--steps/--lr for a single phase)")
    phases.add_argument("--phases", help="comma-separated p:steps:lr[:batch_size][:key=value...], e.g. "
                        "2:3000:1e-3,4:7000:1e-2; k=K sums K positions in that phase (a curriculum over k; default: "
                        "--k); wd=, betas=B1/B2, warmup=, clip= and decay= set that phase's optimiser recipe")
    phases.add_argument("--p", type=int, help="modulus of a single phase (default 4)")
    phases.add_argument("--steps", type=int, help="steps of a single phase (default 10000)")
    phases.add_argument("--lr", type=float, help="Adam learning rate of a single phase (default 1e-2)")
    phases.add_argument("--batch-size", type=int, help="sequences per step (default: full batch)")
    _add_config_flags(train)
    add_recipe_flags(train)
    add_run_flags(train)
    train.set_defaults(handler=cmd_train)


# ---- train ---------------------------------------------------------------------------------------
#: train's flags that describe a new run: --resume refuses them rather than leave them unused. (The recipe
#: flags and --init are accepted where they repeat what the run recorded; see `check_recorded`.)
NEW_RUN_FLAGS = ("--out", "--config", "--preset", "--force", "--phases", "--p", "--steps", "--lr", "--batch-size",
                 "--seed", "--n-ctx", "--k", "--positions", "--n-train", "--n-test", "--data-seed", "--d-model",
                 "--d-mlp", "--n-tokens", "--untied", "--residual", "--eps", "--model-seed", "--model", "--n-layers",
                 "--n-heads", "--readout", "--norm", "--log-every", "--checkpoint-every", "--dense-checkpoints",
                 "--sample-seed")


def warn_capability() -> None:
    """One line on stderr when ATEN_CPU_CAPABILITY asks for a CPU kernel set torch does not run."""
    import sys

    from circuitpath.platform import capability_request

    if (line := capability_request()) is not None:
        print(f"circuitpath: {line}", file=sys.stderr)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {error}") from None
    if isinstance(data, dict) and "config" in data and "format" in data:  # a run.json
        data = RunConfig.from_dict(data["config"], saved=True).to_dict()
    return data


def _set(section: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        section[key] = value


def build_config(args: argparse.Namespace) -> RunConfig:
    """The run config from an optional file, overridden by the flags given."""
    if args.preset and args.config:
        raise ConfigError("--preset and --config both give a starting config; pass one")
    base = RunConfig.from_dict(read_config_file(args.config)) if args.config else RunConfig()
    if args.preset:
        base = preset_config(args.preset, args.seed or 0)
    data = base.to_dict()
    task, model, train = data["task"], data["model"], data["train"]
    for section, key in (("task", "seed"), ("model", "seed"), ("train", "seed")):
        _set(data[section], key, args.seed)
    _set(task, "n_ctx", args.n_ctx)
    _set(model, "n_ctx", args.n_ctx)
    for key in ("k", "n_train", "n_test"):
        _set(task, key, getattr(args, key))
    _set_positions(task, args.positions, args.k)
    _set(task, "seed", args.data_seed)
    for key in ("d_model", "d_mlp", "n_tokens", "residual", "eps"):
        _set(model, key, getattr(args, key))
    if args.d_model is not None and args.d_mlp is None:
        model["d_mlp"] = None  # 4 * d_model, as documented under --d-mlp
    if args.untied:
        model["tied"] = False
    _set(model, "seed", args.model_seed)
    _set(model, "arch", args.model)
    _set(model, "init", args.init)
    for key in ("n_layers", "n_heads", "readout", "norm"):
        _set(model, key, getattr(args, key))
    for key in ("log_every", "checkpoint_every", "dense_checkpoints"):
        _set(train, key, getattr(args, key))
    _set(train, "seed", args.sample_seed)
    given = args.config is not None or bool(args.preset)
    train["phases"] = [ph.check_warmup().to_dict() for ph in _phases(args, base.train.phases, given_file=given)]
    return RunConfig.from_dict(data)


def _set_positions(task: dict[str, Any], text: str | None, k: int | None) -> None:
    """--positions first|random, or a list of positions that also sets k unless --k gives it."""
    if text is None:
        return
    if text in ("first", "random"):
        task["positions"] = text
        return
    try:
        task["positions"] = [int(item) for item in text.split(",")]
    except ValueError:
        raise ConfigError(f"--positions takes first, random or a list such as 0,3,7, got {text!r}") from None
    if k is None:
        task["k"] = len(task["positions"])


def preset_config(text: str, seed: int) -> RunConfig:
    """The run of a figure preset (by name, with its draw options) for one seed."""
    from circuitpath.paper.presets import experiments
    from circuitpath.sweep.spec import _named

    try:
        name, spec = _named(text)
    except ConfigError as error:  # sweep's hint at name=p:steps:lr does not apply here
        raise ConfigError(str(error).replace("(or give name=p:steps:lr,...)", "(or give --phases)")) from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{name!r} names the paper's phases, not a preset; use --phases {spec}")
    return experiments(**{k: v for k, v in spec.items() if k != "preset"})[name].config(seed)


def _phases(args: argparse.Namespace, base: tuple[Phase, ...], given_file: bool) -> tuple[Phase, ...]:
    single = {"p": args.p, "steps": args.steps, "lr": args.lr}
    if args.phases is not None:
        given = [f"--{k}" for k, v in single.items() if v is not None]
        if given:
            raise ConfigError(f"--phases cannot be combined with {', '.join(given)}")
        phases = parse_phases(args.phases, **recipe_from_flags(args))
    elif any(v is not None for v in single.values()) or not given_file:
        if given_file and len(base) > 1:
            raise ConfigError("--p/--steps/--lr set a single phase, but the config file has several; use --phases")
        first = base[0] if given_file else Phase(p=4, steps=10_000, lr=1e-2)
        given = {key: value for key, value in single.items() if value is not None}  # a typed 0 is refused, not replaced
        phases = (replace(first, **given),)
    else:
        phases = base
    if args.phases is None:  # a phase string's keys override the flags; here the flags override file and default
        phases = tuple(replace(ph, **recipe_from_flags(args)) for ph in phases)
    if args.batch_size is not None:
        phases = tuple(replace(ph, batch_size=args.batch_size) for ph in phases)
    return phases


def cmd_train(args: argparse.Namespace) -> int:
    from circuitpath.analysis.outcomes import summary_table
    from circuitpath.training.train import resume, train

    warn_capability()
    if args.allow_other_platform and args.resume is None:
        raise ConfigError("--allow-other-platform applies to --resume RUN only")
    if args.resume is not None:
        given = [flag for flag in NEW_RUN_FLAGS if getattr(args, flag[2:].replace("-", "_")) not in (None, False)]
        if given:
            raise ConfigError(f"--resume continues a run as it recorded it (its task, model and phases); drop "
                              f"{', '.join(given)}")
        from circuitpath.runs import load_run

        recorded = load_run(args.resume)
        check_recorded(recorded.config.train.phases, recorded.config.model, args, f"the run {args.resume}")
        if recorded.status == "completed":
            print(f"{args.resume} is already completed; nothing to resume")
            return 0
        (run,) = resume([args.resume], device=args.device, allow_other_platform=args.allow_other_platform)
    else:
        if args.out is None:
            raise ConfigError("--out is required (the run directory to create), or --resume RUN")
        run = train(build_config(args), args.out, device=args.device, force=args.force)
    print(summary_table({run.path.name: run}))
    print(f"run saved in {run.path}")
    return 0
