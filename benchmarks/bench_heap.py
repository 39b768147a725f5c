"""Training with glibc's malloc defaults against `heap.keep_freed_memory`, one process alone and two at once.

Each setting trains one chunk of 4 paper-sized runs (d = 32, p = 4, full batch) in fresh processes,
as a Ray task or a lone `circuitpath train` would: one process alone, then two at once (a Ray
worker per core). Prints wall and kernel (sys) seconds and the page faults of the training, and
the ratio of wall times. Run it on an otherwise idle machine:

    python benchmarks/bench_heap.py [--steps 500] [--rounds 2]
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import table

SETTINGS = {"glibc defaults": {"CIRCUITPATH_MALLOC": "default"}, "freed memory kept": {}}


def child(steps: int, seeds: list[int]) -> None:
    """Train `seeds` in this process on one worker, single-threaded kernels; print wall, sys and page faults as JSON."""
    import resource
    import tempfile
    import time
    from pathlib import Path

    import torch

    from circuitpath.config import ModelConfig, TaskConfig
    from circuitpath.sweep import spec as sweep_spec
    from circuitpath.sweep.finish import train_chunk

    torch.set_num_threads(1)
    spec = sweep_spec.make_spec(seeds, {"scratch": f"4:{steps}:1e-2"}, TaskConfig(), ModelConfig(), "all")
    with tempfile.TemporaryDirectory() as tmp:
        sweep_spec.make_out(Path(tmp))
        sweep_spec.write_spec(Path(tmp), spec)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        train_chunk(spec, "scratch", seeds, tmp, workers=1)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "sys": after.ru_stime - before.ru_stime, "faults": after.ru_minflt - before.ru_minflt}))


def launch(steps: int, seeds: list[int], env: dict) -> subprocess.Popen:
    command = [sys.executable, __file__, "--child", ",".join(map(str, seeds)), "--steps", str(steps)]
    return subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)


def measured(processes: list[subprocess.Popen]) -> dict:
    """The slowest process's wall time; sys seconds and faults summed over the processes."""
    results = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"a child process failed with status {process.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {"wall": max(r["wall"] for r in results), "sys": sum(r["sys"] for r in results),
            "faults": sum(r["faults"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps of each run (default 500)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best is kept (default 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for flag in ("steps", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.child:
        return child(args.steps, [int(s) for s in args.child.split(",")])
    layouts = {"one process alone": [[0, 1, 2, 3]], "two processes at once": [[0, 1, 2, 3], [4, 5, 6, 7]]}
    best: dict[tuple[str, str], dict] = {}
    for _ in range(args.rounds):
        for layout, chunks in layouts.items():
            for setting, env in SETTINGS.items():
                result = measured([launch(args.steps, seeds, env) for seeds in chunks])
                key = (layout, setting)
                if key not in best or result["wall"] < best[key]["wall"]:
                    best[key] = result
    print(f"a chunk of 4 runs, {args.steps} steps each, best of {args.rounds} rounds")
    rows = [(f"{layout}, {setting}", f"{r['wall']:.2f}", f"{r['sys']:.2f}", f"{r['faults']:,}")
            for (layout, setting), r in best.items()]
    print(table(rows, ("", "wall s", "sys s", "page faults")))
    for layout in layouts:
        ratio = best[(layout, "glibc defaults")]["wall"] / best[(layout, "freed memory kept")]["wall"]
        print(f"{layout}: glibc defaults / freed memory kept = {ratio:.2f}x")


if __name__ == "__main__":
    main()
