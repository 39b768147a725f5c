"""Does the paper's thesis survive a standard transformer? Scratch against curriculum, over seeds.

For the standard transformer (`--model transformer`, d = 32, CLS readout, RMS pre-norm, tied
unembedding) at (layers, heads) in SHAPES, and for the paper's own model (d = 32) under the same
schedule as a control, on the paper's task (the first k = 5 of T = 12 tokens summed mod p) and on the
random-positions task (k = 5 positions drawn from each seed), one sweep per (model, task) trains two
experiments on the same seeds:

- scratch:    p = 4 for the whole budget (lr 1e-3, the paper's scratch rate);
- curriculum: p = 2 for the first 30% of it (lr 1e-3), then p = 4 (lr 1e-2): the paper's
  3000 / 7000 split and rates (`experiments.PAPER_PHASES`), scaled to the budget.

Mini-batches of 32 sequences; the paper's runs are full-batch, which costs 16x as much per step here
(measured: 23 ms against 1.7 ms a run-step for the 1-layer, 1-head model on 2 cores), so the budget
is stated in steps and printed with the table. A run *generalises* when its final test accuracy is
>= 0.99 and *memorises* when its train accuracy is >= 0.99 and its test accuracy < 0.5 (the sweep's
verdicts); the p = 2 phase is *solved* when it ends at test acc >= 0.99. Rates with 95% Wilson
intervals over the same seeds for every cell.

Run: `python analyses/transformer_study.py [OUT] [--seeds 0-31] [--steps 3000]` (default
runs/transformer_study). Each sweep is resumable: run the command again to finish an interrupted
study; the table is read from the sweeps' summary.json files and written to OUT/study.json.
"""

# %%
from __future__ import annotations

import argparse
import json
from pathlib import Path

from circuitpath.analysis.stats import wilson_interval
from circuitpath.config import ModelConfig, TaskConfig, TrainConfig
from circuitpath.errors import CircuitPathError
from circuitpath.sweep import parse_seeds, pending_runs, read_summary, resume_sweep, sweep
from circuitpath.sweep.spec import SWEEP_JSON

#: The standard transformer's (layers, heads), and None for the paper's model (the control).
SHAPES = ((1, 1), (1, 4), (2, 4), None)
TASKS = ("first", "random")
BATCH, P2_SHARE = 32, 0.3


# %%
def schedules(steps: int) -> dict[str, str]:
    """The two experiments of one sweep, as `p:steps:lr:batch` phases."""
    switch = round(P2_SHARE * steps)
    return {"scratch": f"4:{steps}:1e-3:{BATCH}",
            "curriculum": f"2:{switch}:1e-3:{BATCH},4:{steps - switch}:1e-2:{BATCH}"}


def label(shape: tuple[int, int] | None) -> str:
    return "paper" if shape is None else f"L{shape[0]}H{shape[1]}"


def model_of(shape: tuple[int, int] | None) -> ModelConfig:
    if shape is None:
        return ModelConfig()
    return ModelConfig(arch="transformer", n_layers=shape[0], n_heads=shape[1])


def cell_dir(out: Path, shape: tuple[int, int] | None, task: str) -> Path:
    return out / f"{label(shape)}_{task}"


def run_cell(out: Path, shape: tuple[int, int] | None, task: str, seeds: list[int], steps: int) -> None:
    """Train one (shape, task) sweep, or finish it when it was interrupted."""
    where = cell_dir(out, shape, task)
    if (where / SWEEP_JSON).is_file():
        if pending_runs(where):
            resume_sweep(where)
        return
    sweep(where, seeds, schedules(steps), task=TaskConfig(positions=task), model=model_of(shape),
          train=TrainConfig(log_every=max(1, steps // 20), checkpoint_every=max(1, steps // 10)), keep_checkpoints="ends")


# %%
def rate(hits: list[int], n: int) -> str:
    lo, hi = wilson_interval(len(hits), n)
    return f"{len(hits):2d}/{n} ({lo:.2f}-{hi:.2f})"


def table(out: Path) -> tuple[list[str], list[dict]]:
    """One line per (shape, task, experiment): the rates, and the median final test accuracy."""
    lines = [f"{'model':6} {'task':7} {'experiment':11} {'generalised':17} {'memorised':17} "
             f"{'p = 2 solved':17} train acc median  test acc median / max"]
    rows = []
    for shape in SHAPES:
        for task in TASKS:
            where = cell_dir(out, shape, task)
            if not (where / "summary.json").is_file():
                continue
            for name, s in read_summary(where).items():
                n = len(s.seeds)
                accs = sorted(s.test_acc)
                solved = rate(s.first_phase_solved, n) if s.first_phase_solved is not None else "-"
                train = sorted(s.train_acc)[n // 2]
                lines.append(f"{label(shape):6} {task:7} {name:11} {rate(s.successes, n):17} "
                             f"{rate(s.memorised, n):17} {solved:17} {train:16.3f}  {accs[n // 2]:.3f} / {accs[-1]:.3f}")
                rows.append({"model": label(shape), "task": task, "experiment": name,
                             "seeds": s.seeds, "generalised": s.successes, "memorised": s.memorised,
                             "p2_solved": s.first_phase_solved, "train_acc": s.train_acc, "test_acc": s.test_acc})
    return lines, rows


# %%
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", nargs="?", type=Path, default=Path("runs/transformer_study"), metavar="OUT",
                        help="where the runs and study.json go (default runs/transformer_study)")
    parser.add_argument("--seeds", default="0-31", help="N, N-M or a list (default 0-31)")
    parser.add_argument("--steps", type=int, default=3000, help="steps of every run (default 3000)")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 (both curriculum phases need a step), got {args.steps}")
    try:
        seeds = parse_seeds(args.seeds)
    except CircuitPathError as error:
        parser.error(str(error))
    for shape in SHAPES:
        for task in TASKS:
            print(f"== {label(shape)} {task}: {', '.join(f'{k} {v}' for k, v in schedules(args.steps).items())}",
                  flush=True)
            run_cell(args.out, shape, task, seeds, args.steps)
    lines, rows = table(args.out)
    print(f"standard transformer LxHy (x layers, y heads) and the paper's model, d = 32, T = 12, k = 5, "
          f"{args.steps} steps of {BATCH} sequences, seeds {args.seeds}; 95% Wilson intervals")
    print("\n".join(lines))
    (args.out / "study.json").write_text(json.dumps({"steps": args.steps, "batch": BATCH,
                                                      "schedules": schedules(args.steps), "rows": rows}, indent=1))
    print(f"written: {args.out / 'study.json'}")


if __name__ == "__main__":
    main()
