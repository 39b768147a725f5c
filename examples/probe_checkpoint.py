# %% [markdown]
# Probe a checkpoint: train a small run, load it back, and read the attention pattern through hooks.
# The paper's model has one query per input; a standard transformer's logits are read at one position
# (its readout: the CLS token, the last position or a given one), whose row of each layer's and head's
# pattern is the counterpart of that query.
# Run: python examples/probe_checkpoint.py [RUN_DIR]

# %%
import circuitpath as cp
from _demo import command_line, demo_run
from circuitpath.analysis.models import is_paper, key_labels, readout_position


def main(run_dir: str | None = None) -> None:
    if run_dir is None:
        run_dir = demo_run("probe")
    run = cp.load_run(run_dir)
    model = run.model_at()  # the last checkpoint
    step = run.steps[-1]
    split = run.data()
    logits, cache = model.run_with_cache(split.x_test[:512])  # a TransformerLens ActivationCache
    summed = list(run.config.task.relevant_positions(run.config.train.phases[-1]))  # 0..k-1 in the paper's task
    print(f"step {step}: test accuracy {(logits.argmax(-1) == split.y_test[:512]).float().mean():.3f}")
    reader = "the query" if is_paper(model) else f"the readout position ({key_labels(model.cfg)[readout_position(model.cfg)]})"
    print(f"mean attention of {reader} per key position, and its attention mass on the {len(summed)} summed "
          f"positions {summed}:")
    print(f"{'':<5}" + "".join(f"{label:>5}" for label in key_labels(model.cfg)) + "   mass")
    for name, row in readout_rows(cache, model).items():
        print(f"{name:<5}" + "".join(f"{a:5.2f}" for a in row.tolist()) + f"  {row[summed].sum():.3f}")


def readout_rows(cache, model) -> dict:
    """The mean attention of the readout over the key positions: the paper's single query (one row), or a
    standard transformer's readout position, one row per layer and head (named L0H1: layer 0, head 1)."""
    if is_paper(model):
        return {"query": cache["pattern", 0].mean(0)}  # [key_pos]
    at = readout_position(model.cfg)
    rows = {}
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer].mean(0)  # [head_index, query_pos, key_pos]
        rows.update({f"L{layer}H{head}": pattern[head, at] for head in range(model.cfg.n_heads)})
    return rows


# %%
if __name__ == "__main__":
    command_line(main)
