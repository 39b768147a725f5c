"""The training engine's loss and gradient as it is, against two variants, side by side.

Run: python benchmarks/bench_engine_variants.py

- "bmm scores": the query's scores as the batched matrix-vector product the engine used before it
  was made batch-invariant (`z @ W_Q`, which the BLAS rounds differently for one run than for
  several); the engine now uses an elementwise product and a sum. This is what invariance costs.
- "torch.compile": the engine's function compiled by inductor for the CPU (one compilation per
  group size, timed apart), the fusion the sweeps issue suggested trying.

Per run-step on one thread, for a chunk of one run (as training runs every run on the CPU) and,
for comparison, chunks of S = 4 and S = 32 runs. Also prints whether the compiled function keeps a
run's bits independent of its batch-mates, and how far it is from eager.
"""

# %%
from __future__ import annotations

import argparse
import inspect
import sys
import time
import types

import torch

from common import measure, table

import circuitpath.training.engine as engine
from circuitpath.config import ModelConfig, TaskConfig
from circuitpath.data import make_split
from circuitpath.models.weights import init_weights

NOW = 'scores = (z * w["W_Q"][:, None, :]).sum(-1, keepdim=True) / math.sqrt(d)'
BEFORE = 'scores = (z @ w["W_Q"][:, :, None]) / math.sqrt(d)'


def bmm_engine() -> types.ModuleType:
    """The engine module with the scores computed as before the invariance change."""
    source = inspect.getsource(engine)
    if NOW not in source:
        raise SystemExit("the engine's score line changed; update this benchmark")
    module = types.ModuleType("engine_bmm_scores")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source.replace(NOW, BEFORE), module.__name__, "exec"), module.__dict__)
    return module


def group(split, runs: int):
    layout = engine.Layout.of(ModelConfig())
    theta = layout.pack([init_weights(ModelConfig(seed=s)) for s in range(runs)])
    data = engine.Encoded.of(split.x_train.expand(runs, -1, -1), split.y_train.expand(runs, -1), 4)
    return layout, theta, data


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help; no options
    split, before = make_split(TaskConfig(), 4), bmm_engine()
    compiled = torch.compile(engine.fast_loss_and_grad, dynamic=False)
    variants = {"engine (now)": engine.fast_loss_and_grad, "bmm scores (before)": before.fast_loss_and_grad,
                "torch.compile": compiled}
    candidates, compile_seconds = {}, {}
    for runs in (1, 4, 32):
        layout, theta, data = group(split, runs)
        threads = 1
        for name, fn in variants.items():
            def step(fn=fn, layout=layout, theta=theta, data=data, threads=threads):
                torch.set_num_threads(threads)
                return fn(layout.views(theta), data, layout.cfg)
            if name == "torch.compile":
                start = time.perf_counter()
                step()
                compile_seconds[runs] = time.perf_counter() - start
            candidates[(runs, name)] = step
    seconds = measure(candidates)
    rows = []
    for (runs, name), s in seconds.items():
        base = seconds[(runs, "engine (now)")]
        rows.append((f"S = {runs} (1 thread)", name, f"{s / runs * 1e3:.3f}",
                     f"{s / base:.2f}"))
    print(table(rows, ("group", "variant", "ms per run-step", "time / engine's")))
    print("torch.compile: compiling took " + ", ".join(f"{s:.1f} s at S = {r}" for r, s in compile_seconds.items()))
    layout, theta, data = group(split, 4)
    alone = compiled(layout.views(theta[:1]), engine.Encoded.of(split.x_train[None], split.y_train[None], 4), layout.cfg)
    together = compiled(layout.views(theta), data, layout.cfg)
    eager = engine.fast_loss_and_grad(layout.views(theta), data, layout.cfg)
    same = all(torch.equal(a[0], b[0]) for a, b in zip(alone[1], together[1]))
    gap = max(float((a - b).abs().max()) for a, b in zip(together[1], eager[1]))
    print(f"torch.compile: run 0's gradients alone and in a group of 4 are {'identical' if same else 'DIFFERENT'}; "
          f"largest difference from the eager engine's gradients {gap:.1e}")


# %%
if __name__ == "__main__":
    main()
