"""The HTML report: a text head, then one section per figure of the paper (and one extension).

`build_report(runs, path)` reports on any runs (`circuitpath analyze`): every section that applies
to them. `build_paper_report(...)` is what `circuitpath reproduce` writes: it opens with what was
run and the claims measured over seeds, then draws each chosen figure's section on one seed.

Adding a figure or a claim is one new module here with a `SECTION` (see `section.Section`), listed
in `SECTIONS`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from circuitpath.analysis.threads import single_threaded
from circuitpath.paper.claims import SHOWN_SEED_RULE, VIS_SEED_RULE, Claim
from circuitpath.paper.presets import FIGURES, is_vis
from circuitpath.paper.report import (circuits, fig2_flow, fig3_attention, fig4_clusters, fig5_accuracy, fig6_barrier,
                                      fig7_trajectory, timeline)
from circuitpath.paper.report.headlines import Headlines, RunHeadline
from circuitpath.paper.report.page import Page
from circuitpath.paper.report.section import Context, Section, drawable, is_transformer
from circuitpath.runs import Run

#: Every section, in the order of the page.
SECTIONS: list[Section] = [s.SECTION for s in (fig2_flow, fig3_attention, fig4_clusters, fig5_accuracy, circuits,
                                                 timeline, fig6_barrier, fig7_trajectory)]


def sections_for(figures: list[int]) -> list[Section]:
    """The sections of the given figures; the extensions (circuits, circuit timeline) come with Fig. 5 (they
    read the same runs)."""
    return [s for s in SECTIONS if (s.figure in figures) or (s.figure is None and 5 in figures)]


def _version() -> str:
    from circuitpath import __version__

    return __version__


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_rows(runs: dict[str, Run]) -> list[list[str]]:
    rows = []
    for name, run in runs.items():
        c = run.config
        phases = ", ".join(f"p={ph.p}: {ph.steps} steps, lr {ph.lr:g}" + (f", batch {ph.batch_size}" if ph.batch_size else "")
                           for ph in c.train.phases)
        rows.append([name, str(run.path), f"T={c.task.n_ctx}, k={c.task.k}, n={c.task.n_train}", model_text(c.model),
                     phases, f"data {c.task.seed}, weights {c.model.seed}, batches {c.train.seed}",
                     run.info.get("circuitpath", "?")])
    return rows


def model_text(model) -> str:
    """The model's shape in a table cell: the paper's with its residual, a standard transformer's layers,
    heads and readout."""
    shape = f"d={model.d_model}, h={model.d_mlp}"
    if model.arch == "cross_attention":
        return f"{shape}, residual {model.residual}"
    return f"transformer: {model.n_layers} layers, {model.n_heads} heads, {shape}, read out at {model.readout}"


RUN_HEADER = ["run", "directory", "task", "model", "phases", "seeds", "trained with"]


def _draw(page: Page, section: Section, ctx: Context, tested: list[Claim]) -> None:
    with single_threaded():
        panels = section.build(ctx)
    title, intro = section.text(ctx)
    page.heading(title, anchor=section.key)
    page.text(intro + section.claims_note(ctx))
    if tested:
        page.text("Tests: " + "; ".join(f"{c.key} ({c.count}/{c.n} seeds, {c.verdict})" for c in tested), css="tests")
    elif section.claims and is_transformer(ctx.runs):
        page.text("Tests no claim: its claims (" + ", ".join(section.claims) + ") are about the paper's model, "
                  "tested over seeds by `circuitpath reproduce`.", css="tests")
    elif section.claims and not ctx.paper:
        page.text("In a `circuitpath reproduce` report this section tests the claims " + ", ".join(section.claims)
                  + " over seeds.", css="tests")
    elif not section.claims:
        page.text("Tests no claim.", css="tests")
    for panel in panels:
        page.panel(panel)


def build_report(runs: dict[str, Run], path: str | Path, n: int = 1024) -> Headlines:
    """Write the report of arbitrary `runs` to `path` (every section that applies); return its headline numbers."""
    headlines = Headlines()
    body = Page("")
    for section in SECTIONS:
        drawn, left_out = drawable(section, runs)
        if drawn and section.applies(drawn):
            _draw(body, section, Context(runs=drawn, n=n, headlines=headlines), [])
            if left_out:
                body.text(left_out, css="tests")
        elif left_out or section.needs:
            body.heading(section.text(Context(runs=runs))[0], anchor=section.key)
            body.text(left_out or f"Not drawn: {section.needs}.")
    page = Page("circuitpath report: " + ", ".join(runs))
    page.text(f"circuitpath {_version()}, written {_now()}. Runs analysed:")
    page.table(RUN_HEADER, run_rows(runs))
    page.heading("Headline numbers")
    page.items(headlines.lines())
    page.blocks.extend(body.blocks)
    page.write(path)
    headlines.save(runs)
    return headlines


def build_paper_report(
    runs: dict[str, Run],
    claims: list[Claim],
    figures: list[int],
    path: str | Path,
    *,
    seeds: list[int],
    vis_seeds: list[int],
    shown_seeds: dict[str, int],
    command: str,
    n: int = 1024,
) -> Headlines:
    """`reproduce`'s report: what was run and the claims over the seeds, then each figure drawn on one seed.

    `runs` holds the shown run of every experiment the figures need, by experiment name; `shown_seeds`
    says which seed each is (`claims.SHOWN_SEED_RULE`, and `VIS_SEED_RULE` for the d = 2 pipeline).
    """
    headlines = Headlines()
    by_key = {c.key: c for c in claims}
    body = Page("")
    for section in sections_for(figures):
        names = section.experiments or FIGURES[section.figure].experiments
        ctx = Context(runs={name: runs[name] for name in names}, n=n, headlines=headlines, claims=by_key, paper=True)
        _draw(body, section, ctx, [by_key[key] for key in section.claims if key in by_key])
    page = Page("circuitpath: the paper's figures, reproduced")
    page.text(f"Easing Optimization Paths: a Circuit Perspective (Odonnat, Bouaziz, Cabannes, ICASSP 2025), figures "
              f"{', '.join(map(str, figures))}. circuitpath {_version()}, written {_now()}, by `{command}`.")
    main = sorted({s for name, s in shown_seeds.items() if not is_vis(name)})
    vis = sorted({s for name, s in shown_seeds.items() if is_vis(name)})
    page.text(f"Every experiment was trained on {_seed_text(seeds)}, those of the d = 2 pipeline (Figs. 3-4: "
              f"vis_finetune, its variant and vis_scratch) on {_seed_text(vis_seeds)}; a seed sets the data, the "
              "initial weights and the mini-batch order.")
    if main:
        page.text(f"The figures below are drawn on seed {main[0]}: {SHOWN_SEED_RULE}.")
    if vis:
        page.text(f"The d = 2 pipeline's panels are drawn on its seed {vis[0]}: {VIS_SEED_RULE}.")
    page.heading("Claims, measured over seeds")
    claims_table(page, claims)
    page.heading("What was run")
    page.table(RUN_HEADER, run_rows(runs))
    page.text("Each experiment's settings and where they come from (the paper's notebooks, cell by cell) are in "
              "circuitpath.paper.presets; the thresholds of the claims in circuitpath.paper.claims.")
    if headlines.lines():
        page.heading("Headline numbers of the runs drawn")
        page.items(headlines.lines())
    page.blocks.extend(body.blocks)
    page.write(path)
    headlines.save(runs)
    return headlines


def _seed_text(seeds: list[int]) -> str:
    span = ", ".join(map(str, seeds)) if len(seeds) <= 8 else f"{seeds[0]}-{seeds[-1]}"
    return f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({span})"


def claims_table(page: Page, claims: list[Claim]) -> None:
    """Each claim: figure, the paper's sentence, what was measured, count, rate, 95% interval, verdict, seeds."""
    rows, classes = [], {}
    for r, c in enumerate(claims):
        low, high = c.interval
        rows.append([str(c.figure), c.key, c.paper, c.test, f"{c.count}/{c.n}", f"{c.rate:.0%}",
                     f"{low:.0%}–{high:.0%}", c.verdict, ", ".join(map(str, c.seeds_holding)) or "none"])
        classes[(r, 7)] = c.verdict
    page.table(["fig", "claim", "the paper", "measured (holds when)", "holds", "rate", "95% interval (Wilson)",
                "verdict", "seeds where it holds"], rows, numeric={4, 5, 6}, row_classes=classes, css="claims")
    page.text("Verdict: supported when the whole 95% interval lies above 1/2, refuted when it lies below, mixed "
              "otherwise.", css="tests")


__all__ = ["Headlines", "RunHeadline", "SECTIONS", "build_paper_report", "build_report", "sections_for"]
