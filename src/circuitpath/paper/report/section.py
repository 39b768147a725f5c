"""What a report section is: a figure of the paper (or an extension), the claims it tests, and its panels.

A section's `build` receives a `Context`: the runs it draws (by name), how many probe inputs to
use, the headline numbers to fill in, and, when the report comes from `circuitpath reproduce`, the
claims measured over seeds and the preset experiment each run belongs to. `applies` says whether
the section can draw anything from the given runs (e.g. the barrier needs two runs of one shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from circuitpath.paper.claims import Claim
from circuitpath.paper.report.headlines import Headlines
from circuitpath.paper.report.page import Panel
from circuitpath.runs import Run


@dataclass
class Context:
    runs: dict[str, Run]
    n: int = 1024
    headlines: Headlines = field(default_factory=Headlines)
    claims: dict[str, Claim] = field(default_factory=dict)  # key -> claim, from `reproduce`
    paper: bool = False  # runs are the presets' runs of one seed, named by experiment


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    figure: int | None  # the paper's figure it reproduces; None for an extension
    claims: tuple[str, ...]  # keys of the claims it tests
    intro: str  # what the section shows, in a sentence
    build: Callable[[Context], list[Panel]]
    applies: Callable[[dict[str, Run]], bool] = lambda runs: bool(runs)
    experiments: tuple[str, ...] = ()  # preset experiments drawn in a reproduce report (default: the figure's)
    needs: str = ""  # why `applies` may leave the section out, in one line ("the loss barrier needs two runs ...")
    # (title, intro) for the runs of an `analyze` report, where they differ from the paper's (None: the same)
    heading: Callable[[dict[str, Run]], tuple[str, str]] | None = None
    claims_note: Callable[[Context], str] = lambda ctx: ""  # after the intro: what it says of the claims measured

    def text(self, ctx: Context) -> tuple[str, str]:
        """The title and intro for the runs drawn: the paper's in a `reproduce` report, else written for them."""
        return self.heading(ctx.runs) if self.heading and not ctx.paper else (self.title, self.intro)


def is_transformer(runs: dict[str, Run]) -> bool:
    """True when no run has the paper's model (every one is a standard transformer)."""
    return all(run.config.model.arch != "cross_attention" for run in runs.values())


def phases_text(run: Run) -> str:
    """A run's phases in words: "p = 4" or "p = 2, then p = 4"."""
    return ", then ".join(f"p = {phase.p}" for phase in run.config.train.phases)


def runs_text(runs: dict[str, Run]) -> str:
    """Each run with its phases: "R (p = 2, then p = 4)", joined."""
    return ", ".join(f"{name} ({phases_text(run)})" for name, run in runs.items())


def one_shape(runs: dict[str, Run]) -> bool:
    """True when every run has a model of one shape (their weights share a space)."""
    return len({run.config.model.to_shape() for run in runs.values()}) == 1


#: Sections that read what only the paper's model has (a single query, its attention output z_A), and why a
#: run of another model is left out of them.
PAPER_ONLY: dict[str, str] = {
    "fig3": "Fig. 3 reads the single query's attention, which only the paper's model has; the readout position's "
            "attention per layer and head is in Fig. 2's section",
    "fig4": "Fig. 4 clusters z_A, the paper's model's attention output; `circuitpath clusters RUN --hook NAME` "
            "clusters any hook's activations at the readout position",
}


def drawable(section: Section, runs: dict[str, Run]) -> tuple[dict[str, Run], str]:
    """The runs `section` can draw, and why the others are left out ("" when none is)."""
    if section.key not in PAPER_ONLY:
        return runs, ""
    kept = {name: run for name, run in runs.items() if run.config.model.arch == "cross_attention"}
    left = [name for name in runs if name not in kept]
    if not left:
        return runs, ""
    return kept, f"Not drawn for {', '.join(left)} ({'a standard transformer' if len(left) == 1 else 'standard transformers'}): {PAPER_ONLY[section.key]}."
