"""The `circuitpath` command line.

Every mistake a user can make ends in one line on stderr and exit status 2; Ctrl-C during training
saves a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from circuitpath.config import ModelConfig, Phase, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.errors import CircuitPathError, ConfigError
from circuitpath.experiments import PAPER_PHASES, experiment_config, summary_table, verdicts
from circuitpath.train import Interrupted

EPILOG_TRAIN = """examples:
  circuitpath train --out runs/x --p 4 --steps 1000 --lr 1e-2 --seed 0
  circuitpath train --out runs/cur --phases 2:3000:1e-3,4:7000:1e-2
  circuitpath train --config my_run.toml --out runs/y --seed 3
  circuitpath train --resume runs/x
A config file (JSON or TOML) holds the sections task, model and train, as in a run's run.json;
flags given on the command line override it."""


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    task = parser.add_argument_group("task (sparse modular addition)")
    task.add_argument("--n-ctx", "-T", type=int, help="sequence length T (default 12)")
    task.add_argument("--k", type=int, help="number of leading tokens summed (default 5)")
    task.add_argument("--n-train", type=int, help="training sequences per phase (default 2048)")
    task.add_argument("--n-test", type=int, help="test sequences when p**T is too large to enumerate (default 2048)")
    task.add_argument("--data-seed", type=int, help="seed of the train/test draw (default: --seed)")
    model = parser.add_argument_group("model")
    model.add_argument("--d-model", type=int, help="width d (default 32)")
    model.add_argument("--d-mlp", type=int, help="MLP width h (default 4 x d-model, also when --d-model is given)")
    model.add_argument("--n-tokens", type=int, help="embedding rows, >= every phase's p (default 4)")
    model.add_argument("--untied", action="store_true", default=None, help="learn W_U apart from W_E")
    model.add_argument("--eps", type=float, help="RMS norm epsilon (default 1e-5)")
    model.add_argument("--model-seed", type=int, help="seed of the initial weights (default: --seed)")
    train = parser.add_argument_group("training")
    train.add_argument("--log-every", type=int, help="steps between metric lines (default 50)")
    train.add_argument("--checkpoint-every", type=int, help="steps between regular checkpoints (default 250)")
    train.add_argument("--dense-checkpoints", type=int, help="log-spaced checkpoints before the regular ones (default 24)")
    train.add_argument("--sample-seed", type=int, help="seed of mini-batch sampling (default: --seed)")
    parser.add_argument("--seed", type=int, help="seed of data, weights and sampling alike (default 0)")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--force", action="store_true", help="replace existing runs at the output paths")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuitpath",
        description="Train a one-layer cross-attention transformer on sparse modular addition, save "
        "checkpoints along training, and analyse them (Odonnat, Bouaziz, Cabannes, ICASSP 2025).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train one run (scratch, curriculum or fine-tuning)",
                           description="Train one run into a run directory.", epilog=EPILOG_TRAIN,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--out", type=Path, help="run directory to create")
    train.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--config", type=Path, help="JSON or TOML file with task, model and train sections")
    phases = train.add_argument_group("phases (either --phases, or --p/--steps/--lr for a single phase)")
    phases.add_argument("--phases", help="comma-separated p:steps:lr[:batch_size], e.g. 2:3000:1e-3,4:7000:1e-2")
    phases.add_argument("--p", type=int, help="modulus of a single phase (default 4)")
    phases.add_argument("--steps", type=int, help="steps of a single phase (default 10000)")
    phases.add_argument("--lr", type=float, help="Adam learning rate of a single phase (default 1e-2)")
    phases.add_argument("--batch-size", type=int, help="sequences per step (default: full batch)")
    _add_config_flags(train)
    _add_run_flags(train)
    train.set_defaults(handler=cmd_train)

    reproduce = sub.add_parser(
        "reproduce", help="train the paper's scratch and curriculum runs and compare them",
        description="Train the paper's two runs from the same initial weights into OUT/scratch and "
        "OUT/curriculum, then print their final accuracies and whether the paper's claims held: "
        "scratch memorises (train acc >= 0.99, test acc < 0.5), curriculum generalises (test acc >= 0.99).",
    )
    reproduce.add_argument("--out", type=Path, default=Path("runs"), help="parent directory of the runs (default ./runs)")
    reproduce.add_argument("--seed", type=int, default=0, help="seed of data and initial weights (default 0)")
    reproduce.add_argument("--scratch", default=PAPER_PHASES["scratch"], metavar="PHASES",
                           help=f"phases of the scratch run (default {PAPER_PHASES['scratch']})")
    reproduce.add_argument("--curriculum", default=PAPER_PHASES["curriculum"], metavar="PHASES",
                           help=f"phases of the curriculum run (default {PAPER_PHASES['curriculum']})")
    reproduce.add_argument("--n-ctx", "-T", type=int, help="sequence length T (default 12)")
    reproduce.add_argument("--n-train", type=int, help="training sequences (default 2048)")
    _add_run_flags(reproduce)
    reproduce.set_defaults(handler=cmd_reproduce)

    sweep = sub.add_parser(
        "sweep", help="train many seeds of the paper's experiments batched; print success rates",
        description="Train every (experiment, seed) run, one batched computation per experiment, "
        "into OUT/<experiment>/seed_<N>; print how many reach test acc >= 0.99 and how many memorise, "
        "and write OUT/sweep.html with the spread of final test accuracy.",
        epilog="examples:\n  circuitpath sweep --seeds 0-31 --experiments scratch,curriculum\n"
        "  circuitpath sweep --seeds 0-7 --experiments 'fast=4:2000:3e-2' --out runs/fast\n"
        "  circuitpath sweep --resume runs/sweep",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep directory (default runs/sweep)")
    sweep.add_argument("--seeds", default="0-31", help="N, N-M or a list of them (default 0-31)")
    sweep.add_argument("--experiments", default="scratch,curriculum",
                       help="paper experiments by name, or name=p:steps:lr,... separated by ';' "
                       "(default scratch,curriculum)")
    sweep.add_argument("--resume", type=Path, metavar="SWEEP", help="finish the unfinished runs of a sweep")
    sweep.add_argument("--n-ctx", "-T", type=int, help="sequence length T (default 12)")
    sweep.add_argument("--n-train", type=int, help="training sequences (default 2048)")
    _add_run_flags(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    patch = sub.add_parser(
        "patch", help="activation patching on a saved checkpoint: effect of each index of a hook",
        description="Patch the activation at HOOK from clean inputs into corrupted ones, once per index of "
        "the --over axes, and print the metric for each index. Clean inputs are the test set of the run's "
        "last phase; corrupted inputs redraw the tokens at --corrupt positions.",
        epilog="examples:\n  circuitpath patch runs/curriculum\n"
        "  circuitpath patch runs/curriculum --step 3000 --hook blocks.0.mlp.hook_post --over d_mlp --metric accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    patch.add_argument("run", type=Path, metavar="RUN")
    patch.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    patch.add_argument("--hook", default="blocks.0.attn.hook_v", help="hook to patch (default blocks.0.attn.hook_v)")
    patch.add_argument("--over", default="key_pos", help="comma-separated axes to patch index by index; '' for the whole activation (default key_pos)")
    patch.add_argument("--metric", default="logit_diff", help="logit_diff (default), loss or accuracy")
    patch.add_argument("--corrupt", default=None, help="positions to redraw, e.g. 0-4 (default: the first k)")
    patch.add_argument("--n", type=int, default=1024, help="number of inputs (default 1024)")
    patch.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    patch.set_defaults(handler=cmd_patch)

    ablate = sub.add_parser(
        "ablate", help="ablate key positions, MLP neurons or the attention output; accuracy and loss",
        description="Replace parts of an activation by zeros, their mean, or values from other inputs, "
        "and print accuracy and loss on the train and test data of the run's last phase, before and "
        "after. For key positions, the sets 'first k' and 'spurious' are ablated too.",
        epilog="examples:\n  circuitpath ablate runs/curriculum\n"
        "  circuitpath ablate runs/scratch --method resample --step 5000\n"
        "  circuitpath ablate runs/curriculum --hook blocks.0.hook_attn_out --over ''",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ablate.add_argument("run", type=Path, metavar="RUN")
    ablate.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    ablate.add_argument("--hook", default="blocks.0.attn.hook_v", help="hook to ablate (default blocks.0.attn.hook_v)")
    ablate.add_argument("--over", default="key_pos", help="axes ablated index by index; '' for the whole activation (default key_pos)")
    ablate.add_argument("--method", default="mean", help="zero, mean (default) or resample")
    ablate.add_argument("--n", type=int, default=2048, help="inputs of each split (default 2048)")
    ablate.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ablate.set_defaults(handler=cmd_ablate)

    show = sub.add_parser("show", help="print a run's config, status, checkpoints and final metrics",
                          description="Print what a run directory holds.")
    show.add_argument("run", type=Path, metavar="RUN")
    show.set_defaults(handler=cmd_show)
    return parser


# ---- train ---------------------------------------------------------------------------------------
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
        data = data["config"]
    return data


def _set(section: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        section[key] = value


def build_config(args: argparse.Namespace) -> RunConfig:
    """The run config from an optional file, overridden by the flags given."""
    base = RunConfig.from_dict(read_config_file(args.config)) if args.config else RunConfig()
    data = base.to_dict()
    task, model, train = data["task"], data["model"], data["train"]
    for section, key in (("task", "seed"), ("model", "seed"), ("train", "seed")):
        _set(data[section], key, args.seed)
    _set(task, "n_ctx", args.n_ctx)
    _set(model, "n_ctx", args.n_ctx)
    for key in ("k", "n_train", "n_test"):
        _set(task, key, getattr(args, key))
    _set(task, "seed", args.data_seed)
    for key in ("d_model", "d_mlp", "n_tokens", "eps"):
        _set(model, key, getattr(args, key))
    if args.d_model is not None and args.d_mlp is None:
        model["d_mlp"] = None  # 4 * d_model, as documented under --d-mlp
    if args.untied:
        model["tied"] = False
    _set(model, "seed", args.model_seed)
    for key in ("log_every", "checkpoint_every", "dense_checkpoints"):
        _set(train, key, getattr(args, key))
    _set(train, "seed", args.sample_seed)
    train["phases"] = [vars(ph) for ph in _phases(args, base.train.phases, given_file=args.config is not None)]
    return RunConfig.from_dict(data)


def _phases(args: argparse.Namespace, base: tuple[Phase, ...], given_file: bool) -> tuple[Phase, ...]:
    single = {"p": args.p, "steps": args.steps, "lr": args.lr}
    if args.phases is not None:
        given = [f"--{k}" for k, v in single.items() if v is not None]
        if given:
            raise ConfigError(f"--phases cannot be combined with {', '.join(given)}")
        phases = parse_phases(args.phases)
    elif any(v is not None for v in single.values()) or not given_file:
        if given_file and len(base) > 1:
            raise ConfigError("--p/--steps/--lr set a single phase, but the config file has several; use --phases")
        first = base[0] if given_file else Phase(p=4, steps=10_000, lr=1e-2)
        phases = (Phase(p=args.p or first.p, steps=args.steps or first.steps, lr=args.lr or first.lr,
                        batch_size=first.batch_size),)
    else:
        phases = base
    if args.batch_size is not None:
        phases = tuple(replace(ph, batch_size=args.batch_size) for ph in phases)
    return phases


def cmd_train(args: argparse.Namespace) -> int:
    from circuitpath.train import resume, train

    if args.resume is not None:
        if args.out is not None or args.config is not None:
            raise ConfigError("--resume continues a run as it was configured; drop --out and --config")
        (run,) = resume([args.resume], device=args.device)
    else:
        if args.out is None:
            raise ConfigError("--out is required (the run directory to create), or --resume RUN")
        run = train(build_config(args), args.out, device=args.device, force=args.force)
    print(summary_table({run.path.name: run}))
    print(f"run saved in {run.path}")
    return 0


# ---- reproduce ------------------------------------------------------------------------------------
def cmd_reproduce(args: argparse.Namespace) -> int:
    from circuitpath.train import train_groups

    task = TaskConfig(**{k: v for k, v in (("n_ctx", args.n_ctx), ("n_train", args.n_train)) if v is not None})
    names = ("scratch", "curriculum")
    configs = [experiment_config(getattr(args, name), seed=args.seed, task=task, model=ModelConfig(n_ctx=task.n_ctx))
               for name in names]
    print(f"training scratch ({args.scratch}) and curriculum ({args.curriculum}) side by side", file=sys.stderr)
    groups = train_groups([([c], [args.out / n]) for c, n in zip(configs, names)], device=args.device, force=args.force)
    runs = {name: group[0] for name, group in zip(names, groups)}
    print(summary_table(runs))
    print("\n".join(verdicts(runs)))
    return 0


# ---- sweep ---------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    from circuitpath.plots import sweep_figure, write_html
    from circuitpath.sweep import parse_experiments, parse_seeds, resume_sweep, summary_lines, sweep

    if args.resume is not None:
        out = args.resume
        summaries = resume_sweep(out, device=args.device)
    else:
        out = args.out
        task = TaskConfig(**{k: v for k, v in (("n_ctx", args.n_ctx), ("n_train", args.n_train)) if v is not None})
        summaries = sweep(out, parse_seeds(args.seeds), parse_experiments(args.experiments), task=task,
                          model=ModelConfig(n_ctx=task.n_ctx), device=args.device, force=args.force)
    print("\n".join(summary_lines(summaries)))
    page = write_html([sweep_figure(summaries)], out / "sweep.html", "circuitpath sweep")
    print(f"figure written to {page}")
    return 0


# ---- patch ---------------------------------------------------------------------------------------
def cmd_patch(args: argparse.Namespace) -> int:
    import torch

    from circuitpath.analysis.patching import corrupt_positions, patch
    from circuitpath.data import targets
    from circuitpath.runs import load_run
    from circuitpath.sweep import parse_seeds
    from circuitpath.train import resolve_device

    run = load_run(args.run)
    device = resolve_device(args.device)
    model = run.model_at(args.step, device=device)
    task, p = run.config.task, run.config.train.phases[-1].p
    positions = list(range(task.k)) if args.corrupt is None else parse_seeds(args.corrupt)
    if max(positions) >= task.n_ctx:
        raise ConfigError(f"--corrupt position {max(positions)} is past the sequence length {task.n_ctx}")
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    clean = run.data().x_test[: args.n]
    corrupted = corrupt_positions(clean, positions, p, torch.Generator().manual_seed(0))
    over = tuple(a for a in args.over.split(",") if a)
    result = patch(model, args.hook, clean, corrupted, targets(clean, p, task.k), targets(corrupted, p, task.k),
                   over=over, metric=args.metric)
    step = args.step if args.step is not None else run.steps[-1]
    print(f"{run.path} step {step}: patching {args.hook} over {', '.join(over) or 'the whole activation'}, {len(clean)} inputs, "
          f"positions {positions} corrupted")
    print(f"{result.metric}: clean {result.clean:.4f}, corrupted {result.corrupted:.4f}")
    effects = result.effects.reshape(-1).tolist()
    if over:
        for index, value in enumerate(effects):
            print(f"  {over[0] if len(over) == 1 else 'index'} {index:>3}: {value:.4f}")
    else:
        print(f"  patched: {effects[0]:.4f}")
    return 0


# ---- ablate --------------------------------------------------------------------------------------
def cmd_ablate(args: argparse.Namespace) -> int:
    import torch

    from circuitpath.analysis.ablation import ablate, position_sets
    from circuitpath.runs import load_run
    from circuitpath.train import resolve_device

    run = load_run(args.run)
    model = run.model_at(args.step, device=resolve_device(args.device))
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    over = tuple(a for a in args.over.split(",") if a)
    task, split = run.config.task, run.data()
    sets = position_sets(task.k, task.n_ctx) if over in (("key_pos",), ("pos",)) else None
    results = {name: ablate(model, x[: args.n], y[: args.n], hook=args.hook, over=over, sets=sets,
                            method=args.method, generator=torch.Generator().manual_seed(0))
               for name, x, y in (("train", split.x_train, split.y_train), ("test", split.x_test, split.y_test))}
    step = args.step if args.step is not None else run.steps[-1]
    print(f"{run.path} step {step}: {args.method}-ablating {args.hook} over {', '.join(over) or 'the whole activation'}")
    train, test = results["train"], results["test"]
    width = max(len(n) for n in train.names + ["intact"])
    print(f"{'ablated':<{width}}  train acc  train loss  test acc  test loss")
    print(f"{'intact':<{width}}  {train.base_accuracy:9.4f}  {train.base_loss:10.4f}  {test.base_accuracy:8.4f}  {test.base_loss:9.4f}")
    for (name, tr_acc, tr_loss), (_, te_acc, te_loss) in zip(train.rows(), test.rows()):
        print(f"{name:<{width}}  {tr_acc:9.4f}  {tr_loss:10.4f}  {te_acc:8.4f}  {te_loss:9.4f}")
    return 0


# ---- show -----------------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    from circuitpath.runs import load_run

    run = load_run(args.run)
    steps = run.steps
    print(f"run {run.path}  status: {run.status}  circuitpath {run.info.get('circuitpath', '?')}")
    print(json.dumps(run.config.to_dict(), indent=2))
    print(f"{len(steps)} checkpoints" + (f", steps {steps[0]}..{steps[-1]}" if steps else ""))
    if run.metrics:
        print(summary_table({run.path.name: run}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except Interrupted as stop:
        print(f"circuitpath: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("circuitpath: interrupted", file=sys.stderr)
        return 130
    except CircuitPathError as error:
        print(f"circuitpath: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
