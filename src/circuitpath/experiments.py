"""The paper's two experiments and the summary table that judges them.

Both start from the same initial weights (same model seed) and see the same p = 4 data:
- scratch: p = 4 for 10 000 steps at lr 1e-2 (the paper: memorises);
- curriculum: p = 2 for 3 000 steps at lr 1e-3, then p = 4 for 7 000 steps at lr 1e-2 (generalises).
"""

from __future__ import annotations

from dataclasses import replace

from circuitpath.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.runs import Run

PAPER_PHASES: dict[str, str] = {
    "scratch": "4:10000:1e-2",
    "curriculum": "2:3000:1e-3,4:7000:1e-2",
}

#: The paper's claims, as thresholds on the final p = 4 metrics.
MEMORISES = "train acc >= 0.99 and test acc < 0.5"
GENERALISES = "test acc >= 0.99"


def experiment_config(
    phases: str,
    seed: int = 0,
    task: TaskConfig | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
) -> RunConfig:
    """A run of the paper's setting (T = 12, k = 5, n = 2048, d = 32, n_tokens = 4) with given phases."""
    task = replace(task or TaskConfig(), seed=seed)
    model = replace(model or ModelConfig(n_ctx=task.n_ctx), seed=seed)
    train = replace(train or TrainConfig(), phases=parse_phases(phases))
    return RunConfig(task=task, model=model, train=train)


def memorises(metrics: dict) -> bool:
    return metrics["train_acc"] >= 0.99 and metrics["test_acc"] < 0.5


def generalises(metrics: dict) -> bool:
    return metrics["test_acc"] >= 0.99


def summary_table(runs: dict[str, Run]) -> str:
    """Final metrics of each run as an aligned text table."""
    header = ["run", "phases (p:steps:lr)", "train acc", "test acc", "train loss", "test loss"]
    rows = [header]
    for name, run in runs.items():
        m = run.final_metrics()
        phases = ",".join(f"{ph.p}:{ph.steps}:{ph.lr:g}" for ph in run.config.train.phases)
        rows.append([name, phases, f"{m['train_acc']:.4f}", f"{m['test_acc']:.4f}",
                     f"{m['train_loss']:.4f}", f"{m['test_loss']:.4f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(runs: dict[str, Run]) -> list[str]:
    """One line per paper claim that the given runs can test, saying whether it held."""
    lines = []
    if "scratch" in runs:
        ok = memorises(runs["scratch"].final_metrics())
        lines.append(f"scratch memorises ({MEMORISES}): {'yes' if ok else 'NO'}")
    if "curriculum" in runs:
        ok = generalises(runs["curriculum"].final_metrics())
        lines.append(f"curriculum generalises ({GENERALISES}): {'yes' if ok else 'NO'}")
    return lines
