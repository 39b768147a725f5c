"""Commands that probe saved checkpoints: `analyze`, `patch`, `ablate`, `diagram`, `clusters`, `show`."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from circuitpath.cli.flags import add_checkpoint_flags
from circuitpath.errors import CheckpointError, ConfigError

#: `patching.METRICS` and `ablation.METHODS`, named here so that building the parser imports no torch (the kernel
#: pinning is applied after parsing); a test keeps them equal.
PATCH_METRICS = ("logit_diff", "loss", "accuracy")
ABLATIONS = ("zero", "mean", "resample")


def add_parsers(sub) -> None:
    analyze = sub.add_parser(
        "analyze", help="write an HTML report of one or more runs and print their headline numbers",
        description="Analyse saved runs: accuracy curves, attention of the query over training, ablation "
        "of key positions, and, for runs of one model shape, the loss barrier between the first two runs' "
        "final checkpoints and their parameter trajectories. Writes a self-contained report.html. A standard "
        "transformer's run gets the sections that need only hook names and positions (the readout position's "
        "attention per layer and head, position ablation and patching, accuracy, barrier, trajectory); the "
        "report says which sections it leaves out and why.",
        epilog="examples:\n  circuitpath analyze runs/curriculum/seed_0\n"
        "  circuitpath analyze runs/scratch/seed_0 runs/curriculum/seed_0 --out runs/seed_0.html\n"
        "(runs/<experiment>/seed_<N> are the runs `circuitpath reproduce` writes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                        help="one or more run directories, e.g. runs/scratch/seed_0 runs/curriculum/seed_0")
    analyze.add_argument("--out", type=Path, help="report path (default RUN/report.html, or beside the runs for several)")
    analyze.set_defaults(handler=cmd_analyze)

    patch = sub.add_parser(
        "patch", help="activation patching on a saved checkpoint: effect of each index of a hook",
        description="Patch the activation at HOOK from clean inputs into corrupted ones, once per index of "
        "the --over axes, and print the metric for each index. Clean inputs are the test set of the phase "
        "the checkpoint belongs to; corrupted inputs redraw the tokens at --corrupt positions. With "
        "--corrupt each, one position at a time is redrawn and its value (blocks.0.attn.hook_v) patched "
        "back; the printed fraction is 0 = as corrupted, 1 = as clean, on the inputs whose answer flips. "
        f"{N_RULE.format(default=1024, data='test set')}",
        epilog="examples:\n  circuitpath patch runs/curriculum/seed_0 --corrupt each\n  circuitpath patch runs/curriculum/seed_0\n"
        "  circuitpath patch runs/curriculum/seed_0 --step 3000 --hook blocks.0.mlp.hook_post --over d_mlp --metric accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_flags(patch, "patch", default_n=1024)
    model_defaults(patch, "patch")
    patch.set_defaults(n=None)  # left out: up to 1024; given: exactly that many, or refused
    patch.add_argument("--metric", default="logit_diff", choices=PATCH_METRICS, help="logit_diff (default), loss or accuracy")
    patch.add_argument("--corrupt", default=None,
                       help="positions to redraw: N, N-M or a comma-separated list, e.g. 0-4 (default: the summed "
                       "positions, the first k unless train --positions chose others); or 'each': one position at a "
                       "time, its value patched back")
    patch.add_argument("--seed", type=int, default=0, help="seed of the corrupted tokens' draw (default 0, printed)")
    patch.set_defaults(handler=cmd_patch)

    ablate = sub.add_parser(
        "ablate", help="ablate key positions, MLP neurons or the attention output; accuracy and loss",
        description="Replace parts of an activation by zeros, their mean, or values from other inputs, "
        "and print accuracy and loss on the train and test data of the phase the checkpoint belongs to, "
        "before and after. For key positions, the sets 'first k' (or 'relevant') and 'spurious' are ablated too. "
        f"{N_RULE.format(default=2048, data='train set and the test set')}",
        epilog="examples:\n  circuitpath ablate runs/curriculum/seed_0\n"
        "  circuitpath ablate runs/scratch/seed_0 --method resample --step 5000\n"
        "  circuitpath ablate runs/curriculum/seed_0 --hook blocks.0.hook_attn_out --over ''",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_flags(ablate, "ablate", default_n=2048)
    model_defaults(ablate, "ablate")
    ablate.set_defaults(n=None)
    ablate.add_argument("--method", default="mean", choices=ABLATIONS, help="zero, mean (default) or resample")
    ablate.set_defaults(handler=cmd_ablate)

    diagram = sub.add_parser(
        "diagram", help="draw the circuit a checkpoint uses, weighted by ablation effects (HTML and SVG)",
        description="Measure each component's effect, the accuracy lost when it is mean-ablated (v0, v1, ...: "
        "each key position's value; attn: the attention output; mlp; resid: the path around the MLP), on "
        "the --on inputs of the phase the checkpoint belongs to; prune those below --threshold, and draw "
        "positions -> attn -> mlp -> logits as OUT.html and OUT.svg. By default (--on auto) the effects are "
        "measured on training inputs where test accuracy is at chance (a memorising model has nothing to "
        "lose there), on test inputs otherwise; the output says which. "
        f"{N_RULE.format(default=2048, data='inputs')}",
        epilog="examples:\n  circuitpath diagram runs/curriculum/seed_0 --out runs/curriculum/seed_0/circuit_final\n"
        "  circuitpath diagram runs/curriculum/seed_0 --step 3000 --on test   # the circuit at the switch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diagram.add_argument("run", type=Path, metavar="RUN", help="a run directory, e.g. runs/curriculum/seed_0")
    diagram.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    diagram.add_argument("--threshold", type=float, default=0.05, help="smallest accuracy loss kept (default 0.05)")
    diagram.add_argument("--n", type=int, help="inputs measured (default 2048, or all when there are fewer); "
                         "more than the split holds is refused")
    diagram.add_argument("--on", choices=("auto", "train", "test"), default="auto",
                         help="inputs the effects are measured on: train, test, or auto (default: train where "
                         "test accuracy is at chance, test otherwise)")
    diagram.add_argument("--out", type=Path, help="path prefix of the .html and .svg files, in an existing "
                         "directory (default RUN/circuit)")
    diagram.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    diagram.set_defaults(handler=cmd_diagram)

    clusters = sub.add_parser(
        "clusters", help="cluster a hook's activations at the readout position; which labeling they match",
        description="Cluster one activation of the first --n test inputs of the checkpoint's phase (Ward linkage, the "
        "count chosen against a structureless reference, as the report's Fig. 4) and print the adjusted Rand index "
        "of the clusters with each candidate labeling (the target, the sum of the relevant tokens, the count of "
        "each token among them). --hook names any hook; on a standard transformer it is read at the readout "
        "position (the CLS token, the last position or the one configured). "
        f"{N_RULE.format(default=1024, data='test set')}",
        epilog="examples:\n  circuitpath clusters runs/curriculum/seed_0\n"
        "  circuitpath clusters RUN --hook blocks.1.hook_resid_post --step 3000 --out clusters.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    clusters.add_argument("run", type=Path, metavar="RUN", help="a run directory, e.g. runs/curriculum/seed_0")
    clusters.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    clusters.add_argument("--hook", help="z_A, z_bar_A (the paper's model) or any hook name (default: z_A on the paper's "
                          "model, the last block's hook_resid_post on a standard transformer)")
    clusters.add_argument("--n", type=int, help="number of inputs (default: up to 1024)")
    clusters.add_argument("--out", type=Path, help="also draw the clusters to this HTML file")
    clusters.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    clusters.set_defaults(handler=cmd_clusters)

    show = sub.add_parser("show", help="print a run's config, status, checkpoints and final metrics",
                          description="Print what a run directory holds.",
                          epilog="examples:\n  circuitpath show runs/curriculum/seed_0\n"
                          "  circuitpath show runs/x     # a run still training, interrupted or killed says so",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("run", type=Path, metavar="RUN", help="a run directory, e.g. runs/curriculum/seed_0")
    show.set_defaults(handler=cmd_show)


# ---- shared --------------------------------------------------------------------------------------
def model_defaults(parser: argparse.ArgumentParser, verb: str) -> None:
    """--hook and --over default to the model's input positions (`analysis.models.position_hook`)."""
    parser.set_defaults(hook=None, over=None)
    helps = {"hook": f"hook to {verb} (default: blocks.0.attn.hook_v on the paper's model, blocks.0.hook_resid_pre "
                     "on a standard transformer)",
             "over": f"comma-separated axes to {verb} index by index; '' for the whole activation (default key_pos "
                     "on the paper's model, pos on a standard transformer)"}
    for action in parser._actions:
        if action.dest in helps:
            action.help = helps[action.dest]


def hook_and_over(args: argparse.Namespace, model) -> tuple[str, tuple[str, ...]]:
    """The --hook and --over given, or the model's defaults; an axis the hook lacks is refused in one line."""
    from circuitpath.analysis.models import check_hook_axes, position_hook

    hook, axis = position_hook(model)
    hook = args.hook if args.hook is not None else hook
    over = tuple(a for a in (args.over if args.over is not None else axis).split(",") if a)
    check_hook_axes(model, hook, over)
    return hook, over


#: The name of the column of `patch`'s table for each axis patched over (its rows' labels: v0, head 1, ...).
AXIS_WORDS = {"key_pos": "position", "pos": "position", "query_pos": "query position", "head_index": "head",
              "d_model": "dimension", "d_mlp": "neuron", "d_head": "dimension"}


#: What --n does, said in each probing command's description.
N_RULE = ("--n inputs are the first of the phase's {data}: left out, up to {default} are used; given, exactly that "
          "many, and an --n beyond the data is refused. The number used is printed.")


def check_n(n: int | None) -> None:
    if n is not None and n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")


def first_n(x, n: int | None, default: int, what: str):
    """The first `n` rows of `x`; an `n` beyond them is refused; left out (None), up to `default` rows."""
    if n is None:
        return x[:default]
    if n > len(x):
        raise ConfigError(f"--n {n} is more than the {len(x)} {what}; pass at most {len(x)}")
    return x[:n]


def check_writable_dir(directory: Path, flag: str) -> None:
    """Refuse, before any work, an output whose directory does not exist or cannot be written."""
    if not directory.is_dir():
        raise ConfigError(f"{flag}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: directory {directory} is not writable")


def parse_positions(text: str, n_ctx: int) -> list[int]:
    """`0-4`, `0,3,7` or a mix such as `0-2,5` -> sorted distinct positions in 0..n_ctx-1."""
    positions: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None or (match[2] is not None and int(match[1]) > int(match[2])):
            raise ConfigError(f"--corrupt takes positions N, N-M or a comma-separated list of them "
                              f"(0 to {n_ctx - 1}), or 'each'; got {text!r}")
        low = int(match[1])
        positions.update(range(low, int(match[2] or low) + 1))
    if max(positions) >= n_ctx:
        raise ConfigError(f"--corrupt position {max(positions)} is past the sequence length {n_ctx}")
    return sorted(positions)


def checkpoint_phase(run, step: int | None) -> tuple[int, int]:
    """The saved step meant (the last when None) and the phase its weights belong to."""
    if not run.steps:
        raise CheckpointError(f"{run.path} has no checkpoint")
    step = run.steps[-1] if step is None else step
    run.checkpoint_path(step)  # refuses a step that was not saved, naming the nearest ones
    return step, run.phase_at(step)


# ---- analyze -------------------------------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    from circuitpath.paper.report import build_report
    from circuitpath.runs import load_run

    runs = {}
    for path in args.runs:
        run = load_run(path)
        runs[run.path.name if run.path.name not in runs else str(run.path)] = run
    out = args.out or (args.runs[0] / "report.html" if len(args.runs) == 1 else args.runs[0].parent / "report.html")
    check_writable_dir(out.parent, "--out")
    headlines = build_report(runs, out)
    print("\n".join(headlines.lines()))
    print(f"report written to {out}")
    return 0


# ---- patch ---------------------------------------------------------------------------------------
def cmd_patch(args: argparse.Namespace) -> int:
    from circuitpath.analysis.patching import corrupt_positions, patch
    from circuitpath.data import positions_of, targets, truth_of
    from circuitpath.runs import load_run
    from circuitpath.training.train import resolve_device

    run = load_run(args.run)
    check_n(args.n)
    task = run.config.task
    each = args.corrupt is not None and args.corrupt.strip() == "each"
    step, phase = checkpoint_phase(run, args.step)
    p, truth = run.config.train.phases[phase].p, truth_of(task, run.config.train.phases[phase])
    summed = list(positions_of(truth))
    positions = None if each else summed if args.corrupt is None else parse_positions(args.corrupt, task.n_ctx)
    clean = first_n(run.data(phase).x_test, args.n, 1024, f"test inputs of phase {phase} (p = {p})")
    model = run.model_at(step, device=resolve_device(args.device))
    if each:
        return _patch_each(args, run, model, step, phase, clean, p)
    corrupted = corrupt_positions(clean, positions, p, seed=args.seed)
    hook, over = hook_and_over(args, model)
    result = patch(model, hook, clean, corrupted, targets(clean, p, truth), targets(corrupted, p, truth),
                   over=over, metric=args.metric, seed=args.seed)
    print(f"{run.path} step {step} (phase {phase}, p = {p}): patching {hook} over "
          f"{', '.join(over) or 'the whole activation'}, {len(clean)} test inputs, positions {positions} "
          f"corrupted (seed {args.seed})")
    print(f"{result.metric}: clean {result.clean:.4f}, corrupted {result.corrupted:.4f}; effect = patched - "
          f"corrupted (change from the corrupted baseline), restored = effect / (clean - corrupted)")
    gap = result.clean - result.corrupted
    site = " x ".join(AXIS_WORDS.get(axis, axis) for axis in over) or "activation"  # what each row's label names
    width = max(len(label) for label in [*result.labels, site])
    print(f"  {site:<{width}}  {'effect':>8}  {'restored':>8}")
    for label, effect in zip(result.labels, result.effect.reshape(-1).tolist()):
        restored = f"{effect / gap:+8.3f}" if gap != 0 else f"{'-':>8}"
        print(f"  {label:<{width}}  {effect:+8.4f}  {restored}")
    return 0


def _patch_each(args, run, model, step: int, phase: int, clean, p: int) -> int:
    from circuitpath.analysis.patching import position_patching
    from circuitpath.data import positions_of, truth_of

    axis = "key_pos" if args.over is None or model.cfg.arch == "cross_attention" else "pos"
    fixed = {"--hook": (args.hook, "blocks.0.attn.hook_v"), "--over": (args.over, axis),
             "--metric": (args.metric, "logit_diff")}
    changed = [flag for flag, (given, default) in fixed.items() if given not in (None, default)]
    if changed:
        raise ConfigError(f"--corrupt each patches blocks.0.attn.hook_v over {axis} with its own metric; "
                          f"drop {', '.join(changed)}")
    summed = positions_of(truth_of(run.config.task, run.config.train.phases[phase]))
    result = position_patching(model, clean, p, len(summed), seed=args.seed)
    heads = "" if model.cfg.arch == "cross_attention" else ", every head"
    print(f"{run.path} step {step} (phase {phase}, p = {p}): each key position redrawn alone (seed {args.seed}) "
          f"and its value patched back (hook {result.hook}{heads}), {len(clean)} test inputs")
    print(f"{result.metric}; effect = patched - corrupted (change from the corrupted baseline), "
          f"restored = effect / (clean - corrupted): 0 = as corrupted, 1 = as clean")
    for i, (label, effect, restored, flipped) in enumerate(zip(
            result.labels, result.effect.tolist(), result.normalized().tolist(), result.measured.tolist())):
        shown = ("no answer flips: nothing to restore" if flipped == 0
                 else f"effect {effect:+.3f}, restored {restored:+.3f} ({flipped} inputs flip)")
        print(f"  {label + (' (summed)' if i in summed else ''):<12} {shown}")
    return 0


# ---- ablate --------------------------------------------------------------------------------------
def cmd_ablate(args: argparse.Namespace) -> int:
    import torch

    from circuitpath.analysis.ablation import ablate, position_sets
    from circuitpath.data import truth_of
    from circuitpath.runs import load_run
    from circuitpath.training.train import resolve_device

    run = load_run(args.run)
    check_n(args.n)
    step, phase = checkpoint_phase(run, args.step)
    p, task, split = run.config.train.phases[phase].p, run.config.task, run.data(phase)
    inputs = {name: (first_n(x, args.n, 2048, f"{name} inputs of phase {phase} (p = {p})"), y)
              for name, x, y in (("train", split.x_train, split.y_train), ("test", split.x_test, split.y_test))}
    model = run.model_at(step, device=resolve_device(args.device))
    hook, over = hook_and_over(args, model)
    truth = truth_of(task, run.config.train.phases[phase])
    sets = position_sets(truth, task.n_ctx) if over in (("key_pos",), ("pos",)) else None
    results = {name: ablate(model, x, y[: len(x)], hook=hook, over=over, sets=sets, method=args.method,
                            generator=torch.Generator().manual_seed(0)) for name, (x, y) in inputs.items()}
    print(f"{run.path} step {step} (phase {phase}, p = {p}): {args.method}-ablating {hook} over "
          f"{', '.join(over) or 'the whole activation'}, on {len(inputs['train'][0])} train and "
          f"{len(inputs['test'][0])} test inputs" + (" (resampled with seed 0)" if args.method == "resample" else ""))
    print("effect = accuracy lost when ablated (change from the intact baseline: intact - ablated)")
    train, test = results["train"], results["test"]
    width = max(len(n) for n in train.names + ["intact"])
    print(f"{'ablated':<{width}}  train acc  train effect  train loss  test acc  test effect  test loss")
    print(f"{'intact':<{width}}  {train.base_accuracy:9.4f}  {0:+12.4f}  {train.base_loss:10.4f}  "
          f"{test.base_accuracy:8.4f}  {0:+11.4f}  {test.base_loss:9.4f}")
    for (name, tr_acc, tr_loss), (_, te_acc, te_loss) in zip(train.rows(), test.rows()):
        print(f"{name:<{width}}  {tr_acc:9.4f}  {train.base_accuracy - tr_acc:+12.4f}  {tr_loss:10.4f}  "
              f"{te_acc:8.4f}  {test.base_accuracy - te_acc:+11.4f}  {te_loss:9.4f}")
    return 0


# ---- diagram -------------------------------------------------------------------------------------
def cmd_diagram(args: argparse.Namespace) -> int:
    from circuitpath.analysis.circuit import circuit_at
    from circuitpath.plots.circuit import circuit_figure, write_circuit_svg
    from circuitpath.plots.html import write_html
    from circuitpath.runs import load_run
    from circuitpath.training.train import resolve_device

    run = load_run(args.run)
    if not 0 <= args.threshold <= 1:
        raise ConfigError(f"--threshold must be between 0 and 1, got {args.threshold}")
    check_n(args.n)
    prefix = args.out or run.path / "circuit"
    check_writable_dir(prefix.parent, "--out")
    step, phase = checkpoint_phase(run, args.step)
    split, p = run.data(phase), run.config.train.phases[phase].p
    checked = "test" if args.on == "auto" else args.on  # auto: refused beyond the test set, printed as used on train
    first_n(getattr(split, f"x_{checked}"), args.n, 2048, f"{checked} inputs of phase {phase} (p = {p})")
    circuit = circuit_at(run, step, on=args.on, n=args.n or 2048, threshold=args.threshold,
                         device=resolve_device(args.device))
    title = (f"{run.path.name} at step {step} (p = {p}): circuit on {circuit.inputs} inputs "
             f"(accuracy {circuit.base_accuracy:.3f})")
    # plotly.js once beside the page (plotly.min.js), shared by every diagram of the folder, not 3.6 MB in each
    html = write_html([circuit_figure(circuit, title)], prefix.with_suffix(".html"), title, plotlyjs="beside")
    svg = write_circuit_svg(circuit, prefix.with_suffix(".svg"), title)
    for name, effect in circuit.effects.items():
        print(f"  {name:<10} effect {effect:+.4f}{'' if name not in circuit.pruned else '  (pruned)'}")
    print(f"effect = {circuit.inputs} accuracy lost when mean-ablated (intact - ablated); measured on {circuit.n_inputs} "
          f"{circuit.why}; phase {phase}; diagram written to {html} and {svg}")
    return 0


# ---- clusters ------------------------------------------------------------------------------------
def cmd_clusters(args: argparse.Namespace) -> int:
    from circuitpath.analysis.clusters import default_activation, find_clusters
    from circuitpath.data import truth_of
    from circuitpath.runs import load_run
    from circuitpath.training.train import resolve_device

    run = load_run(args.run)
    if args.n is not None and args.n < 2:
        raise ConfigError(f"--n must be >= 2 (one input makes no partition to compare), got {args.n}")
    if args.out is not None:
        check_writable_dir(args.out.parent, "--out")
    step, phase = checkpoint_phase(run, args.step)
    p, truth = run.config.train.phases[phase].p, truth_of(run.config.task, run.config.train.phases[phase])
    x = first_n(run.data(phase).x_test, args.n, 1024, f"test inputs of phase {phase} (p = {p})")
    hook = args.hook or default_activation(run.config.model)
    found = find_clusters(run.model_at(step, device=resolve_device(args.device)), x, p, truth, activation=hook)
    print(f"{run.path} step {step} (phase {phase}, p = {p}): {hook} of {len(x)} test inputs, "
          f"{found.points.shape[1]} dimensions: {found.n_clusters} cluster{'s' * (found.n_clusters != 1)}")
    if found.n_clusters > 1:
        print("adjusted Rand index of the clusters with each labeling (1: the same partition, 0: chance):")
    else:  # one cluster matches no labeling: how the points are arranged inside it still may
        print("one cluster, so no partition to compare; instead, adjusted Rand index of each labeling with Ward's\n"
              "partition of the points into as many groups as it has classes (1: the same partition, 0: chance):")
    for name, value in (found.alignment if found.n_clusters > 1 else found.separation).items():
        print(f"  {name:<28} {value:+.3f}" + ("  (best)" if name == found.best_labeling else ""))
    if args.out is not None:
        from circuitpath.plots.html import write_html
        from circuitpath.plots.training import clusters_figure

        title = f"{run.path.name} at step {step} (p = {p}): clusters of {hook}"
        print(f"written: {write_html([clusters_figure(found, title)], args.out, title)}")
    return 0


# ---- show -----------------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    from circuitpath.analysis.outcomes import summary_table
    from circuitpath.platform import describe
    from circuitpath.runs import load_run

    run = load_run(args.run)
    bad = unreadable_files(run)
    if bad:  # refused before anything is printed: the error is the one line
        more = f" (and {len(bad) - 1} more unreadable: {', '.join(str(path.relative_to(run.path)) for path, _ in bad[1:])})"
        raise CheckpointError(bad[0][1] + (more if len(bad) > 1 else ""))
    steps = run.steps
    status = run.status
    if status == "running" and not run.is_being_written():
        status = f"interrupted (marked running, but no process is writing it; resume with circuitpath train --resume {run.path})"
    print(f"run {run.path}  status: {status}  circuitpath {run.info.get('circuitpath', '?')}")
    print(f"platform: {describe(run.info.get('platform'))}")
    print(f"pinning: {run.info.get('pinning', 'native (not recorded: written before circuitpath pinned kernels)')}")
    print(json.dumps(shown_config(run.config), indent=2))
    print(f"{len(steps)} checkpoints" + (f", steps {steps[0]}..{steps[-1]}" if steps else ""))
    if run.metrics:
        print(summary_table({run.path.name: run}))
    return 0


def shown_config(config) -> dict:
    """The run's config as run.json holds it, less the transformer's fields on the paper's model (which has no CLS
    token, one layer and one head whatever they say)."""
    from circuitpath.config import TRANSFORMER_FIELDS

    data = config.to_dict()
    if config.model.arch != "transformer":
        data["model"] = {key: value for key, value in data["model"].items() if key not in TRANSFORMER_FIELDS}
    return data


def unreadable_files(run) -> list[tuple[Path, str]]:
    """Every tensor file of a run (checkpoints, resume states, each phase's data) that is missing or fails its
    checksum, with the reason; checkpoints first."""
    from circuitpath.errors import CircuitPathError
    from circuitpath.runs import CHECKPOINT_DIR, DATA_DIR, STATE_DIR, data_file
    from circuitpath.runs.storage import verify_tensors

    paths = [*sorted((run.path / CHECKPOINT_DIR).glob("*.safetensors")),
             *sorted((run.path / STATE_DIR).glob("*.safetensors")),
             *(run.path / DATA_DIR / data_file(i) for i in range(len(run.config.train.phases)))]
    bad = []
    for path in paths:
        try:
            verify_tensors(path)  # from the raw bytes: show needs no torch
        except CircuitPathError as error:
            bad.append((path, str(error)))
    return bad
