"""Shared by the figure scripts: which runs to read and where a figure goes."""

from __future__ import annotations

import sys
from pathlib import Path

import circuitpath as cp
from circuitpath.plots.html import write_html

DEFAULT_RUNS = ["runs/scratch", "runs/curriculum"]


def runs_from(argv: list[str] | None) -> dict[str, cp.Run]:
    """Runs named on the command line (default: those `circuitpath reproduce` writes), by directory name."""
    paths = (sys.argv[1:] if argv is None else argv) or DEFAULT_RUNS
    return {Path(p).name: cp.load_run(p) for p in paths}


def save(figures, runs: dict[str, cp.Run], name: str) -> Path:
    """Write the figures beside the first run's directory as NAME.html and say where."""
    path = next(iter(runs.values())).path.parent / f"{name}.html"
    write_html(figures, path, name.replace("_", " "))
    print(f"{name}: written to {path}")
    return path
