"""What a report section is: a figure of the paper (or an extension), the claims it tests, and its panels.

A section's `build` receives a `Context`: the runs it draws (by name), how many probe inputs to
use, the headline numbers to fill in, and, when the report comes from `circuitpath reproduce`, the
claims measured over seeds and the preset experiment each run belongs to. `applies` says whether
the section can draw anything from the given runs (e.g. the barrier needs two runs of one shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from circuitpath.claims import Claim
from circuitpath.report.headlines import Headlines
from circuitpath.report.page import Panel
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


def one_shape(runs: dict[str, Run]) -> bool:
    """True when every run has a model of one shape (their weights share a space)."""
    return len({run.config.model.to_shape() for run in runs.values()}) == 1
