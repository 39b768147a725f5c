"""`circuitpath --help` against `python -c "import torch"`, side by side: each in a fresh process,
interleaved rounds, so both meet the same machine. Target: --help at most half the time of importing torch.

Run: python benchmarks/bench_cli_help.py [--rounds 7]
Prints the median wall and CPU time (user + sys, from getrusage(RUSAGE_CHILDREN)) of each and
their ratio; the median, not the best, so that one lucky round does not decide.
"""

# %%
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 0.5


def commands() -> dict[str, list[str]]:
    script = Path(sys.executable).with_name("circuitpath")  # the console script of this environment
    help_ = [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "circuitpath.cli", "--help"]
    return {"circuitpath --help": help_, 'python -c "import torch"': [sys.executable, "-c", "import torch"]}


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `command` in a fresh process."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr.decode()[-2000:]}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    runs = commands()
    for command in runs.values():  # warm the file cache: the first start of each reads from disk
        timed(command)
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, command in runs.items():
            times[name].append(timed(command))
    median = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in times.items()}
    width = max(map(len, runs))
    print(f"{'command':<{width}}  median wall  median CPU   ({args.rounds} interleaved rounds, fresh processes)")
    for name, (wall, cpu) in median.items():
        print(f"{name:<{width}}  {wall:9.2f} s  {cpu:8.2f} s")
    (help_wall, help_cpu), (torch_wall, torch_cpu) = median.values()
    print(f"ratio --help / import torch: {help_wall / torch_wall:.2f} wall, {help_cpu / torch_cpu:.2f} CPU "
          f"(target <= {TARGET})")


# %%
if __name__ == "__main__":
    main()
