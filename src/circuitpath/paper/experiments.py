"""The paper's two headline experiments, the verdicts on a run's final metrics, and a summary table.

Both start from the same initial weights (same model seed) and see the same p = 4 data:
- scratch: p = 4 for 10 000 steps at lr 1e-3 (the paper: memorises; `presets.scratch` says why 1e-3);
- curriculum: p = 2 for 3 000 steps at lr 1e-3, then p = 4 for 7 000 steps at lr 1e-2 (generalises).
Every figure's settings are in `presets`; the claims measured over seeds in `claims`; the verdicts on
any run's final metrics (generalises, memorises) in `outcomes`, which is not the paper's alone.
"""

from __future__ import annotations

from dataclasses import replace

from circuitpath.analysis.outcomes import GENERALISES, MEMORISES, generalises, memorises
from circuitpath.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.runs import Run

PAPER_PHASES: dict[str, str] = {
    "scratch": "4:10000:1e-3",
    "curriculum": "2:3000:1e-3,4:7000:1e-2",
}

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
