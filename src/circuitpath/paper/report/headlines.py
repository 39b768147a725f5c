"""The headline numbers of a report: per run, and the barrier between the first two runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from circuitpath.analysis.discovery.timeline import LEVEL
from circuitpath.analysis.discovery.truth import reaching_text
from circuitpath.runs import ANALYSIS_DIR, Run
from circuitpath.runs.storage import write_json

NAN = float("nan")


@dataclass
class RunHeadline:
    test_acc: float = NAN
    first_k_mass: float = NAN  # final attention mass on the summed positions
    spurious_ablated_test_acc: float = NAN  # test accuracy with every spurious position mean-ablated
    first_k_ablated_test_acc: float = NAN
    clusters: dict[int, tuple[int, str, float]] = field(default_factory=dict)  # step -> (count, labeling, ARI)
    circuit_found_at: int | None = None  # first step whose attribution AUROC reaches 0.99 (-1: never)
    circuit_stays_from: int | None = None  # the step from which it stays >= 0.99 to the end (-1: below at the end)
    truth: str = "first k"  # how lines name the summed positions: "first k", or "relevant positions" for other truths
    clustered: str = "z_A"  # the activation `clusters` counts: z_A, or a standard transformer's hook at its readout


@dataclass
class Headlines:
    runs: dict[str, RunHeadline] = field(default_factory=dict)
    barrier: float | None = None  # train loss barrier between the first two runs' final checkpoints
    barrier_pair: tuple[str, str] | None = None

    def run(self, name: str) -> RunHeadline:
        return self.runs.setdefault(name, RunHeadline())

    def lines(self) -> list[str]:
        out = []
        for name, h in self.runs.items():
            parts = [text for value, text in (
                (h.first_k_mass, f"final attention mass on the {h.truth} {h.first_k_mass:.3f}"),
                (h.test_acc, f"test acc {h.test_acc:.4f}"),
                (h.spurious_ablated_test_acc, f"{h.spurious_ablated_test_acc:.4f} with the spurious positions ablated"),
                (h.first_k_ablated_test_acc, f"{h.first_k_ablated_test_acc:.4f} with the {h.truth} ablated"),
            ) if value == value]  # NaN: not measured in this report
            if parts:
                out.append(f"{name}: " + "; ".join(parts))
            if h.circuit_found_at is not None:
                first, stays = (None if s is None or s < 0 else s for s in (h.circuit_found_at, h.circuit_stays_from))
                out.append(f"{name}: attribution patching's AUROC of the {h.truth} (1: they outrank every spurious "
                           f"position) {reaching_text(first, stays, LEVEL)}")
            for step, (count, labeling, ari) in h.clusters.items():
                found = (f"{count} clusters of {h.clustered}, best aligned with {labeling} (ARI {ari:.3f})" if count > 1
                         else f"no well-separated clusters of {h.clustered}")
                out.append(f"{name} step {step}: {found}")
        if self.barrier is not None:
            out.append(f"loss barrier between {self.barrier_pair[0]} and {self.barrier_pair[1]}: {self.barrier:.4g}")
        return out

    def save(self, runs: dict[str, Run]) -> None:
        """Write each run's numbers to RUN/analysis/headlines.json."""
        for name, run in runs.items():
            if name not in self.runs:
                continue
            (run.path / ANALYSIS_DIR).mkdir(exist_ok=True)
            numbers = asdict(self.runs[name])
            if numbers["clustered"] == "z_A":  # the paper's model: written as before the field existed
                del numbers["clustered"]
            summary = {"run": name, **numbers}
            if self.barrier is not None and name in self.barrier_pair:
                summary["barrier"] = {"between": list(self.barrier_pair), "train_loss_height": self.barrier}
            write_json(run.path / ANALYSIS_DIR / "headlines.json", summary)
