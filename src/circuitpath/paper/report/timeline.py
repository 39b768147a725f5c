"""Beyond the paper: the circuit found at every checkpoint, scored against the task's exact truth.

The paper's thesis, that training reinforces the useful circuit and prunes the spurious one, read
off `circuitpath.analysis.discovery` for the scratch and curriculum runs. The report runs only the
cheapest method, attribution patching (one forward and one backward per checkpoint): all three
methods cost about 1.6x as much (see `METHODS_COST`), and `reproduce` is already past its time budget
on training alone. `circuitpath discover RUN` runs every method on any run.
"""

from __future__ import annotations

from circuitpath.analysis.discovery import DiscoveryConfig, discover, save_timeline
from circuitpath.analysis.discovery.positions import discover_positions, save_positions
from circuitpath.analysis.discovery.prune import DEFAULTS, describe_rule
from circuitpath.analysis.discovery.timeline import LEVEL
from circuitpath.analysis.models import is_paper
from circuitpath.paper.report.page import Panel
from circuitpath.paper.report.section import Context, Section, is_transformer, runs_text
from circuitpath.plots.discovery import discovery_figures, position_figures
from circuitpath.runs import ANALYSIS_DIR

METHOD = "attribution"
#: The report's copy of each run's discovery goes here, beside (never over) RUN/analysis/discovery/,
#: which belongs to `circuitpath discover` and is replaced only with its --force.
REPORT_DISCOVERY_DIR = "discovery_report"
#: The circuit drawn at each checkpoint: discovery's default rule, positions and neurons on separate budgets.
BUDGET_RULE = describe_rule("budgets", DEFAULTS["budgets"])
METHODS_COST = ("Cost: `circuitpath discover RUN` on the paper's curriculum run (61 checkpoints, 1 024 inputs) takes "
                "8.1-8.6 s of CPU with --method attribution and 12.9-13.5 s with all three methods, as a fresh "
                "process (the README's benchmarks). Attribution is a first-order estimate; on seed 0 of the paper's runs it reaches "
                "0.99 at the same checkpoint as the other two (step 1 250 of the curriculum). `circuitpath discover "
                "RUN` runs all three.")

CAPTIONS = {
    "auroc": "AUROC of the position scores against the truth (the task's relevant positions summed, 0..k-1 in the "
             "paper's task; the rest not) at each "
             "checkpoint: 1 means every summed position outranks every spurious one, 0.5 is chance. The legend gives the "
             "step from which each run stays >= 0.99 (and its first arrival, when it fell back in between); look "
             "also at the curriculum's p = 2 phase.",
    "circuit": "The circuit attribution patching keeps at each checkpoint (move the slider): orange nodes are the "
               "summed positions (v3: position 3's value, a3: its attention weight), grey the spurious ones, n12 "
               f"MLP neuron 12; width is the score. Positions and neurons have separate budgets ({BUDGET_RULE}), "
               "so a position the AUROC counts is never dropped for a neuron. Spurious nodes should fade as "
               "training prunes them.",
    "positions": "A standard transformer has no single query to draw a graph of: its nodes are the input positions "
                 "(the first residual stream at each, blocks.0.hook_resid_pre), scored by attribution patching at "
                 "every checkpoint; the curve is their AUROC against the truth of each checkpoint's phase (1: every "
                 "relevant position outscores every spurious one; 0.5: chance).",
    "position_scores": "Each input position's attribution score (the mean over inputs of |(corrupted - clean) . "
                       "gradient|) at each checkpoint; the relevant positions are left of the red line when they are "
                       "the first k, else starred on the axis (3*). Spurious columns should fade.",
    "faithfulness": "Accuracy with only the top-n nodes kept, the rest mean-ablated, at the last checkpoint: a "
                    "curve that reaches the model's own accuracy (dotted) with few nodes means a small circuit.",
    "pruning": "The paper's red and blue arrows, measured: per interval between checkpoints, which position edges "
               "grew (red) or shrank (blue), and the share of the grown ones that are spurious, which the thesis "
               "says falls to 0. Look for when each run last strengthens a spurious edge.",
}


def timelines(ctx: Context) -> dict:
    """Attribution scores at every checkpoint of every run of the paper's model, saved to RUN/analysis/discovery_report/."""
    config = DiscoveryConfig(methods=(METHOD,), n=max(2, min(ctx.n, 1024)))
    out = {}
    for name, run in ctx.runs.items():
        if not is_paper(run.config.model):
            continue
        out[name] = discover(run, config, progress=False)
        save_timeline(out[name], run.path / ANALYSIS_DIR / REPORT_DISCOVERY_DIR)
    return out


def position_timelines(ctx: Context) -> dict:
    """A standard transformer's input positions scored by attribution at every checkpoint (`discovery.positions`),
    saved to RUN/analysis/discovery_report/positions.json."""
    out = {}
    for name, run in ctx.runs.items():
        if is_paper(run.config.model):
            continue
        out[name] = discover_positions(run, (METHOD,), n=max(2, min(ctx.n, 1024)))
        save_positions(out[name], run.path / ANALYSIS_DIR / REPORT_DISCOVERY_DIR)
    return out


def _headline(ctx: Context, name: str, timeline) -> None:
    """The first step the AUROC reaches LEVEL and the step from which it stays there (-1: not so)."""
    first, stays = timeline.first_reaching(METHOD), timeline.stays_from(METHOD)
    headline = ctx.headlines.run(name)
    headline.circuit_found_at, headline.circuit_stays_from = (-1 if s is None else s for s in (first, stays))


def build(ctx: Context) -> list[Panel]:
    panels = []
    positions = position_timelines(ctx)
    for name, timeline in positions.items():
        _headline(ctx, name, timeline)
    if positions:
        figures = position_figures(positions, "input positions' attribution scores against the truth")
        panels += [Panel(figures[0], CAPTIONS["positions"])] + [Panel(f, CAPTIONS["position_scores"]) for f in figures[1:]]
    found = timelines(ctx)
    if not found:
        return panels
    for name, timeline in found.items():
        _headline(ctx, name, timeline)
    figures = discovery_figures(found, METHOD)
    kinds = ["auroc"] + ["circuit", "faithfulness"] * len(found) + (["pruning"] if len(figures) > 1 + 2 * len(found) else [])
    return [Panel(figure, CAPTIONS[kind]) for figure, kind in zip(figures, kinds)] + panels


def applies(runs) -> bool:
    """Some run has checkpoints and a spurious position in every phase (a truth to tell apart)."""
    def has_truth(run) -> bool:
        return all(run.config.task.spurious_positions(phase) for phase in run.config.train.phases)
    return any(has_truth(run) and run.steps for run in runs.values())


TRANSFORMER_INTRO = (f"Attribution patching scores each input position of {{runs}} at every saved checkpoint (the first "
                     f"residual stream at each position, blocks.0.hook_resid_pre), and the scores are compared with the "
                     f"truth of the checkpoint's phase (the task's relevant positions); AUROC >= {LEVEL} counts as "
                     "having found them. Attribution is the cheapest method (one forward and one backward pass per "
                     "checkpoint); `circuitpath discover RUN` also runs activation patching and ablation.")
SECTION_TITLE = "Circuit timeline: the circuit at every checkpoint, scored against the truth"
SECTION_INTRO = (f"Attribution patching scores every node and edge of the model at every saved checkpoint (a standard "
          f"transformer's: its input positions); its position "
          f"scores are compared with the truth (the task's relevant positions, the first k in the paper's task). An extension of the paper's "
          f"thesis, on the runs of Fig. 5; AUROC >= {LEVEL} counts as having found the circuit. {METHODS_COST}")

SECTION = Section(
    key="timeline", title=SECTION_TITLE, figure=None, claims=(), intro=SECTION_INTRO,
    build=build, applies=applies, experiments=("scratch", "curriculum"),
    needs="the circuit timeline needs a run with checkpoints and a spurious position in every phase (a truth to tell "
          "apart)",
    heading=lambda runs: (SECTION_TITLE, TRANSFORMER_INTRO.format(runs=runs_text(runs)) if is_transformer(runs)
                          else SECTION_INTRO),
)
