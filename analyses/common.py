"""Shared by the figure scripts: which runs to read and where a figure goes.

With no argument a script reads the runs `circuitpath reproduce` drew in ./runs (the seed named in
runs/claims.json), those of the experiments its figure needs; given run directories, it reads those.
"""

from __future__ import annotations

import sys
from pathlib import Path

import circuitpath as cp
from circuitpath.paper.presets import FIGURES
from circuitpath.paper.reproduce import CLAIMS_JSON, shown_runs
from circuitpath.plots.html import write_html

DEFAULT_OUT = "runs"


def run_name(path: Path) -> str:
    """`runs/curriculum/seed_3` -> `curriculum seed 3`; any other directory -> its name."""
    path = Path(path)
    return f"{path.parent.name} seed {path.name[5:]}" if path.name.startswith("seed_") else path.name


def runs_from(argv: list[str] | None, figure: int) -> dict[str, cp.Run]:
    """Runs named on the command line, or the shown seed's runs of the figure's experiments."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        shown = shown_runs(DEFAULT_OUT)
        runs = {name: shown[name] for name in FIGURES[figure].experiments if name in shown}
        print(f"Fig. {figure}: {', '.join(str(run.path) for run in runs.values())} (the seed reproduce drew)")
        return runs
    return {run_name(Path(p)): cp.load_run(p) for p in paths}


def save(figures, runs: dict[str, cp.Run], name: str) -> Path:
    """Write the figures as NAME.html beside the first run's directory (in OUT for reproduce's runs); say where."""
    parent = next(iter(runs.values())).path.parent
    if (parent.parent / CLAIMS_JSON).is_file():  # OUT/<experiment>/seed_N: write into OUT
        parent = parent.parent
    path = parent / f"{name}.html"
    write_html(figures, path, name.replace("_", " "))
    print(f"{name}: written to {path}")
    return path
