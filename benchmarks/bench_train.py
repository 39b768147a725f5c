"""ms per training step at the paper's size: the plain reference, circuitpath's step, and whole groups,
each beside the arrangement before runs became bit-identical on any thread count.

Run: python benchmarks/bench_train.py [--group-steps 1000] [--rounds 20]
The paper's configuration: T = 12, n = 2048 full batch, d = 32, n_tokens = 4, p = 4, Adam; malloc set
as `train` sets it (common.py), for every candidate.
- One step, interleaved rounds in this process: a lone run (one thread per kernel, as `train` runs
  it; before: two threads, the previous thread tuner's other choice), and the CPU cost of a run-step
  on one core as one run to a chunk (now) and as chunks of 4 runs (before).
- Whole groups, timed one after another: 8 runs of --group-steps steps through `train_many`, with
  evaluations and checkpoints, as `train` runs them now (one process per core for long work), in
  threads with one run to a chunk, and as before (threads, chunks of 4 runs). Includes ~4 s of
  process start; ms per run-step = wall / (8 x steps).
- Kernel pinnings side by side (`circuitpath.pinning`): the lone run's step and the group of 8's
  run-step under every pinning (native, avx2, compatible: the default), each in a fresh process of its
  own (the pinning is set before torch's first kernel), one after the other; the ratio is pinned /
  native. Two more rows take the default apart, each half with the other as under avx2: its MKL branch
  alone (with ATen's AVX2 kernels) and its ATen kernels alone (with MKL_CBWR=AVX2: the AVX2 branch on Intel,
  AUTO elsewhere), to say which half costs. `--pinnings-only` times these alone.
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import torch
import torch.nn.functional as F

from common import MALLOC, measure, table
from reference import reference_forward

from circuitpath import pinning
from circuitpath.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.data import make_split
from circuitpath.models.weights import init_weights
from circuitpath.training import processes
from circuitpath.training.engine import Adam, Encoded, Executor, Layout
from circuitpath.training.train import train_many

POOL = ThreadPoolExecutor(os.cpu_count() or 1)  # as train.py's orchestrator shares one


def reference_step(split):
    weights = {k: v.clone().requires_grad_(True) for k, v in init_weights(ModelConfig()).items()}
    optimiser = torch.optim.Adam(list(weights.values()), lr=1e-2)

    def step():
        optimiser.zero_grad()
        F.cross_entropy(reference_forward(weights, split.x_train)["logits"], split.y_train).backward()
        optimiser.step()

    return step


class ChunksOfFour(Executor):
    """The previous arrangement: four runs to a chunk (their bytes depended on their batch-mates)."""

    def __init__(self, runs: int, device: torch.device, pool=None, cfg=None, train=None):
        super().__init__(runs, device, pool, cfg, train)
        self.chunks = [slice(i, min(i + 4, runs)) for i in range(0, runs, 4)]
        self.pool = pool if len(self.chunks) > 1 else None


def engine_step(split, runs: int, chunk: int = 1, threads: int = 1, pool=POOL):
    """One training-loop step of `runs` runs in chunks of `chunk` on `threads` kernel threads."""
    layout = Layout.of(ModelConfig())
    theta = layout.pack([init_weights(ModelConfig(seed=s)) for s in range(runs)])
    adam = Adam(theta, torch.full((runs,), 1e-2))
    executor = (ChunksOfFour if chunk == 4 else Executor)(runs, torch.device("cpu"), pool)
    data = executor.split(Encoded.of(split.x_train.expand(runs, -1, -1), split.y_train.expand(runs, -1), 4))

    def step():
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        adam.step(theta, executor.loss_and_grad(theta, layout, data)[1])
        torch.set_num_threads(previous)

    return step


def group_seconds(steps: int, arrangement: str) -> float:
    """Wall seconds of `train_many` on 8 paper-size runs, as `train` runs them or in an older arrangement."""
    configs = [RunConfig(task=TaskConfig(seed=s), model=ModelConfig(seed=s),
                         train=TrainConfig(phases=parse_phases(f"4:{steps}:1e-2"))) for s in range(8)]
    patches = []
    if arrangement != "now":
        patches.append(mock.patch.object(processes, "MIN_WORK", float("inf")))
    if arrangement == "before":
        patches += [mock.patch("circuitpath.training.loop.Executor", ChunksOfFour),
                    mock.patch("circuitpath.training.train.Executor", ChunksOfFour)]
    with tempfile.TemporaryDirectory() as out:
        for patch in patches:
            patch.start()
        try:
            start = time.perf_counter()
            train_many(configs, [f"{out}/{s}" for s in range(8)], progress=False)
            return time.perf_counter() - start
        finally:
            for patch in patches:
                patch.stop()


#: The default's halves, each with the other half as under avx2: which of MKL's branch and ATen's kernels costs.
HALVES = {
    "compatible's MKL alone": pinning.PINNINGS["compatible"] | {"ATEN_CPU_CAPABILITY": "avx2"},
    "compatible's ATen alone": pinning.PINNINGS["compatible"] | {"MKL_CBWR": "AVX2"},
}


def pinned_timings(name: str, group_steps: int, rounds: int) -> dict:
    """In this process (started under pinning or half `name`): a lone run's step and a group of 8's run-step, s."""
    wanted = HALVES.get(name, pinning.PINNINGS.get(name))
    if {k: os.environ.get(k) for k in pinning.VARIABLES} != {k: wanted.get(k) for k in pinning.VARIABLES}:
        raise SystemExit(f"asked for {name}, this process runs {pinning.running()}")
    lone = measure({"lone": engine_step(make_split(TaskConfig(), 4), 1)}, rounds=rounds)["lone"]
    group = group_seconds(group_steps, "now") / (8 * group_steps)
    return {"pinning": name, "capability": torch.backends.cpu.get_cpu_capability(), "lone": lone, "group": group}


def pinning_rows(group_steps: int, rounds: int) -> list[tuple[str, ...]]:
    """Each pinning and half in a fresh process (variables set before torch loads); pinned / native."""
    timings = {}
    for name in ("native", *(n for n in pinning.PINNINGS if n != "native"), *HALVES):
        bare = {k: v for k, v in os.environ.items() if k not in pinning.VARIABLES}
        # a half is set by hand under the native pinning, which leaves the shell's variables alone
        env = bare | ({pinning.ENV: "native"} | HALVES[name] if name in HALVES else {pinning.ENV: name})
        done = subprocess.run([sys.executable, __file__, "--group-steps", str(group_steps), "--rounds", str(rounds),
                               "--timings-under", name], env=env, capture_output=True, text=True, check=True)
        timings[name] = json.loads(done.stdout.strip().splitlines()[-1])
    native, rows = timings.pop("native"), []
    for pinned in timings.values():
        for key, what in (("lone", "lone run's step"), ("group", "group of 8, a run-step")):
            rows.append((f"{what}: {pinned['pinning']} ({pinned['capability']}) / native ({native['capability']})",
                         f"{pinned[key] * 1e3:.2f} / {native[key] * 1e3:.2f}", f"{pinned[key] / native[key]:.2f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group-steps", type=int, default=1000, help="steps of each group run (default 1000)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="interleaved rounds of each one-step timing (default 20)")
    parser.add_argument("--pinnings-only", action="store_true", help="time the kernel pinnings only")
    parser.add_argument("--timings-under", choices=sorted([*pinning.PINNINGS, *HALVES]), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.group_steps < 1 or args.rounds < 1:
        parser.error(f"--group-steps and --rounds must be >= 1, got {args.group_steps} and {args.rounds}")
    if args.timings_under:  # a child of pinning_rows
        print(json.dumps(pinned_timings(args.timings_under, args.group_steps, args.rounds)))
        return
    if args.pinnings_only:
        print(table(pinning_rows(args.group_steps, args.rounds), ("pinned vs native", "ms per run-step", "ratio")))
        return
    split = make_split(TaskConfig(), 4)
    reference_name = "reference (plain PyTorch + torch.optim.Adam)"
    steps = {reference_name: (reference_step(split), 1),
             "circuitpath, lone run (1 thread)": (engine_step(split, 1), 1),
             "  before: lone run, two threads": (engine_step(split, 1, threads=2), 1),
             "circuitpath, 8 runs on one core, a run a chunk": (engine_step(split, 8, pool=None), 8),
             "  before: 8 runs on one core, chunks of 4": (engine_step(split, 8, chunk=4, pool=None), 8)}
    seconds = measure({name: fn for name, (fn, _) in steps.items()}, rounds=args.rounds)
    reference = seconds[reference_name]
    rows = [(name, f"{seconds[name] / s * 1e3:.2f}", f"{reference / (seconds[name] / s):.1f}x")
            for name, (_, s) in steps.items()]
    for name, arrangement in (("group of 8 as train runs it (processes)", "now"),
                              ("  group of 8 in threads, a run a chunk", "threads"),
                              ("  before: group of 8 in threads, chunks of 4", "before")):
        per_run_step = group_seconds(args.group_steps, arrangement) / (8 * args.group_steps)
        rows.append((name, f"{per_run_step * 1e3:.2f}", f"{reference / per_run_step:.1f}x"))
    print(f"training at the paper's size, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()} (pinning {pinning.running()}), {MALLOC}; "
          f"groups: {args.group_steps} steps")
    print(table(rows, ("implementation", "ms per run-step", "speed-up")))
    print()
    print(table(pinning_rows(args.group_steps, args.rounds), ("pinned vs native", "ms per run-step", "ratio")))


# %%
if __name__ == "__main__":
    main()
