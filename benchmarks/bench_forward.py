"""Forward pass of the hooked model with no hooks attached against the plain reference.

Run: python benchmarks/bench_forward.py
"""

# %%
from __future__ import annotations

import torch

from common import measure, table
from reference import reference_forward

from circuitpath import CrossAttentionTransformer, ModelConfig
from circuitpath.config import TaskConfig
from circuitpath.data import make_split


def main() -> None:
    model = CrossAttentionTransformer(ModelConfig()).eval()
    weights = model.weights()
    rows = []
    for batch in (64, 2048):
        x = make_split(TaskConfig(n_test=batch), 4).x_test[:batch]
        with torch.no_grad():
            seconds = measure({"hooked": lambda: model(x), "reference": lambda: reference_forward(weights, x)["logits"]})
        rows.append((f"batch {batch}", f"{seconds['reference'] * 1e3:.3f}", f"{seconds['hooked'] * 1e3:.3f}",
                     f"{seconds['hooked'] / seconds['reference']:.2f}x"))
    print(table(rows, ("input", "reference ms", "hooked ms", "hooked / reference")))


# %%
if __name__ == "__main__":
    main()
