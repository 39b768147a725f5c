"""All-position activation patching over 4 096 inputs: batched passes against one forward per position.

Run: python benchmarks/bench_patching.py
The second table splits the batched key-position patching into the parts no method can skip.
"""

# %%
from __future__ import annotations

import torch

from common import measure, table
from reference import patch_loop_reference

from circuitpath import CrossAttentionTransformer, ModelConfig
from circuitpath.analysis.patching import corrupt_positions, patch
from circuitpath.analysis.replacing import ATTN_OUT, DEFAULT_MAX_BATCH
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
                           "loop": lambda: patch_loop_reference(*inputs, over=over)}, rounds=10)
        rows.append((f"{hook} over {over[0]}", f"{seconds['loop'] * 1e3:.1f}", f"{seconds['batched'] * 1e3:.1f}",
                     f"{seconds['loop'] / seconds['batched']:.1f}x"))
    print("4096 inputs, logit difference")
    print(table(rows, ("patched", "loop ms", "batched ms", "speed-up")))
    print()
    print(floor_table(model, clean, corrupted))


@torch.no_grad()
def floor_table(model, clean, corrupted) -> str:
    """What key-position patching cannot skip: the clean and corrupted runs, and the model after z_A
    for every patched copy (12 positions x 4096 inputs), in the passes `patch` uses."""
    _, cache = model.run_with_cache(corrupted)
    copies = cache[ATTN_OUT].repeat(clean.shape[1], 1)

    def after_z_attn():
        for rows in copies.split(DEFAULT_MAX_BATCH):
            model.run_from(ATTN_OUT, rows, cache)

    seconds = measure({
        "one forward pass, 4096 inputs": lambda: model(clean),
        "clean + corrupted runs with caches": lambda: (model.run_with_cache(clean), model.run_with_cache(corrupted)),
        "ln2, MLP, unembedding on 12 x 4096 rows": after_z_attn,
    }, rounds=10)
    return table([(name, f"{s * 1e3:.1f}") for name, s in seconds.items()], ("part", "ms"))


# %%
if __name__ == "__main__":
    main()
