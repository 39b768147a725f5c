"""The paper's two headline experiments, the verdicts on a run's final metrics, and a summary table.

Both start from the same initial weights (same model seed) and see the same p = 4 data:
- scratch: p = 4 for 10 000 steps at lr 1e-3 (the paper: memorises; `presets.scratch` says why 1e-3);
- curriculum: p = 2 for 3 000 steps at lr 1e-3, then p = 4 for 7 000 steps at lr 1e-2 (generalises).
Every figure's settings are in `presets`; the claims measured over seeds in `claims`.
"""

from __future__ import annotations

from dataclasses import replace

from circuitpath.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.runs import Run

PAPER_PHASES: dict[str, str] = {
    "scratch": "4:10000:1e-3",
    "curriculum": "2:3000:1e-3,4:7000:1e-2",
}

#: The verdicts' thresholds, stated once: a run fits its training set at train acc >= FITS, generalises
#: at test acc >= GENERALISES_AT, memorises when it fits and its test acc stays below MEMORISED_BELOW
#: (chance is 1/p = 0.25 for p = 4).
FITS = 0.99
GENERALISES_AT = 0.99
MEMORISED_BELOW = 0.5
MEMORISES = f"train acc >= {FITS} and test acc < {MEMORISED_BELOW}"
GENERALISES = f"test acc >= {GENERALISES_AT}"


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
    return metrics["train_acc"] >= FITS and metrics["test_acc"] < MEMORISED_BELOW


def generalises(metrics: dict) -> bool:
    return metrics["test_acc"] >= GENERALISES_AT


def summary_table(runs: dict[str, Run]) -> str:
    """Final metrics of each run as an aligned text table."""
    header = ["run", "phases (p:steps:lr)", "train acc", "test acc", "train loss", "test loss"]
    rows = [header]
    for name, run in runs.items():
        m = run.final_metrics()
        phases = ",".join(f"{ph.p}:{ph.steps}:{ph.lr:g}" + (f":k={ph.k}" if ph.k else "") for ph in run.config.train.phases)
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
