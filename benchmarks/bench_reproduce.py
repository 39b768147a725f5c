"""End-to-end `circuitpath reproduce`: wall time and peak memory of the default (8 seeds of every
figure's experiments, 32 of the d = 2 pipeline) and of the quick tour (`--seeds 1 --vis-seeds 1`). Targets: 5 min and 2 GiB; 60 s.

Run: python benchmarks/bench_reproduce.py [--only SEEDS] [-- EXTRA REPRODUCE FLAGS]
e.g. python benchmarks/bench_reproduce.py --only 1 -- --figures 5
"""

# %%
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

TARGETS = {None: (300.0, 2048.0), 1: (60.0, 2048.0)}  # seeds -> (seconds, MiB)


def measure(seeds: int | None, extra: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident MiB and stdout of one `circuitpath reproduce` in a fresh process."""
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile("w+") as log, tempfile.TemporaryFile("w+") as err:
        command = [sys.executable, "-m", "circuitpath.cli", "reproduce", "--out", out, *extra]
        if seeds is not None:
            command += ["--seeds", str(seeds), "--vis-seeds", str(seeds)]
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=log, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory, not the largest child's so far
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0), err.seek(0)
        stdout, stderr = log.read(), err.read()
    if child.returncode != 0:
        sys.exit(stderr)
    return wall, usage.ru_maxrss / 1024, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, help="measure only this seed count (default: the default, then 1)")
    parser.add_argument("extra", nargs="*", help="further reproduce flags, after --")
    args = parser.parse_args()
    counts = [args.only] if args.only else [None, 1]
    rows = []
    for seeds in counts:  # one after the other: the peak of the later run is read before the next starts
        wall, peak, stdout = measure(seeds, args.extra)
        print(stdout.strip(), "\n")
        label = " ".join((["defaults"] if seeds is None else [f"--seeds {seeds} --vis-seeds {seeds}"]) + args.extra)
        target = TARGETS.get(seeds, (None, None)) if not args.extra else (None, None)  # targets are for the plain commands
        rows.append(f"circuitpath reproduce {label}: {wall:.1f} s wall, {peak:.0f} MiB peak resident memory"
                    + (f" (targets: {target[0]:.0f} s, {target[1]:.0f} MiB)" if target[0] else ""))
    print("\n".join(rows))


# %%
if __name__ == "__main__":
    main()
