"""The circuit over training in a thesis study cell: scratch against curriculum, over seeds.

Read from the checkpoints `analyses/thesis_study.py` keeps: in OUT/main every 250 steps; in the other
cells (`--cell width`, `--cell random`) only step 0, the switch S and the end N, so there the curriculum is
read at 0, S and N and scratch at 0 and N (--every defaults to N there), and "from step" is as coarse.
By the rules of the section "The circuit over training" of analyses/thesis_study_plan.md, fixed before the
study ran:

1. discovery: the AUROC of each method's input-position scores against the truth (the first k
   positions) at every --every steps (`discovery.positions`: the standard transformer's graph is its
   input positions); per arm the median over seeds, per seed the step from which it stays >= 0.99;
2. attention: each head's attention from the readout position on the relevant positions (`readout_flow`);
3. clusters of the readout residual at the switch S and the end N (`clusters.find_clusters`): is the
   best-aligned labelling the count of ones among the relevant positions (z_A in the paper's Fig. 4)?
4. carry-over: the heads whose mean-ablation at S costs p = 2 test accuracy >= 0.1 ("p = 2 heads"),
   mean-ablated together at N on p = 4 test data, against as many other heads (those with the smallest
   p = 2 cost, or all the others if fewer).

Run: `python analyses/thesis_circuit.py [OUT] [--cell main] [--seeds 0-7] [--every 1000]` (OUT default
runs/thesis_study, seeds default the sweep's). Writes OUT/circuit.json and OUT/circuit.html for the main
cell, OUT/circuit_CELL.json and .html for another. Each run's reading is saved as it ends, in
OUT/circuit_reads/CELL/ARM/seed_N.json, so a command stopped part-way resumes where it was; a saved reading
is used again only where the run and every setting it was read with are the same.
"""

# %%
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots
import torch
from sklearn.metrics import adjusted_rand_score

from circuitpath.analysis.ablation import ablate, ablate_heads
from circuitpath.analysis.clusters import default_activation, find_clusters, ward_agreement
from circuitpath.analysis.discovery.methods import METHODS
from circuitpath.analysis.discovery.positions import discover_positions
from circuitpath.analysis.flow import readout_flow
from circuitpath.analysis.threads import single_threaded
from circuitpath.config import TrainConfig, parse_phases
from circuitpath.data import positions_of, truth_of
from circuitpath.errors import CircuitPathError, InputError
from circuitpath.paper.report.page import Page, Panel
from circuitpath.plots.style import TEMPLATE, class_colour
from circuitpath.runs import RUN_JSON, Run, load_run
from circuitpath.runs.storage import write_json
from circuitpath.sweep import parse_seeds, run_path
from circuitpath.sweep.spec import load_spec

ARMS = ("scratch", "curriculum")
MAIN = "main"  # the cell whose outputs keep the unsuffixed names
EVERY = 1000  # the main cell's default steps between checkpoints read
CELLS = (MAIN, "width", "random")
LEVEL = 0.99  # the AUROC a method holds from the step reported
COST = 0.1  # a head whose mean-ablation at S costs p = 2 test acc >= this carried p = 2
ONES = "ones among the relevant positions"
CONTROL_RULE = ("the other heads: as many as there are p = 2 heads, those whose ablation at S cost p = 2 "
                "test acc least (ties by layer, then head), or all the other heads if fewer")


# %% What is read, checked before anything is computed or written
@dataclass(frozen=True)
class Study:
    out: Path
    cell: str
    seeds: tuple[int, ...]
    switch: int  # S: the curriculum's p = 2 steps
    steps: int  # N: every run's steps
    every: int
    n: int  # test inputs probed at each checkpoint
    scratch_at_switch: bool = True  # scratch has a checkpoint at S (a cell keeping every one, on a grid through S)

    def timeline(self, arm: str) -> list[int]:
        """The steps the arm is read at: every --every steps from 0 to N, and N; S too, where the arm has it (the
        curriculum always: its phase ends there)."""
        switch = {self.switch} if self.scratch_at_switch or arm == "curriculum" else set()
        return sorted(set(range(0, self.steps + 1, self.every)) | switch | {self.steps})

    def cluster_steps(self, arm: str) -> list[int]:
        """S and N, as far as the arm's timeline has them."""
        return [s for s in (self.switch, self.steps) if s in self.timeline(arm)]

    def run(self, arm: str, seed: int) -> Run:
        return load_run(run_path(self.out / self.cell, arm, seed))

    def output_path(self, suffix: str) -> Path:
        """OUT/circuit.SUFFIX for the main cell, OUT/circuit_CELL.SUFFIX for another."""
        return self.out / (f"circuit.{suffix}" if self.cell == MAIN else f"circuit_{self.cell}.{suffix}")


def study_of(args: argparse.Namespace) -> Study:
    if args.cell not in CELLS:
        raise InputError(f"--cell must be one of {', '.join(CELLS)}, got {args.cell!r}")
    where = args.out / args.cell
    try:
        spec = load_spec(where)
    except CircuitPathError:
        raise InputError(f"{args.out} has no {args.cell} cell (no sweep in {where}); give the thesis study's OUT "
                         f"and one of its cells") from None
    if set(spec["experiments"]) != set(ARMS):
        raise InputError(f"{where} is a sweep of {', '.join(sorted(spec['experiments']))}, not of {', '.join(ARMS)}")
    swept = list(spec["seeds"])
    seeds = tuple(parse_seeds(args.seeds)) if args.seeds else tuple(swept)
    missing = [s for s in seeds if s not in swept]
    if missing:
        raise InputError(f"seed {missing[0]} is not in the sweep {where} (its seeds: {swept})")
    phases = parse_phases(spec["experiments"]["curriculum"])
    interval = TrainConfig(**spec.get("train", {})).checkpoint_every
    keeps_all = spec.get("keep_checkpoints", "all") == "all"
    every = args.every if args.every is not None else (EVERY if keeps_all else interval)
    if every < 1 or every % interval:
        raise InputError(f"--every must be a positive multiple of the checkpoint interval {interval}, got {every}")
    if args.n < 2:
        raise InputError(f"--n must be at least 2 (discovery corrupts inputs with each other), got {args.n}")
    return Study(args.out, args.cell, seeds, phases[0].steps, sum(ph.steps for ph in phases), every, args.n,
                 scratch_at_switch=keeps_all and phases[0].steps % interval == 0)


def lacking(run: Run, steps: list[int]) -> str | None:
    """Why the run cannot be read at `steps` (one line), or None."""
    absent = [s for s in steps if s not in run.steps]
    if absent:
        more = " ..." if len(absent) > 3 else ""
        return f"{run.path} has no checkpoint at step {', '.join(map(str, absent[:3]))}{more}"
    return None


# %% Per run: discovery and attention over training, clusters at S and N
def timeline_of(run: Run, steps: list[int], n: int) -> dict:
    """AUROC of each method at each step, the step from which it stays >= LEVEL, and the readout's attention
    mass on the relevant positions [step][layer][head]."""
    found = discover_positions(run, METHODS, n=n, steps=steps)
    flow = readout_flow(run, steps, n)
    return {"auroc": {m: found.auroc(m).tolist() for m in METHODS},
            "stays_from": {m: found.stays_from(m, LEVEL) for m in METHODS},
            "scores": {m: found.scores[m].tolist() for m in METHODS},
            "accuracy": found.accuracy.tolist(), "mass": flow.mass().tolist()}


def clusters_at(run: Run, step: int, n: int) -> dict:
    """Clusters of the readout residual on the step's phase's test inputs, the best-aligned labelling and its ARI
    (with the clusters, or without clusters with Ward's partition into as many groups), and whether it is the count
    of ones among the relevant positions (ties count as it: at p = 2 it is the same partition as the counts)."""
    phase = run.config.train.phases[run.phase_at(step)]
    truth = truth_of(run.config.task, phase)
    tokens = run.data(run.phase_at(step)).x_test[:n]
    model = run.model_at(step)
    found = find_clusters(model, tokens, phase.p, truth, default_activation(model.cfg))
    ones = (tokens[:, list(positions_of(truth))] == 1).sum(1)
    if found.n_clusters > 1:
        scores = found.alignment | {ONES: float(adjusted_rand_score(ones.numpy(), found.labels.numpy()))}
    else:
        scores = found.separation | ward_agreement(found.points, {ONES: ones})
    scores = {name: (value if value == value else -1.0) for name, value in scores.items()}  # NaN: one class
    best = ONES if scores[ONES] >= max(scores.values()) else max(scores, key=scores.get)
    return {"step": step, "p": phase.p, "n_clusters": found.n_clusters, "best": best, "ari": scores[best],
            "ones": best == ONES, "scores": scores}


# %% Carry-over (curriculum): the heads that carried p = 2, ablated at N
def head_costs(model, tokens, labels) -> dict[tuple[int, int], float]:
    """p = 2 test accuracy lost when each head alone is mean-ablated (its hook_z over head_index)."""
    costs = {}
    for layer in range(model.cfg.n_layers):
        result = ablate(model, tokens, labels, hook=f"blocks.{layer}.attn.hook_z", over=("head_index",), method="mean")
        costs |= {(layer, head): float(lost) for head, lost in enumerate(result.effect)}
    return costs


def carry_over(run: Run, switch: int, steps: int, n: int) -> dict:
    """The p = 2 heads at S (cost >= COST), and the p = 4 test accuracy lost at N with them, and with as many
    other heads, mean-ablated together."""
    p2, p4 = run.data(0), run.data(1)
    costs = head_costs(run.model_at(switch), p2.x_test[:n], p2.y_test[:n])
    carried = [head for head, cost in costs.items() if cost >= COST]
    others = sorted((h for h in costs if h not in carried), key=lambda h: (costs[h], h))[:len(carried)]
    record = {"costs": {f"L{l}H{h}": c for (l, h), c in costs.items()}, "p2_heads": [f"L{l}H{h}" for l, h in carried],
              "other_heads": [f"L{l}H{h}" for l, h in others]}
    if not carried:
        return record | {"lost": None, "note": f"no head's ablation costs p = 2 test acc >= {COST}"}
    sets = {"p2_heads": carried} | ({"other_heads": others} if others else {})
    result = ablate_heads(run.model_at(steps), p4.x_test[:n], p4.y_test[:n], sets, "mean")
    return record | {"base_p4_acc": result.base_accuracy, "lost": dict(zip(result.names, result.effect.tolist()))}


# %% Over seeds, in processes; each run's reading saved as it ends
READ_VERSION = 1  # raise it when what `read_one` computes changes: readings saved before are then read again
READS = "circuit_reads"  # OUT/circuit_reads/CELL/ARM/seed_N.json: one run's reading, so a stopped command resumes


def read_key(study: Study, arm: str, run: Run) -> dict:
    """What a saved reading must have been read with to stand for this one (the run by its run.json: a run's
    bytes follow from its config)."""
    return {"version": READ_VERSION, "run": hashlib.sha256((run.path / RUN_JSON).read_bytes()).hexdigest(),
            "steps": study.timeline(arm), "clusters": study.cluster_steps(arm), "switch": study.switch,
            "n": study.n, "level": LEVEL, "cost": COST}


def saved_reading(study: Study, arm: str, seed: int) -> Path:
    return study.out / READS / study.cell / arm / f"seed_{seed}.json"


def _saved(where: Path) -> dict | None:
    """A saved reading, or None where there is none or it is not one (then the run is read again)."""
    try:
        saved = json.loads(where.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def read_one(study: Study, arm: str, seed: int) -> tuple[dict | None, str | None, bool]:
    """One run's timeline and clusters at S and N (and the carry-over in the curriculum), or why it cannot be read;
    and whether it was saved by an earlier command (read with the same key) rather than read now."""
    try:
        with single_threaded():  # small forwards: a second thread only waits on busy cores
            run = study.run(arm, seed)
            why = lacking(run, study.timeline(arm))
            if why is not None:
                return None, why, False
            key, where = read_key(study, arm, run), saved_reading(study, arm, seed)
            saved = _saved(where)
            if saved is not None and saved.get("key") == key and "reading" in saved:
                return saved["reading"], None, True
            done = timeline_of(run, study.timeline(arm), study.n) | {
                "clusters": [clusters_at(run, s, study.n) for s in study.cluster_steps(arm)]}
            if arm == "curriculum":
                done["carry_over"] = carry_over(run, study.switch, study.steps, study.n)
            where.parent.mkdir(parents=True, exist_ok=True)
            write_json(where, {"key": key, "reading": done})
            return done, None, False
    except CircuitPathError as error:
        return None, str(error).splitlines()[0], False


def end_with(parent: int) -> None:
    """A reading process's first act: watch `parent`, and exit as soon as it has ended. A parent killed outright
    (SIGKILL, out of memory) cannot shut its pool down, and the pool's processes would otherwise wait for work
    forever, holding their memory. Only the reading under way is lost; every finished one is saved."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def read_arms(study: Study, jobs: int) -> tuple[dict[str, tuple[dict[int, dict], dict[int, str]]], int]:
    """Per arm, per seed: what `read_one` gives, the runs read `jobs` at a time (a line as each one ends); and how
    many readings were saved by an earlier command."""
    todo = [(arm, seed) for arm in ARMS for seed in study.seeds]
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo))), initializer=end_with,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(read_one, study, arm, seed): (arm, seed) for arm, seed in todo}
        for count, future in enumerate(as_completed(futures), 1):
            earlier = " (saved by an earlier command)" if future.result()[2] else ""
            print(f"  read {count}/{len(todo)}: {'/'.join(map(str, futures[future]))}{earlier}", flush=True)
        found = {key: future.result() for future, key in futures.items()}
    return ({arm: ({s: found[arm, s][0] for s in study.seeds if found[arm, s][0] is not None},
                   {s: found[arm, s][1] for s in study.seeds if found[arm, s][1] is not None}) for arm in ARMS},
            sum(result[2] for result in found.values()))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summary(study: Study, arm: str, per_seed: dict[int, dict]) -> dict:
    """Medians over the seeds read: AUROC per method and step, attention mass per step, layer and head; cluster
    and carry-over counts."""
    seeds, steps = list(per_seed), study.timeline(arm)
    auroc = {m: [median([per_seed[s]["auroc"][m][i] for s in seeds]) for i in range(len(steps))] for m in METHODS}
    # the median of an even count is the mean of the middle two, as statistics.median gives it (torch's median
    # would give the lower one)
    mass = torch.tensor([per_seed[s]["mass"] for s in seeds]).quantile(0.5, dim=0).tolist() if seeds else []
    clusters = [{"step": step, "ones": [s for s in seeds if per_seed[s]["clusters"][i]["ones"]], "of": seeds}
                for i, step in enumerate(study.cluster_steps(arm))]
    return {"seeds": seeds, "auroc": auroc, "mass": mass, "clusters": clusters,
            "stays_from": {m: {s: per_seed[s]["stays_from"][m] for s in seeds} for m in METHODS}}


def carry_summary(per_seed: dict[int, dict]) -> dict:
    with_heads = {s: r["carry_over"] for s, r in per_seed.items() if r["carry_over"]["lost"] is not None}
    compared = [s for s, c in with_heads.items() if "other_heads" in c["lost"]]
    return {"rule": CONTROL_RULE, "cost": COST, "with_p2_heads": list(with_heads),
            "without": [s for s in per_seed if s not in with_heads],
            "median_lost_p2_heads": median([c["lost"]["p2_heads"] for c in with_heads.values()]),
            "median_lost_other_heads": median([with_heads[s]["lost"]["other_heads"] for s in compared]),
            "p2_heads_cost_more": [s for s in compared
                                   if with_heads[s]["lost"]["p2_heads"] > with_heads[s]["lost"]["other_heads"]],
            "compared": compared}


# %% Printing
def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def head_names(mass: list) -> list[str]:
    """L0H0, L0H1, ... for a [layer][head] nesting."""
    return [f"L{l}H{h}" for l, heads in enumerate(mass) for h in range(len(heads))]


def lines(study: Study, results: dict) -> list[str]:
    """Short tables: AUROC medians and attention mass at a few steps, per-seed stays-from, clusters, carry-over."""
    out = []
    for arm in ARMS:
        steps = study.timeline(arm)
        shown = sorted(({0, study.switch, study.steps} & set(steps)) | set(steps[:: max(1, len(steps) // 6)]))
        summ, skipped = results[arm]["summary"], results[arm]["skipped"]
        out += [f"\n{arm}: seeds {summ['seeds']}"] + [f"  seed {s} left out: {why}" for s, why in skipped.items()]
        if not summ["seeds"]:
            continue
        out.append("  step   " + "".join(f"{m:>13}" for m in METHODS) + "   attention on relevant (median), "
                   + " ".join(head_names(summ["mass"][0])))
        for step in shown:
            i = steps.index(step)
            heads = " ".join(f"{v:.2f}" for layer in summ["mass"][i] for v in layer)
            out.append(f"  {step:>6} " + "".join(f"{fmt(summ['auroc'][m][i], 3):>13}" for m in METHODS) + f"   {heads}")
        for m in METHODS:
            held = ", ".join(f"{s}: {'never' if v is None else v}" for s, v in summ["stays_from"][m].items())
            out.append(f"  AUROC >= {LEVEL} from step (of those read), {m}: {held}")
        for c in summ["clusters"]:
            per = ", ".join(f"{s}: {r['best']} {r['ari']:.2f} ({r['n_clusters']} cl)" for s, r in
                            ((s, next(x for x in results[arm]["per_seed"][s]["clusters"] if x["step"] == c["step"]))
                             for s in c["of"]))
            out.append(f"  clusters at {c['step']}: best = {ONES} on {len(c['ones'])}/{len(c['of'])} "
                       f"seeds {c['ones']}; per seed {per}")
    carry = results["curriculum"].get("carry")
    if carry:
        out.append(f"\ncarry-over (curriculum): p = 2 heads cost p = 2 test acc >= {COST} at S = {study.switch}; "
                   f"control: {CONTROL_RULE}")
        for s, r in results["curriculum"]["per_seed"].items():
            c = r["carry_over"]
            lost = ("; ".join(f"{k} {c['lost'][k]:.3f}" for k in c["lost"]) if c["lost"] else c["note"])
            base = f" of {c['base_p4_acc']:.3f}" if "base_p4_acc" in c else ""
            out.append(f"  seed {s}: p = 2 heads {c['p2_heads'] or 'none'}, others {c['other_heads'] or 'none'}; "
                       f"p = 4 test acc lost at N = {study.steps}{base}: {lost}")
        out.append(f"  median lost: p = 2 heads {fmt(carry['median_lost_p2_heads'], 3)} "
                   f"(seeds {carry['with_p2_heads']}), other heads {fmt(carry['median_lost_other_heads'], 3)} "
                   f"(seeds {carry['compared']}); p = 2 heads "
                   f"cost more on {len(carry['p2_heads_cost_more'])}/{len(carry['compared'])}; no p = 2 head: "
                   f"seeds {carry['without'] or 'none'}")
    return out


# %% Figures and the page
DASH = {"scratch": "dash", "curriculum": "solid"}


def truth_words(cell: str) -> str:
    """What a cell's truth is, in a figure's words: the random cell sums positions drawn per seed."""
    return "each seed's drawn positions" if cell == "random" else "the first k positions"


def auroc_figure(study: Study, results: dict) -> go.Figure:
    figure = go.Figure()
    for arm in ARMS:
        summ = results[arm]["summary"]
        for i, m in enumerate(METHODS if summ["seeds"] else ()):
            figure.add_scatter(x=study.timeline(arm), y=summ["auroc"][m], name=f"{arm}, {m}", mode="lines+markers",
                               line={"dash": DASH[arm], "color": class_colour(i)})
    figure.add_vline(x=study.switch, line_dash="dot", annotation_text=f"switch S = {study.switch}")
    title = f"AUROC of each method's position scores against {truth_words(study.cell)} (median over seeds)"
    figure.update_layout(template=TEMPLATE, title=title, xaxis_title="step", yaxis_title="AUROC", yaxis_range=[0, 1.02])
    return figure


def mass_figure(study: Study, results: dict) -> go.Figure:
    """One heatmap per arm: each head's median attention mass on the relevant positions (rows) at each step read."""
    arms = [arm for arm in ARMS if results[arm]["summary"]["mass"]]
    figure = make_subplots(rows=1, cols=max(1, len(arms)), shared_yaxes=True, horizontal_spacing=0.04,
                           subplot_titles=arms or ["no run read"])
    for col, arm in enumerate(arms, 1):
        mass = results[arm]["summary"]["mass"]  # [step][layer][head]
        heads = head_names(mass[0])
        z = [[v for layer in step for v in layer] for step in mass]
        steps = [str(step) for step in study.timeline(arm)]  # one column a checkpoint read, however far apart
        figure.add_heatmap(x=steps, y=heads, z=[list(row) for row in zip(*z)], zmin=0, zmax=1,
                           colorscale="Viridis", showscale=col == len(arms), colorbar={"title": "mass"},
                           hovertemplate="step %{x}<br>%{y}<br>mass %{z:.2f}<extra>" + arm + "</extra>", row=1, col=col)
        if str(study.switch) in steps:
            after = steps.index(str(study.switch)) + 0.5
            figure.add_vline(x=after, line_dash="dot", line_color="white", row=1, col=col)
        figure.update_xaxes(title_text="step (checkpoints read)", type="category", row=1, col=col)
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(template=TEMPLATE, title="Readout attention on the relevant positions, per head (median "
                         "over seeds)")
    return figure


def write_page(study: Study, results: dict, text: list[str]) -> Path:
    page = Page(f"The circuit over training: scratch against curriculum ({study.cell} cell)")
    page.items([f"OUT {study.out}, seeds {list(study.seeds)}, switch S = {study.switch}, N = {study.steps}, "
                f"every {study.every} steps, {study.n} test inputs probed per checkpoint"])
    page.panel(Panel(auroc_figure(study, results), "Look for when each arm's lines reach 1: the methods rank "
                     f"{truth_words(study.cell)} above the rest. Dashed: scratch; solid: curriculum."))
    page.panel(Panel(mass_figure(study, results), "Look for heads (rows) turning bright: their attention from the "
                     "readout concentrates on the relevant positions. Do the curriculum's do so before the switch? The dotted "
                     "line is the switch, just after the column of its checkpoint."))
    page.heading("Tables")
    page.raw('<pre style="white-space: pre-wrap">' + "\n".join(t.replace("&", "&amp;").replace("<", "&lt;") for t in text) + "</pre>")
    return page.write(study.output_path("html"))


# %% Command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", nargs="?", type=Path, default=Path("runs/thesis_study"))
    parser.add_argument("--cell", default=MAIN, help="the study's cell to read: main (default), width or random")
    parser.add_argument("--seeds", help="seeds of the cell, e.g. 0-7 (default: the sweep's)")
    parser.add_argument("--every", type=int, help=f"steps between the checkpoints read (default {EVERY} in the "
                        "main cell; in the others, which keep only 0, S and N: N)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="runs read at once, each in its own process on one thread (default: the cores)")
    parser.add_argument("--n", type=int, default=1024, help="test inputs probed per checkpoint (default 1024)")
    return parser.parse_args(argv)


def fail(message: str) -> None:
    print(f"thesis_circuit: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        study = study_of(args)
    except CircuitPathError as error:
        fail(str(error).splitlines()[0])
    if args.jobs < 1:
        fail(f"--jobs must be at least 1, got {args.jobs}")
    start, results = time.perf_counter(), {}
    print(f"{study.out / study.cell}: seeds {list(study.seeds)}, S = {study.switch}, N = {study.steps}, "
          + ", ".join(f"{arm} at {len(study.timeline(arm))} checkpoints a run" for arm in ARMS), flush=True)
    arms, earlier = read_arms(study, args.jobs)
    for arm, (per_seed, skipped) in arms.items():
        results[arm] = {"per_seed": per_seed, "skipped": skipped, "summary": summary(study, arm, per_seed)}
        if arm == "curriculum" and per_seed:
            results[arm]["carry"] = carry_summary(per_seed)
    wall = time.perf_counter() - start
    saved = f" ({earlier} of {2 * len(study.seeds)} runs' readings saved by an earlier command)" if earlier else ""
    text = lines(study, results) + [f"\nread in {wall:.0f} s here{saved}"]
    print("\n".join(text))
    record = {"out": str(study.out), "cell": study.cell, "seeds": list(study.seeds), "switch": study.switch,
              "steps": study.steps, "every": study.every, "n": study.n,
              "timelines": {arm: study.timeline(arm) for arm in ARMS}, "methods": list(METHODS),
              "level": LEVEL, "cost": COST, "control_rule": CONTROL_RULE, "wall_s": wall, "saved_earlier": earlier,
              "arms": results}
    write_json(study.output_path("json"), record)
    page = write_page(study, results, text)
    print(f"written: {study.output_path('json')}, {page}")
    return record


if __name__ == "__main__":
    main()
