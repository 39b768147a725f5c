"""End-to-end `circuitpath reproduce` (the paper's two runs): wall time and peak memory.

Run: python benchmarks/bench_reproduce.py
"""

# %%
from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "circuitpath.cli", "reproduce", "--out", out],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(done.stdout.strip())
    print(f"\ncircuitpath reproduce: {wall:.1f} s wall, {peak_mib:.0f} MiB peak resident memory")


# %%
if __name__ == "__main__":
    main()
