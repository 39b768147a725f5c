"""Fig. 5: accuracy along training; over seeds, how often scratch memorises and the curriculum generalises."""

from __future__ import annotations

from dataclasses import dataclass

from circuitpath.analysis.outcomes import GENERALISES, MEMORISES, generalises, memorises
from circuitpath.paper.report.figures import VERDICTS, seed_outcomes_figure
from circuitpath.paper.report.page import Panel
from circuitpath.paper.report.section import Context, Section, runs_text
from circuitpath.plots import training as plots
from circuitpath.runs import Run


@dataclass(frozen=True)
class SeedOutcome:
    """One seed's final accuracies and its verdict, as `experiments` rules (memorised, generalised, neither)."""

    seed: int
    train_acc: float
    test_acc: float
    verdict: str


def verdict(metrics: dict) -> str:
    return "generalised" if generalises(metrics) else "memorised" if memorises(metrics) else "neither"


def seed_outcomes(run: Run, seeds: list[int]) -> dict[int, SeedOutcome]:
    """Every seed's outcome, read from the runs beside `run` (`reproduce` writes EXPERIMENT/seed_N)."""
    from circuitpath.runs import load_run

    outcomes = {}
    for seed in seeds:
        sibling = run.path.parent / f"seed_{seed}"
        metrics = (run if sibling == run.path else load_run(sibling)).final_metrics()
        outcomes[seed] = SeedOutcome(seed, metrics["train_acc"], metrics["test_acc"], verdict(metrics))
    return outcomes


def build(ctx: Context) -> list[Panel]:
    for name, run in ctx.runs.items():
        ctx.headlines.run(name).test_acc = run.final_metrics()["test_acc"]
    panels = [Panel(plots.accuracy_curves(ctx.runs), CURVES + (PAPER if ctx.paper else AGAINST_PAPER))]
    claims = ctx.claims
    if "scratch_memorises" in claims and "curriculum_generalises" in claims:
        seeds = sorted(claims["scratch_memorises"].values)
        outcomes = {name: seed_outcomes(ctx.runs[name], seeds) for name in ("scratch", "curriculum") if name in ctx.runs}
        switch = claims["p2_solved"].values if "p2_solved" in claims else {}
        panels.append(Panel(seed_outcomes_figure(outcomes, switch, "Final train and test accuracy of every seed"),
                            seeds_caption(outcomes)))
    return panels


CURVES = "Solid: training accuracy and loss, dashed: test (dotted line: phase switch). "
PAPER = ("In the paper the scratch run reaches training accuracy 1 while its test accuracy stays near chance (0.25); "
         "the curriculum's test accuracy follows its training accuracy to 1 after the switch.")
AGAINST_PAPER = ("Chance is 1/p (0.25 at p = 4). A run that memorises reaches training accuracy 1 with its test "
                 "accuracy near chance; one that generalises brings test accuracy to 1 with it. The paper's Fig. 5 "
                 "compares the two on its model: from scratch (memorises) and through the curriculum (generalises).")


def heading(runs) -> tuple[str, str]:
    return "Fig. 5 — accuracy along training", f"Training and test accuracy of {runs_text(runs)}."


def seeds_caption(outcomes: dict[str, dict[int, SeedOutcome]]) -> str:
    """What the per-seed panel shows, with each experiment's verdict counts."""
    counts = "; ".join(f"{name}: " + ", ".join(f"{sum(o.verdict == v for o in seeds.values())} {v}"
                                               for v in VERDICTS if any(o.verdict == v for o in seeds.values()))
                       for name, seeds in outcomes.items())
    return (f"One point per seed (x: seed), training accuracy left, test accuracy right; the marker says the seed's "
            f"verdict: memorised ({MEMORISES}), generalised ({GENERALISES}) or neither. The claim needs every scratch "
            f"seed memorised and every curriculum seed generalised. Here: {counts}. The test panel also shows the "
            f"curriculum's p = 2 test accuracy at the switch (a failed curriculum had usually failed its pretraining).")


SECTION = Section(
    key="fig5", title="Fig. 5 — accuracy: scratch memorises, the curriculum generalises", figure=5,
    claims=("scratch_memorises", "curriculum_generalises", "headline", "p2_solved"),
    intro="Training and test accuracy of the run from scratch (p = 4) and of the curriculum (p = 2, then p = 4).",
    build=build, heading=heading,
)
