"""A run's outcome from its final metrics: does it fit, generalise or memorise; and a table of runs.

Not the paper's alone: sweeps, switch curves, prediction and every study read these verdicts, on
either model and any task of the family.
"""

from __future__ import annotations

from circuitpath.runs import Run

#: The verdicts' thresholds, stated once: a run fits its training set at train acc >= FITS, generalises
#: at test acc >= GENERALISES_AT, memorises when it fits and its test acc stays below MEMORISED_BELOW
#: (chance is 1/p = 0.25 for p = 4).
FITS = 0.99
GENERALISES_AT = 0.99
MEMORISED_BELOW = 0.5
MEMORISES = f"train acc >= {FITS} and test acc < {MEMORISED_BELOW}"
GENERALISES = f"test acc >= {GENERALISES_AT}"


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
