"""Commands about where a run goes from a checkpoint: `branch`, `switch`, `predict`, `llc`."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuitpath.cli.flags import (add_arch_flags, add_recipe_flags, add_residual_flag, check_recorded, number,
                                   recipe_from_flags)
from circuitpath.config import parse_phases
from circuitpath.errors import ConfigError

EPILOG_BRANCH = """examples:
  circuitpath branch runs/curriculum/seed_0 --at 1000 --phases 4:9000:1e-2 --out runs/switch_1000
  circuitpath branch runs/curriculum --at 3000 --phases 4:7000:3e-2 --out runs/curriculum_lr3e-2
  circuitpath branch runs/scratch/seed_0 --at 10000 --phases 4:5000:1e-2 --out runs/scratch_longer

A branch's phases are RUN's phases cut at STEP followed by --phases. When the first new phase has
the p, lr and batch size of RUN's phase at STEP, it continues that phase (Adam's moments carry on;
--new-phase restarts them). Metrics and checkpoints up to STEP are copied from RUN, and run.json
names the parent. A directory of runs (a sweep) is branched run by run into OUT/<same relative
path>, all at once, batched: runs/curriculum above is every seed_<N> run that
`circuitpath reproduce` wrote."""

EPILOG_SWITCH = """examples:
  circuitpath switch --seeds 0-31 --at 0,250,500,1000,2000,3000,5000 --total 10000 --out runs/switch
  circuitpath switch --seeds 0-31 --p2-lr 3e-3 --out runs/switch_lr3e-3
  circuitpath switch --resume runs/switch

Per seed, one p = 2 run (lr --p2-lr) is trained to the largest switch step, and branched at every
switch step to p = 4 (lr --p4-lr) for the remaining steps of --total; switch step 0 is p = 4 from
scratch. Prints, per switch step, how many seeds generalise (final test acc >= 0.99) with a Wilson
95% interval, split by whether the p = 2 phase had itself generalised (p = 2 test acc >= 0.99 at the
switch). Writes OUT/switch_table.json and OUT/switch.html."""

EPILOG_PREDICT = """examples:
  circuitpath predict runs/sweep
  circuitpath predict runs/switch --at 0.05,0.1,0.2,0.4 --repeats 20
  circuitpath predict runs/sweep --pool

Features at a fraction x of training, read from the checkpoint saved at or just before x * total
steps: attention mass on the first k, accuracy lost when the first k or the spurious positions are
mean-ablated, the cluster count of z_A, weight norms, and the LLC where `circuitpath llc` saved it.
The baseline uses the training and test loss at the same step. A logistic regression predicts the
final verdict (test acc >= 0.99); AUROC from repeated stratified k-fold, 95% interval by bootstrap
over runs. Each group of runs (a sweep's experiment, a switch step) is predicted on its own unless
--pool. Writes DIR/prediction.json and DIR/prediction.html."""

EPILOG_LLC = """examples:
  circuitpath llc runs/curriculum/seed_0
  circuitpath llc runs/scratch/seed_0 --steps 1000,5000,10000 --chains 4 --draws 200
  circuitpath llc runs/curriculum/seed_0 --sgld-lr 3e-6 --localization 1000

Estimates the local learning coefficient with devinterp's SGLD sampler (pip install -e ".[llc]"):
lambda = n_beta * (mean sampled loss - loss at the checkpoint), on the training data of the phase
the checkpoint belongs to. Writes RUN/analysis/llc.json (estimates, settings, chain traces) and
RUN/analysis/llc.html (estimates over training and the chain traces)."""


def add_parsers(sub) -> None:
    branch = sub.add_parser("branch", help="start new runs from a run's (or a sweep's) checkpoint at a step",
                            description="Branch RUN at STEP: a new run that starts from RUN's checkpoint "
                            "there and continues with other phases.", epilog=EPILOG_BRANCH,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    branch.add_argument("runs", type=Path, nargs="+", metavar="RUN|SWEEP", help="a run, or a directory of runs")
    branch.add_argument("--at", type=int, required=True, metavar="STEP", help="a checkpointed step of every run")
    branch.add_argument("--phases", required=True, metavar="SPEC",
                        help="the new phases, comma-separated p:steps:lr[:batch_size][:key=value...] (keys as in train "
                        "--phases), e.g. 4:7000:1e-2")
    branch.add_argument("--out", type=Path, required=True, help="the branch's run directory (for one run), or "
                        "the directory that receives one branch per run")
    branch.add_argument("--new-phase", action="store_true",
                        help="start a new phase (fresh Adam) even when the first new phase matches RUN's")
    branch.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    branch.add_argument("--force", action="store_true", help="replace existing runs at the output paths")
    branch.add_argument("--allow-other-platform", action="store_true",
                        help="branch a run written under another torch version, device or CPU kernel set "
                        "(ATEN_CPU_CAPABILITY) anyway: continuing it here gives other bytes than an uninterrupted run")
    add_recipe_flags(branch)
    branch.set_defaults(handler=cmd_branch)

    switch = sub.add_parser("switch", help="rates of generalising against the curriculum's switch step, over seeds",
                            description="Train p = 2 runs and branch them to p = 4 at several switch steps, "
                            "equal total steps; print the rate of generalising per switch step.",
                            epilog=EPILOG_SWITCH, formatter_class=argparse.RawDescriptionHelpFormatter)
    switch.add_argument("--seeds", default="0-31", help="N, N-M or a list of them (default 0-31)")
    switch.add_argument("--at", default="0,250,500,1000,2000,3000,5000", metavar="STEPS",
                        help="switch steps, comma-separated; 0 is p = 4 from scratch (default 0,250,500,1000,2000,3000,5000)")
    switch.add_argument("--total", type=int, default=10_000, help="total steps of every run (default 10000)")
    switch.add_argument("--p2-lr", type=float, default=1e-3, help="learning rate of the p = 2 phase (default 1e-3)")
    switch.add_argument("--p4-lr", type=float, default=1e-2, help="learning rate of the p = 4 phase (default 1e-2)")
    switch.add_argument("--batch-size", type=int, help="sequences per step of both phases (default: full batch)")
    switch.add_argument("--out", type=Path, default=Path("runs/switch"), help="output directory (default runs/switch)")
    switch.add_argument("--resume", type=Path, metavar="DIR", help="finish an interrupted switch experiment")
    switch.add_argument("--allow-other-platform", action="store_true",
                        help="with --resume: continue runs written under another torch version, device or CPU kernel "
                        "set (ATEN_CPU_CAPABILITY) anyway; continuing them here gives other bytes than an "
                        "uninterrupted run")
    switch.add_argument("--n-ctx", "-T", type=int, help="sequence length T (default 12)")
    switch.add_argument("--k", type=int, help="number of relevant positions summed (default 5)")
    switch.add_argument("--positions", choices=("first", "random"),
                        help="relevant positions: first (0..k-1, default) or random (drawn from each seed)")
    switch.add_argument("--n-train", type=int, help="training sequences (default 2048)")
    switch.add_argument("--n-test", type=int, help="test sequences when p**T is too large to enumerate (default 2048)")
    switch.add_argument("--d-model", type=int, help="width d (default 32; the MLP is 4d wide)")
    add_residual_flag(switch)
    add_arch_flags(switch)
    switch.add_argument("--checkpoint-every", type=int, help="steps between regular checkpoints (default 250)")
    switch.add_argument("--log-every", type=int, help="steps between metric lines (default 50)")
    switch.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    switch.add_argument("--force", action="store_true", help="replace an existing switch experiment at --out")
    add_recipe_flags(switch)
    switch.set_defaults(handler=cmd_switch)

    predict = sub.add_parser("predict", help="predict from early checkpoints which runs will generalise",
                             description="Cross-validated prediction of each run's final verdict from circuit "
                             "features early in training, against a baseline of the losses alone.",
                             epilog=EPILOG_PREDICT, formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("dir", type=Path, metavar="SWEEP_OR_SWITCH_DIR")
    predict.add_argument("--at", default="0.05,0.1,0.2,0.4", metavar="FRACTIONS",
                         help="fractions of training, comma-separated (default 0.05,0.1,0.2,0.4)")
    predict.add_argument("--repeats", type=int, default=20, help="repeats of the stratified k-fold (default 20)")
    predict.add_argument("--folds", type=int, default=5, help="folds, at most the smaller class's count (default 5)")
    predict.add_argument("--n", type=int, default=256, help="probe inputs per checkpoint (default 256)")
    predict.add_argument("--pool", action="store_true", help="predict all runs together instead of group by group")
    predict.add_argument("--out", type=Path, help="output directory (default: DIR)")
    predict.set_defaults(handler=cmd_predict)

    llc = sub.add_parser("llc", help="local learning coefficient at a run's checkpoints (devinterp)",
                         description="Estimate the local learning coefficient (LLC) at saved checkpoints of RUN.",
                         epilog=EPILOG_LLC, formatter_class=argparse.RawDescriptionHelpFormatter)
    llc.add_argument("run", type=Path, metavar="RUN", help="a run directory, e.g. runs/curriculum/seed_0")
    llc.add_argument("--steps", help="checkpoints to estimate, e.g. 0,500,1000-3000 (default: every saved step)")
    llc.add_argument("--chains", type=number(int, 1), help="SGLD chains (default 4)")
    llc.add_argument("--draws", type=number(int, 1), help="draws per chain (default 200)")
    llc.add_argument("--burnin", type=number(int, 0), help="burn-in steps per chain (default 50)")
    llc.add_argument("--batch-size", type=number(int, 1), help="sequences per SGLD step (default 256)")
    llc.add_argument("--sgld-lr", type=number(float, 0, strictly=True), help="SGLD step size epsilon (default 1e-5)")
    llc.add_argument("--localization", type=number(float, 0, strictly=True), help="pull gamma towards the checkpoint (default 1e4)")
    llc.add_argument("--n-beta", type=number(float, 0, strictly=True), help="inverse temperature n*beta (default n / log n of the training set)")
    llc.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    llc.set_defaults(handler=cmd_llc)


def parse_steps(text: str, what: str = "steps") -> list[int]:
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"{what} are comma-separated integers, got {text!r}") from None
    if not steps or steps[0] < 0:
        raise ConfigError(f"{what} must be non-negative integers, got {text!r}")
    return steps


# ---- branch --------------------------------------------------------------------------------------
def cmd_branch(args: argparse.Namespace) -> int:
    from circuitpath.analysis.outcomes import generalises, summary_table
    from circuitpath.runs import load_run
    from circuitpath.training.branch import branch_many, find_runs, plan_branch

    phases = parse_phases(args.phases, **recipe_from_flags(args))
    targets: list[tuple[Path, Path]] = []
    for root in args.runs:
        parents = find_runs(root)
        single = len(args.runs) == 1 and parents == [root]
        for parent in parents:
            relative = Path(parent.name) if parent == root else parent.relative_to(root)
            targets.append((parent, args.out if single else args.out / relative))
    parents = {parent: load_run(parent) for parent, _ in targets}
    for parent, run in parents.items():
        if args.init is not None and args.init != run.config.model.init:
            raise ConfigError(f"--init {args.init} differs from the init {run.config.model.init} that {parent} recorded; "
                              "a branch starts from its parent's weights")
    plans = [plan_branch(parents[parent], args.at, phases, out, args.new_phase,
                         allow_other_platform=args.allow_other_platform, device=args.device) for parent, out in targets]
    runs = branch_many(plans, device=args.device, force=args.force)
    if len(runs) <= 8:
        print(summary_table({str(run.path): run for run in runs}))
    else:
        good = sum(generalises(run.final_metrics()) for run in runs)
        print(f"{len(runs)} branches at step {args.at}: {good} reach test acc >= 0.99")
    print(f"branches saved under {args.out}")
    return 0


# ---- switch --------------------------------------------------------------------------------------
def cmd_switch(args: argparse.Namespace) -> int:
    from circuitpath.plots.switching import write_switch_page
    from circuitpath.sweep import parse_seeds
    from circuitpath.sweep.switching import SwitchSettings, resume_switch, save_table, switch_experiment

    if args.allow_other_platform and args.resume is None:
        raise ConfigError("--allow-other-platform applies to --resume DIR only: a new experiment makes its own runs")
    if args.resume is not None:
        from circuitpath.sweep.switching import load_settings

        recorded = load_settings(args.resume)
        check_recorded(recorded.branch_phases(recorded.switch_steps[0]), recorded.model, args,
                       f"the switch experiment {args.resume}")
        result = resume_switch(args.resume, device=args.device, allow_other_platform=args.allow_other_platform)
        out = args.resume
    else:
        settings = SwitchSettings.from_flags(
            seeds=parse_seeds(args.seeds), switch_steps=parse_steps(args.at, "switch steps"), total=args.total,
            p2_lr=args.p2_lr, p4_lr=args.p4_lr, n_ctx=args.n_ctx, k=args.k, n_train=args.n_train,
            n_test=args.n_test, d_model=args.d_model, residual=args.residual, checkpoint_every=args.checkpoint_every,
            arch=args.model, n_layers=args.n_layers, n_heads=args.n_heads, readout=args.readout, norm=args.norm,
            positions=args.positions, batch_size=args.batch_size, log_every=args.log_every, init=args.init,
            recipe=recipe_from_flags(args))
        result = switch_experiment(args.out, settings, device=args.device, force=args.force)
        out = args.out
    print("\n".join(result.lines()))
    for path in (save_table(result, out), write_switch_page(result, out)):
        print(f"written: {path}")
    return 0


# ---- predict -------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from circuitpath.analysis.prediction import parse_fractions, predict_outcomes, save_prediction
    from circuitpath.plots.prediction import write_prediction_page

    result = predict_outcomes(args.dir, parse_fractions(args.at), repeats=args.repeats, folds=args.folds,
                              n=args.n, pool=args.pool)
    print("\n".join(result.lines()))
    out = args.out or args.dir
    for path in (save_prediction(result, out), write_prediction_page(result, out)):
        print(f"written: {path}")
    return 0


# ---- llc -----------------------------------------------------------------------------------------
def cmd_llc(args: argparse.Namespace) -> int:
    from circuitpath.analysis.discovery.timeline import select_steps
    from circuitpath.analysis.llc import LLCSettings, llc_over_training, merge_saved, save_llc
    from circuitpath.plots.llc import write_llc_page
    from circuitpath.runs import load_run

    run = load_run(args.run)
    given = {"num_chains": args.chains, "num_draws": args.draws, "num_burnin_steps": args.burnin,
             "batch_size": args.batch_size, "lr": args.sgld_lr, "localization": args.localization,
             "n_beta": args.n_beta}
    settings = LLCSettings(**{k: v for k, v in given.items() if v is not None})
    steps = select_steps(run, args.steps) if args.steps is not None else None  # as discover reads them: 0,500,1000-3000
    result = llc_over_training(run, settings, steps=steps, device=args.device)
    print("\n".join(result.lines()))
    result = merge_saved(result, run)
    for path in (save_llc(result, run), write_llc_page(result, run)):
        print(f"written: {path}")
    return 0
