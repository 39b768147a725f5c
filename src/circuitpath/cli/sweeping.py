"""`circuitpath sweep`: many seeds of the paper's experiments, on this machine or on a Ray cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from circuitpath.cli.flags import (RECIPE_FLAGS, add_arch_flags, add_recipe_flags, add_run_flags, add_task_flags,
                                   model_from_flags, recipe_from_flags, task_from_flags)
from circuitpath.errors import ConfigError

DEFAULT_OUT, DEFAULT_SEEDS, DEFAULT_EXPERIMENTS = Path("runs/sweep"), "0-31", "scratch,curriculum"

EPILOG = """examples:
  circuitpath sweep --seeds 0-31 --experiments scratch,curriculum
  circuitpath sweep --seeds 0-7 --experiments 'fast=4:2000:3e-2' --out runs/fast
  circuitpath sweep --seeds 0-31 --model transformer --n-layers 2 --n-heads 4 --positions random --out runs/tf
  circuitpath sweep --seeds 0-31 --experiments vis_finetune,vis_scratch --out runs/vis
  circuitpath sweep --seeds 0-31 --experiments vis_finetune:vis_n_tokens=3:vis_finetune_p=3 --out runs/vis3
  circuitpath sweep --resume runs/sweep
  circuitpath sweep --summary runs/sweep
  circuitpath sweep --seeds 0-255 --keep-checkpoints ends --backend ray --address HEAD:6379 --out /shared/sweep

On a Ray cluster: `ray start --head` on one machine, `ray start --address HEAD:6379` on the others,
every machine with circuitpath installed and OUT on a file system they all see at the same path.
Without --address, --backend ray starts a Ray instance on this machine for the sweep."""

RAY_FLAGS = ("address", "cpus", "chunk", "retries")
ARCH_FLAGS = ("model", "n_layers", "n_heads", "readout", "norm", "init", *RECIPE_FLAGS)
TRAIN_FLAGS = ("log_every", "checkpoint_every")


def add_parsers(sub) -> None:
    sweep = sub.add_parser(
        "sweep", help="train many seeds of the paper's experiments batched; print success rates",
        description="Train every (experiment, seed) run into OUT/<experiment>/seed_<N>, batched; print how "
        "many reach test acc >= 0.99 and how many memorise; write OUT/summary.json (every run's config, "
        "final metrics and verdicts) and OUT/sweep.html (the spread of final test accuracy).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = sweep.add_argument_group("what to train (a new sweep)")
    what.add_argument("--out", type=Path, help=f"sweep directory to create (default {DEFAULT_OUT})")
    what.add_argument("--seeds", help=f"N, N-M or a list of them (default {DEFAULT_SEEDS})")
    what.add_argument("--experiments", help="paper experiments or figure presets by name (presets.py; a preset's "
                      "options as NAME:key=INT, e.g. vis_finetune:vis_n_tokens=3:vis_finetune_p=3), or "
                      f"name=p:steps:lr,... separated by ';' (default {DEFAULT_EXPERIMENTS}); a preset keeps its own "
                      "task, model and schedule, so only --residual applies to it")
    add_task_flags(what)
    add_arch_flags(what)
    add_recipe_flags(sweep)
    what.add_argument("--log-every", type=int, help="steps between metric lines of every run (default 50; each is an "
                      "evaluation on the train and test sets, a large share of a long sweep's time)")
    what.add_argument("--checkpoint-every", type=int, help="steps between regular checkpoints (default 250)")
    what.add_argument("--keep-checkpoints", metavar="all|ends",
                      help="all (default), or ends: of each completed run keep only the checkpoints at step 0, "
                      "at each phase end and at the last step (for large sweeps); an unfinished run keeps all "
                      "it needs to resume; stored in sweep.json, and --resume applies it (or the one it is given)")
    mode = sweep.add_argument_group("an existing sweep")
    mode.add_argument("--resume", type=Path, metavar="SWEEP",
                      help="train only the runs of SWEEP that have not completed, then rewrite its summary")
    mode.add_argument("--summary", type=Path, metavar="SWEEP",
                      help="print the table of a finished sweep from SWEEP/summary.json (no checkpoint is read)")
    mode.add_argument("--allow-other-platform", action="store_true",
                      help="with --resume: continue runs written under another torch version, device or CPU kernel "
                      "set (ATEN_CPU_CAPABILITY); their bytes then differ from uninterrupted runs'")
    where = sweep.add_argument_group("where to train")
    where.add_argument("--backend", default="local", metavar="local|ray",
                       help="local: this machine (default); ray: chunks of seeds as tasks on a Ray cluster "
                       "(pip install -e '.[ray]')")
    where.add_argument("--address", metavar="HOST:PORT",
                       help="Ray cluster head (`ray start --head` prints it; also ray://HOST:PORT or auto); "
                       "default: start a Ray instance on this machine")
    where.add_argument("--cpus", type=int, help="CPUs of the Ray instance started here (default: all)")
    where.add_argument("--chunk", type=int, metavar="SEEDS",
                       help="seeds one Ray task trains batched, one CPU per 4 (default 4; on cuda every seed "
                       "of an experiment)")
    where.add_argument("--retries", type=int, help="times a Ray task whose worker died is run again (default 3); "
                       "a retry resumes the runs the lost attempt left")
    add_run_flags(sweep)
    sweep.set_defaults(handler=cmd_sweep)


def _given(args: argparse.Namespace, names) -> list[str]:
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) not in (None, False)]


def _ray_options(args: argparse.Namespace):
    from circuitpath.sweep import RayOptions

    if args.backend != "ray" and not _given(args, RAY_FLAGS):
        return None
    retries = {} if args.retries is None else {"retries": args.retries}
    return RayOptions(address=args.address, cpus=args.cpus, chunk=args.chunk, **retries)


def cmd_sweep(args: argparse.Namespace) -> int:
    from circuitpath.sweep import parse_experiments, parse_seeds, read_summary, resume_sweep, summary_lines, sweep
    from circuitpath.sweep.spec import check_keep
    from circuitpath.training.loop import Interrupted

    new_sweep = ("out", "seeds", "experiments", "n_ctx", "n_train", "positions", "d_model", "d_mlp", "residual",
                 *ARCH_FLAGS, *TRAIN_FLAGS, "force")
    if args.summary is not None:
        extra = _given(args, ("resume", "keep_checkpoints", *new_sweep, *RAY_FLAGS))
        if extra or args.backend != "local" or args.device != "cpu":
            raise ConfigError(f"--summary only reads {args.summary}/summary.json; drop "
                              f"{', '.join(extra) or '--backend and --device'}")
        print("\n".join(summary_lines(read_summary(args.summary))))
        return 0
    if args.resume is not None and (extra := _given(args, new_sweep)):
        raise ConfigError(f"--resume continues a sweep as it was configured; drop {', '.join(extra)}")
    if args.allow_other_platform and args.resume is None:
        raise ConfigError("--allow-other-platform applies to --resume SWEEP only")
    from circuitpath.cli.training import warn_capability

    warn_capability()
    if args.keep_checkpoints is not None:
        check_keep(args.keep_checkpoints)
    ray = _ray_options(args)
    out = args.resume if args.resume is not None else (args.out or DEFAULT_OUT)
    try:
        if args.resume is not None:
            summaries = _resume(args, ray, resume_sweep)
        else:
            task = task_from_flags(args)
            experiments = parse_experiments(args.experiments or DEFAULT_EXPERIMENTS)
            _check_preset_flags(args, experiments)
            experiments = _with_recipe(experiments, recipe_from_flags(args))
            summaries = sweep(out, parse_seeds(args.seeds or DEFAULT_SEEDS), experiments, task=task,
                              model=model_from_flags(args, task), train=_train(args), device=args.device, force=args.force,
                              keep_checkpoints=args.keep_checkpoints or "all", backend=args.backend, ray=ray)
    except (Interrupted, KeyboardInterrupt):
        print(f"circuitpath: interrupted; finish the sweep with: circuitpath sweep --resume {out}"
              f"{' --backend ray' if ray else ''}", file=sys.stderr)
        return 130
    print("\n".join(summary_lines(summaries)))
    from circuitpath.plots import sweep_figure, write_html

    page = write_html([sweep_figure(summaries)], out / "sweep.html", "circuitpath sweep")
    print(f"summary written to {out / 'summary.json'}, figure to {page}")
    return 0


def _train(args: argparse.Namespace):
    """How often every run logs and checkpoints (the phases come from each experiment)."""
    from circuitpath.config import TrainConfig

    return TrainConfig(**{k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None})


def _with_recipe(experiments: dict, recipe: dict) -> dict:
    """Each experiment's phases with the flags' recipe where its phase string gives none (stored as written out)."""
    from circuitpath.config import parse_phases

    if not recipe:
        return experiments
    return {name: ",".join(ph.to_text() for ph in parse_phases(value, **recipe)) if isinstance(value, str) else value
            for name, value in experiments.items()}


def _check_preset_flags(args: argparse.Namespace, experiments: dict) -> None:
    """A preset carries its own task and model: refuse task and model flags that it would ignore."""
    presets = [name for name, value in experiments.items() if isinstance(value, dict)]
    ignored = ("n_ctx", "n_train", "positions", "d_model", "d_mlp", *ARCH_FLAGS, *TRAIN_FLAGS)
    if presets and (extra := _given(args, ignored)):
        raise ConfigError(f"{', '.join(extra)} would not apply to the preset {presets[0]} (it keeps its own task and "
                          "model, schedule and logging); sweep it apart, or give its phases as name=p:steps:lr")


def _resume(args: argparse.Namespace, ray, resume_sweep):
    from circuitpath.sweep import pending_runs

    pending = pending_runs(args.resume)
    count = sum(len(seeds) for seeds in pending.values())
    print(f"{count} unfinished run{'s' * (count != 1)} to train" if count else f"nothing to train: every run of {args.resume} has "
          "completed", file=sys.stderr)
    return resume_sweep(args.resume, device=args.device, keep_checkpoints=args.keep_checkpoints,
                        allow_other_platform=args.allow_other_platform,
                        backend=args.backend, ray=ray)
