"""Loss and accuracy on the straight line between two solutions (the paper's Fig. 6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from circuitpath.config import ModelConfig
from circuitpath.data import Split
from circuitpath.errors import CheckpointError
from circuitpath.models.model import build_model
from circuitpath.runs import Run, as_run


@dataclass
class BarrierResult:
    """Metrics at (1 - t) θ_a + t θ_b for each t in [0, 1], both ends included."""

    t: Tensor
    train_loss: Tensor
    test_loss: Tensor
    train_acc: Tensor
    test_acc: Tensor

    @staticmethod
    def _height(values: Tensor) -> float:
        return float(values.max() - torch.maximum(values[0], values[-1]))

    @property
    def height(self) -> float:
        """Barrier of the training loss: its maximum along the path minus the larger end value."""
        return self._height(self.train_loss)

    @property
    def test_height(self) -> float:
        return self._height(self.test_loss)


@torch.no_grad()
def loss_barrier(
    weights_a: dict[str, Tensor], weights_b: dict[str, Tensor], cfg: ModelConfig, split: Split, points: int = 21
) -> BarrierResult:
    """Evaluate the interpolated models (of the architecture `cfg.arch` names) on the train and test sets of `split`."""
    if set(weights_a) != set(weights_b) or any(weights_a[k].shape != weights_b[k].shape for k in weights_a):
        raise CheckpointError("the two solutions have different weight names or shapes")
    ts = torch.linspace(0, 1, points)
    rows = []
    for t in ts.tolist():
        model = build_model(cfg, {k: (1 - t) * weights_a[k] + t * weights_b[k] for k in weights_a})
        row = []
        for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
            logits = model(x)
            row += [F.cross_entropy(logits, y).item(), (logits.argmax(-1) == y).float().mean().item()]
        rows.append(row)
    values = torch.tensor(rows)
    return BarrierResult(ts, train_loss=values[:, 0], train_acc=values[:, 1], test_loss=values[:, 2], test_acc=values[:, 3])


def run_barrier(run_a: Run, run_b: Run, step_a: int | None = None, step_b: int | None = None, points: int = 21) -> BarrierResult:
    """Barrier between two checkpoints (the last ones by default), on the data of run_b's last phase."""
    run_a, run_b = as_run(run_a), as_run(run_b)  # Runs, or their directories
    if run_a.config.model.to_shape() != run_b.config.model.to_shape():
        raise CheckpointError(f"{run_a.path} and {run_b.path} have models of different shapes")
    step_a = run_a.steps[-1] if step_a is None else step_a
    step_b = run_b.steps[-1] if step_b is None else step_b
    return loss_barrier(run_a.weights_at(step_a), run_b.weights_at(step_b), run_b.config.model, run_b.data(), points)
