"""Fig. 5: accuracy along training; over seeds, how often scratch memorises and the curriculum generalises."""

from __future__ import annotations

from circuitpath.experiments import FITS, GENERALISES_AT, MEMORISED_BELOW
from circuitpath.plots import training as plots
from circuitpath.plots.paper import seed_values_figure
from circuitpath.report.page import Panel
from circuitpath.report.section import Context, Section


def build(ctx: Context) -> list[Panel]:
    for name, run in ctx.runs.items():
        ctx.headlines.run(name).test_acc = run.final_metrics()["test_acc"]
    panels = [Panel(plots.accuracy_curves(ctx.runs),
                    "Solid: training accuracy and loss, dashed: test (dotted line: phase switch). In the paper the "
                    "scratch run reaches training accuracy 1 while its test accuracy stays near chance (0.25); the "
                    "curriculum's test accuracy follows its training accuracy to 1 after the switch.")]
    claims = ctx.claims
    if "scratch_memorises" in claims and "curriculum_generalises" in claims:
        series = {"scratch: final test acc": claims["scratch_memorises"].values,
                  "curriculum: final test acc": claims["curriculum_generalises"].values}
        if "p2_solved" in claims:
            series["curriculum: p = 2 test acc at the switch"] = claims["p2_solved"].values
        panels.append(Panel(
            seed_values_figure(series, "Final test accuracy of every seed", "test accuracy",
                               {f"generalises (≥ {GENERALISES_AT})": GENERALISES_AT,
                                f"memorised if train ≥ {FITS} and test < {MEMORISED_BELOW}": MEMORISED_BELOW}),
            "One point per seed (hover for the seed). The claim needs the scratch points below the lower line "
            "and the curriculum points above the upper one; the third column says whether a curriculum that "
            "failed had already failed its p = 2 pretraining."))
    return panels


SECTION = Section(
    key="fig5", title="Fig. 5 — accuracy: scratch memorises, the curriculum generalises", figure=5,
    claims=("scratch_memorises", "curriculum_generalises", "headline", "p2_solved"),
    intro="Training and test accuracy of the run from scratch (p = 4) and of the curriculum (p = 2, then p = 4).",
    build=build,
)
