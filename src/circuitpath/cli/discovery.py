"""`circuitpath discover`: circuit discovery at every checkpoint, scored against the task's truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuitpath.errors import ConfigError

EXAMPLES = """examples:
  circuitpath discover runs/curriculum/seed_0
  circuitpath discover runs/scratch/seed_0 runs/curriculum/seed_0 --out runs/discovery.html
  circuitpath discover runs/scratch/seed_0 --method attribution --steps 0-3000 --n 512 --force   # replace an earlier one
  circuitpath discover runs/curriculum/seed_0 --method patching --steps 3000,10000 --rule acdc --threshold 0.02
  circuitpath discover runs/curriculum/seed_0 --method attribution --ig-steps 8 --rule threshold --threshold 0.2"""


def add_parsers(sub) -> None:
    parser = sub.add_parser(
        "discover", help="find the circuit at every checkpoint with several methods and score it against the truth",
        description="Score every node and edge of the model's graph (each key position's value and attention "
        "weight, the attention output, each MLP neuron, the MLP output, the residual path) at each checkpoint with "
        "attribution patching, activation patching and/or ablation, on the first --n test inputs of the "
        "checkpoint's phase. Prints per step the AUROC and precision@k of the position scores (how much the output "
        "depends on a position: the mean over inputs of each input's |change| when its value or attention weight "
        "is replaced) against the truth (the task's relevant positions, 0..k-1 unless train --positions chose others), and writes RUN/analysis/discovery/: timeline.json, scores.safetensors "
        "and each pruned circuit as JSON and SVG in circuits/; and a page of figures (--out). On a standard "
        "transformer the nodes are the input positions (the first residual stream at each position, "
        "blocks.0.hook_resid_pre), scored by the same three methods; it writes RUN/analysis/discovery/positions.json "
        "and positions.html.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                        help="one or more run directories, e.g. runs/scratch/seed_0 runs/curriculum/seed_0")
    parser.add_argument("--out", type=Path, help="page of figures (default RUN/analysis/discovery/discovery.html, "
                        "or discovery.html beside the runs for several, their pruning stories on one axis)")
    parser.add_argument("--method", default="attribution,patching,ablation",
                        help="comma-separated methods: attribution, patching, ablation (default: all three)")
    parser.add_argument("--steps", help="checkpoints to score, e.g. 0,500,1000-3000 (default: every saved step)")
    parser.add_argument("--n", type=int, help="test inputs per checkpoint, at most a phase's test set "
                        "(default 1024, or all of a smaller test set)")
    parser.add_argument("--rule", default="budgets", help="how a circuit is pruned: budgets (default: positions above "
                        "a share of the largest, the top 8 neurons), top-n, threshold or acdc")
    parser.add_argument("--keep", type=int, help="nodes kept by --rule top-n (default 16)")
    parser.add_argument("--threshold", type=float,
                        help="--rule budgets: share of the largest position score a position needs, 0 to 1 (default 0.1); "
                        "--rule threshold: fraction of the largest |score| kept, 0 to 1 (default 0.1); "
                        "--rule acdc: largest rise of KL(full || circuit) an edge's removal may cause, >= 0 (default 0.01)")
    parser.add_argument("--metric", default="logit_diff", help="what attribution and patching measure: logit_diff (default) or loss")
    parser.add_argument("--ig-steps", type=int, default=0, help="integrated gradients over this many points (default 0: plain attribution)")
    parser.add_argument("--ablation", default="mean", help="how the ablation method knocks out: zero, mean (default) or resample")
    parser.add_argument("--tol", type=float, default=0.01, help="change of share that counts as strengthening an edge (default 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corrupting reordering and of resampling (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--force", action="store_true", help="replace an existing discovery (its timeline, scores, "
                        "circuits and page; nothing else in the folder)")
    parser.set_defaults(handler=cmd_discover)


def _parameter(args: argparse.Namespace) -> float | None:
    if args.rule == "top-n":
        if args.threshold is not None:
            raise ConfigError(f"--threshold {args.threshold} applies to --rule budgets, threshold or acdc, not top-n (use --keep)")
        return args.keep
    if args.keep is not None:
        raise ConfigError(f"--keep {args.keep} applies to --rule top-n, not {args.rule} (use --threshold)")
    return args.threshold


def cmd_discover(args: argparse.Namespace) -> int:
    from circuitpath.analysis.discovery import DiscoveryConfig, discover
    from circuitpath.analysis.discovery.timeline import plan
    from circuitpath.plots.discovery import discovery_figures
    from circuitpath.plots.html import write_html
    from circuitpath.runs import load_run
    from circuitpath.training.train import resolve_device

    runs = [load_run(path) for path in args.runs]
    kinds = {run.config.model.arch for run in runs}
    if len(kinds) > 1:
        raise ConfigError("discover takes runs of one model kind at a time (the paper's cross-attention model or a "
                          "standard transformer): their graphs differ")
    if "transformer" in kinds:
        return _discover_positions(args, runs)
    if not 0 <= args.tol < 1:
        raise ConfigError(f"--tol must be in [0, 1), got {args.tol}")
    if args.out is not None and not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: directory {args.out.parent} does not exist")
    config = DiscoveryConfig(methods=tuple(m.strip() for m in args.method.split(",") if m.strip()),
                             **({} if args.n is None else {"n": args.n}), metric=args.metric, ig_steps=args.ig_steps,
                             ablation=args.ablation, rule=args.rule, parameter=_parameter(args), seed=args.seed)
    names = _names(runs)
    out = args.out or (_page(runs[0]) if len(runs) == 1 else runs[0].path.parent / "discovery.html")
    inputs = [_inputs(run, plan(run, config, args.steps)[2], args.n) for run in runs]  # every check before any work
    _refuse_to_replace(runs, out, args.force)
    device = resolve_device(args.device)
    timelines = {}
    for name, run, used in zip(names, runs, inputs):
        timelines[name] = timeline = discover(run, config, args.steps, device=device)
        _report(run, timeline, args.tol, used)
        _save(run, timeline, args.force)
    write_html(discovery_figures(timelines), out, "circuit discovery: " + ", ".join(names), plotlyjs="beside")
    print(f"figures written to {out} (plotly.js beside it)")
    return 0


def _discover_positions(args: argparse.Namespace, runs) -> int:
    """A standard transformer: its input positions scored at every checkpoint (`discovery.positions`)."""
    from circuitpath.analysis.discovery.positions import POSITIONS_JSON, discover_positions, positions_dir, save_positions
    from circuitpath.plots.discovery import position_figures
    from circuitpath.plots.html import write_html
    from circuitpath.training.train import resolve_device

    graph_only = [flag for flag, given in (("--rule", args.rule != "budgets"), ("--keep", args.keep is not None),
                                           ("--threshold", args.threshold is not None), ("--ig-steps", args.ig_steps != 0))
                  if given]
    if graph_only:
        raise ConfigError(f"{', '.join(graph_only)} prune or integrate over the paper's model's graph; a standard "
                          "transformer's input positions are scored without them: drop them")
    methods = tuple(m.strip() for m in args.method.split(",") if m.strip())
    names = _names(runs)
    out = args.out or (positions_dir(runs[0]) / "positions.html" if len(runs) == 1 else runs[0].path.parent / "positions.html")
    if args.out is not None and not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: directory {args.out.parent} does not exist")
    if not args.force:
        for path in [positions_dir(run) / POSITIONS_JSON for run in runs] + [out]:
            if path.exists():
                raise ConfigError(f"{path} already exists; add --force to replace it")
    for run in runs:  # a --n beyond a phase's test set is refused rather than cut, as for the paper's model
        for phase in sorted({run.phase_at(step) for step in run.steps}):
            size = len(run.data(phase).x_test)
            if args.n is not None and size < args.n:
                raise ConfigError(f"--n {args.n} is more than the {size} test inputs of phase {phase} of {run.path}")
    device, timelines = resolve_device(args.device), {}
    for name, run in zip(names, runs):
        timelines[name] = timeline = discover_positions(
            run, methods, **({} if args.n is None else {"n": args.n}), metric=args.metric, ablation=args.ablation,
            seed=args.seed, steps=args.steps, device=device)
        print(f"{run.path}: {len(timeline.steps)} checkpoints, up to {timeline.n} test inputs each; nodes: the input "
              f"positions (blocks.0.hook_resid_pre at t); truth: {_truth(run)}")
        print(_table(timeline))
        print("AUROC " + "; ".join(f"{m} {timeline.reaching(m)}" for m in timeline.methods))
        print(f"wrote {save_positions(timeline, positions_dir(run))}")
    write_html(position_figures(timelines), out, "input positions: " + ", ".join(names), plotlyjs="beside")
    print(f"figures written to {out} (plotly.js beside it)")
    return 0


def _page(run) -> Path:
    from circuitpath.analysis.discovery import discovery_dir

    return discovery_dir(run) / "discovery.html"


def _inputs(run, probes: dict, n: int | None) -> str:
    """The test inputs each checkpoint is probed with, as the output says it; a --n beyond a phase's
    test set is refused rather than cut."""
    sizes = {phase: probe.clean.shape[0] for phase, probe in probes.items()}
    short = {phase: size for phase, size in sizes.items() if n is not None and size < n}
    if short:
        phase, size = next(iter(short.items()))
        raise ConfigError(f"--n {n} is more than the {size} test inputs of phase {phase} of {run.path}")
    if len(set(sizes.values())) == 1:
        return f"{next(iter(sizes.values()))} test inputs each"
    return "test inputs: " + ", ".join(f"{size} in phase {phase}" for phase, size in sizes.items())


def _refuse_to_replace(runs, out: Path, force: bool) -> None:
    """Without --force, a discovery already saved in a run, or a page at --out, stops everything."""
    from circuitpath.analysis.discovery import discovery_dir
    from circuitpath.analysis.discovery.timeline import saved_files

    if force:
        return
    for run in runs:
        found = saved_files(discovery_dir(run))
        if found:
            raise ConfigError(f"{discovery_dir(run)} already holds a discovery ({len(found)} files); "
                              "add --force to replace it")
    if out.exists():
        raise ConfigError(f"{out} already exists; add --force to replace it")


def _names(runs) -> list[str]:
    names = []
    for run in runs:
        names.append(run.path.name if run.path.name not in names else str(run.path))
    return names


def _report(run, timeline, tol: float, inputs: str) -> None:
    from circuitpath.analysis.discovery import pruning_story

    print(f"{run.path}: {len(timeline.steps)} checkpoints, {inputs}; truth: {_truth(run)}")
    print(_table(timeline))
    steps = timeline.steps
    scored = f"{len(steps)} step{'s' * (len(steps) > 1)} scored, {steps[0]}" + (f"-{steps[-1]}" if len(steps) > 1 else "")
    print(f"AUROC (of the {scored}): " + "; ".join(f"{m} {timeline.reaching(m)}" for m in timeline.methods))
    if len(timeline.steps) >= 2:
        for method in timeline.methods:
            last = pruning_story(timeline, method, tol).last_spurious_strengthened
            print(f"pruning story ({method}): spurious edges last strengthened at step {'never' if last is None else last}")


def _truth(run) -> str:
    """The summed positions of each phase in words, e.g. "positions 0-4 of 12 are summed"."""
    task, phases = run.config.task, run.config.train.phases
    truths = list(dict.fromkeys(task.relevant_positions(phase) for phase in phases))
    said = [f"{t[0]}-{t[-1]}" if t == tuple(range(t[0], t[-1] + 1)) and len(t) > 1 else ",".join(map(str, t))
            for t in truths]
    per_phase = " then ".join(f"positions {s}" for s in said)
    return f"{per_phase} of {task.n_ctx} are summed"


def _save(run, timeline, force: bool) -> None:
    from circuitpath.analysis.discovery import discovery_dir, save_timeline
    from circuitpath.analysis.discovery.timeline import circuit_file, remove_saved
    from circuitpath.plots.discovery import write_discovered_svg

    directory = discovery_dir(run)
    if force:  # what an earlier discovery wrote goes first, so that no file of it is left beside the new one
        removed = remove_saved(directory) + _remove_page(_page(run))
        if removed:
            print(f"removed the earlier discovery in {directory} ({removed} files)")
    save_timeline(timeline, directory)
    for method, circuits in timeline.circuits.items():
        for row, circuit in enumerate(circuits):
            title = f"{run.path.name}, step {circuit.step}: {method}, {circuit.rule} {circuit.parameter:g}"
            path = directory / "circuits" / f"{circuit_file(method, circuit.step)}.svg"
            write_discovered_svg(circuit, timeline.graph, timeline.relevant_at(row), path, title)
    count = sum(len(c) for c in timeline.circuits.values())
    print(f"wrote {directory}: timeline.json, scores.safetensors, {count} circuits (JSON and SVG) in circuits/")


def _remove_page(page: Path) -> int:
    """The default page, and plotly.min.js beside it when no other page is left to load it."""
    from circuitpath.plots.html import PLOTLY_JS

    removed = [path for path in (page,) if path.is_file()]
    script = page.parent / PLOTLY_JS
    if script.is_file() and not [p for p in page.parent.glob("*.html") if p != page]:
        removed.append(script)
    for path in removed:
        path.unlink()
    return len(removed)


def _table(timeline) -> str:
    methods = timeline.methods
    width = max(11, *(len(m) for m in methods))
    aurocs = {m: timeline.auroc(m).tolist() for m in methods}
    precisions = {m: timeline.precision(m).tolist() for m in methods}
    block = len(methods) * (width + 2)
    lines = [f"{'':>7}  {'AUROC':<{block}}{'precision@k':<{block}}{'':>8}",
             f"{'step':>7}  " + "".join(f"{m:>{width}}  " for m in methods) * 2 + f"{'accuracy':>8}"]
    for row, step in enumerate(timeline.steps):
        cells = [f"{aurocs[m][row]:>{width}.3f}  " for m in methods] + [f"{precisions[m][row]:>{width}.3f}  " for m in methods]
        lines.append(f"{step:>7}  " + "".join(cells) + f"{float(timeline.accuracy[row]):>8.4f}")
    return "\n".join(lines)
