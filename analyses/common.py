"""Shared by the analysis scripts: which runs a figure script reads and where its figure goes, and the
command line of every script (a --help from its header, mistakes in one line with exit status 2).

With no argument a figure script reads the runs `circuitpath reproduce` drew in ./runs (the seed named in
runs/claims.json), those of the experiments its figure needs; given run directories, it reads those.
"""

from __future__ import annotations

import argparse
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


def runs_from(argv: list[str] | None, figure: int, name: str, need: int = 1) -> dict[str, cp.Run]:
    """Runs named on the command line, or the shown seed's runs of the figure's experiments; -h prints the usage."""
    paths = sys.argv[1:] if argv is None else argv
    if any(p in ("-h", "--help") for p in paths):
        print(usage(figure, name, need))
        raise SystemExit(0)
    if not paths:
        shown = shown_runs(DEFAULT_OUT)
        runs = {key: shown[key] for key in FIGURES[figure].experiments if key in shown}
        print(f"Fig. {figure}: {', '.join(str(run.path) for run in runs.values())} (the seed reproduce drew)")
        return runs
    if len(paths) < need:
        raise cp.InputError(f"Fig. {figure} compares {need} runs, got {len(paths)}: {' '.join(paths)}")
    return {run_name(Path(p)): cp.load_run(p) for p in paths}


def usage(figure: int, name: str, need: int) -> str:
    runs = "RUN_A RUN_B" if need == 2 else "RUN ..."
    return (f"usage: python analyses/{name}.py [{runs}]\n\nFig. {figure}: {FIGURES[figure].title}. Reads the run "
            f"directories named or, with none, the seed `circuitpath reproduce` drew in ./{DEFAULT_OUT} (its "
            f"{', '.join(FIGURES[figure].experiments)} runs), and writes {name}.html beside the first run (into "
            f"./{DEFAULT_OUT} for reproduce's).")


class Parser(argparse.ArgumentParser):
    """An analysis script's flags: --help shows its description as written; a usage mistake is one line, exit 2."""

    def __init__(self, description: str, **options):
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter, **options)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def header(path: str) -> str:
    """A script's leading markdown comment (after `# %% [markdown]`, up to the first code cell): its --help text."""
    lines = []
    for line in Path(path).read_text().splitlines()[1:]:
        if not line.startswith("#") or line.startswith("# %%"):
            break
        lines.append(line[2:])
    return "\n".join(lines)


def script(main) -> None:
    """Run an analysis script's main: a mistake (a path that is no run, a model the figure does not draw) is one
    line on stderr and exit status 2, as for the circuitpath command."""
    try:
        main()
    except cp.CircuitPathError as error:
        print(f"{Path(sys.argv[0]).name}: error: {str(error).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None


def save(figures, runs: dict[str, cp.Run], name: str) -> Path:
    """Write the figures as NAME.html beside the first run's directory (in OUT for reproduce's runs); say where."""
    parent = next(iter(runs.values())).path.parent
    if (parent.parent / CLAIMS_JSON).is_file():  # OUT/<experiment>/seed_N: write into OUT
        parent = parent.parent
    path = parent / f"{name}.html"
    write_html(figures, path, name.replace("_", " "))
    print(f"{name}: written to {path}")
    return path
