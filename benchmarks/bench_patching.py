"""All-position activation patching over 4 096 inputs: batched passes against one forward per position.

Run: python benchmarks/bench_patching.py
"""

# %%
from __future__ import annotations

import torch

from common import measure, table
from reference import patch_loop_reference

from circuitpath import CrossAttentionTransformer, ModelConfig
from circuitpath.analysis.patching import corrupt_positions, patch
from circuitpath.config import TaskConfig
from circuitpath.data import make_split


def main() -> None:
    model = CrossAttentionTransformer(ModelConfig()).eval()
    clean = make_split(TaskConfig(n_test=4096), 4).x_test
    corrupted = corrupt_positions(clean, list(range(5)), 4, torch.Generator().manual_seed(0))
    labels = clean[:, :5].sum(1) % 4, corrupted[:, :5].sum(1) % 4
    rows = []
    for hook, over in [("blocks.0.attn.hook_v", ("key_pos",)), ("blocks.0.mlp.hook_post", ("d_mlp",))]:
        inputs = (model, hook, clean, corrupted, *labels)
        seconds = measure({"batched": lambda: patch(*inputs, over=over),
                           "loop": lambda: patch_loop_reference(*inputs, over=over)}, rounds=3, seconds=0.5)
        rows.append((f"{hook} over {over[0]}", f"{seconds['loop'] * 1e3:.0f}", f"{seconds['batched'] * 1e3:.0f}",
                     f"{seconds['loop'] / seconds['batched']:.1f}x"))
    print("4096 inputs, logit difference")
    print(table(rows, ("patched", "loop ms", "batched ms", "speed-up")))


# %%
if __name__ == "__main__":
    main()
