"""`circuitpath discover` as a user runs it: the command in a fresh process, on a paper-size run with
61 checkpoints, imports, every method, faithfulness, the files and the page included.

Run: python benchmarks/bench_discover_cli.py [RUN] [--rounds 2] [--quick]
With no RUN it first trains the paper's curriculum run (T = 12, k = 5, n = 2048, d = 32; p = 2 for
3 000 steps at lr 1e-3, then p = 4 for 7 000 steps at lr 1e-2; the default checkpoints: 61) with
`circuitpath train` into a temporary directory (about a minute). --quick trains a tiny run instead,
only to check that the script works.

Prints, for `circuitpath discover RUN` at its defaults (attribution, activation patching and
ablation; 1 024 test inputs) and with `--method attribution`, the child's CPU time (user + sys,
from getrusage(RUSAGE_CHILDREN)) and wall time of each round. Target: under 20 s of CPU at the
defaults. CPU time is the figure to read on a shared machine: wall time grows with other load.
"""

# %%
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER = ["--phases", "2:3000:1e-3,4:7000:1e-2"]  # the curriculum preset's schedule, default checkpoints (61)
QUICK = ["--phases", "2:40:1e-2,4:40:1e-2", "-T", "8", "--n-train", "128", "--d-model", "8"]
VARIANTS = {"defaults (3 methods)": [], "--method attribution": ["--method", "attribution"]}
TARGET_CPU = 20.0


def cli(*args: str) -> tuple[float, float]:
    """CPU seconds (user + sys) and wall seconds of `circuitpath ARGS` in a fresh process."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "circuitpath.cli", *args], capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"circuitpath {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def checkpoints(run: Path) -> int:
    return len(list((run / "checkpoints").glob("step_*.safetensors")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, metavar="RUN", help="a trained run (default: train the paper's curriculum run)")
    parser.add_argument("--rounds", type=int, default=2, help="times each command runs (default 2)")
    parser.add_argument("--quick", action="store_true", help="a tiny run: check that the script works")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    with tempfile.TemporaryDirectory() as root:
        run = args.run
        if run is None:
            run = Path(root) / "curriculum"
            cpu, wall = cli("train", "--out", str(run), *(QUICK if args.quick else PAPER))
            print(f"trained {run.name} ({'tiny' if args.quick else 'paper size'}): {cpu:.1f} s CPU, {wall:.1f} s wall")
        print(f"circuitpath discover on {run} ({checkpoints(run)} checkpoints), a fresh process per round")
        for name, extra in VARIANTS.items():
            for round_ in range(args.rounds):
                cpu, wall = cli("discover", str(run), "--force", *extra)  # --force: each round replaces the last
                print(f"  {name:<22} round {round_ + 1}: {cpu:6.1f} s CPU (user + sys), {wall:6.1f} s wall")
        print(f"target: under {TARGET_CPU:.0f} s of CPU at the defaults")


# %%
if __name__ == "__main__":
    main()
